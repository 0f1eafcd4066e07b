"""Types with ranges for constructor signatures: a knob is checked where it is declared.

A model or data module annotates its arguments with these (`sigma2: Positive = 0.01`);
vnnlab.validate reads the annotations of the class a config names and checks every value
before anything is built. Plain `int`, `float`, `bool`, `str` and `Literal[...]` work too.
"""

import math
from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Range:
    """low ≤ value ≤ high; an open end excludes the bound. None: unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '≤'} {self.high:g}"
        return ""


Positive = Annotated[float, Range(low=0, low_open=True)]
NonNegative = Annotated[float, Range(low=0)]
PositiveInt = Annotated[int, Range(low=1)]
NonNegativeInt = Annotated[int, Range(low=0)]
Probability = Annotated[float, Range(low=0, high=1, high_open=True)]  # [0, 1)
