"""Synthetic regression: Y = f(X) + ε, ε ~ N(0, σ²_true), with f and σ²_true known."""

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from vnnlab.data.base import DataInfo, VNNDataModule
from vnnlab.errors import bad_value
from vnnlab.schema import NonNegative, NonNegativeInt, PositiveInt

# f: ℝⁿ → ℝ through u = Σ_j x_j / √n, so every input dimension matters and n = 1 gives f(x).
FUNCTIONS = {
    "linear": lambda u: u,
    "sine": torch.sin,
    "cubic": lambda u: u**3,
}


class SyntheticRegressionDataModule(VNNDataModule):
    """Train, val and test sets drawn once from `seed`; inputs uniform on [x_low, x_high]ⁿ.

    `gap=[a, b]` leaves the interval a < x₁ < b without training or validation inputs (test
    inputs still cover it), to show how predictive uncertainty grows away from the data.
    """

    def __init__(
        self,
        function: Literal["linear", "sine", "cubic"] = "sine",
        input_dim: PositiveInt = 1,
        x_low: float = -3.0,
        x_high: float = 3.0,
        noise_var: NonNegative = 0.01,
        n_train: PositiveInt = 1000,
        n_val: PositiveInt = 200,
        n_test: PositiveInt = 1000,
        gap: Sequence[float] | None = None,
        batch_size: PositiveInt = 50,
        seed: NonNegativeInt = 0,
    ):
        super().__init__()
        self.function = function
        self.input_dim = input_dim
        self.x_low, self.x_high = x_low, x_high
        self.noise_var = noise_var
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.gap = tuple(gap) if gap is not None else None
        self.batch_size = batch_size
        self.seed = seed
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> None:
        x_low, x_high = args.get("x_low", -3.0), args.get("x_high", 3.0)
        if not x_low < x_high:
            raise bad_value("data.x_high", x_high, f"a number > data.x_low={x_low}")
        gap = args.get("gap")
        if gap is not None and not (len(gap) == 2 and x_low < gap[0] < gap[1] < x_high):
            raise bad_value("data.gap", list(gap), f"[a, b] with {x_low} < a < b < {x_high}")

    def info(self) -> DataInfo:
        return DataInfo(
            in_features=self.input_dim,
            n_train=self.sizes["train"],
            target="real",
            out_features=1,
            true_function=self.true_function,
            input_range=(self.x_low, self.x_high),
            gap=self.gap,
        )

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        self.setup()
        return self.splits[name]

    def true_function(self, x: Tensor) -> Tensor:
        """f(x): (B, n) → (B, 1), the noise-free regression function."""
        u = x.sum(dim=1, keepdim=True) / self.input_dim**0.5
        return FUNCTIONS[self.function](u)

    def reference_metrics(self) -> dict[str, float]:
        """Test-set yardsticks: `noise_floor` = σ²_true, the expected test MSE of the true f
        (the best any model can expect); `oracle_mse`, the MSE the true f scores on this
        finite test set (it differs from σ²_true by about σ²·√(2/n_test))."""
        x, y = self.split("test")
        oracle_mse = ((y - self.true_function(x)) ** 2).sum(dim=1).mean().item()
        return {"noise_floor": self.noise_var, "oracle_mse": oracle_mse}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        generator = torch.Generator().manual_seed(self.seed)
        for split, n in self.sizes.items():
            x = self._sample_inputs(n, generator, avoid_gap=split != "test")
            noise = torch.randn(n, 1, generator=generator) * self.noise_var**0.5
            self.splits[split] = (x, self.true_function(x) + noise)

    def _sample_inputs(self, n: int, generator: torch.Generator, avoid_gap: bool) -> Tensor:
        x = self.x_low + (self.x_high - self.x_low) * torch.rand(
            n, self.input_dim, generator=generator
        )
        if avoid_gap and self.gap is not None:
            # Draw x₁ uniformly on [x_low, x_high] minus (a, b): squeeze, then shift past the gap.
            a, b = self.gap
            width = b - a
            first = self.x_low + (self.x_high - self.x_low - width) * torch.rand(
                n, generator=generator
            )
            x[:, 0] = torch.where(first > a, first + width, first)
        return x
