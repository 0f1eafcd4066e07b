"""What every comparison shares: its scale (full or --quick), a row of the result table,
median timings, the machine's description and its measured matmul throughput."""

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Scale:
    """How much each comparison measures. Full: the figures the targets are about; quick:
    the same code on a few batches, so that a test can keep the suite from rotting."""

    repeats: int  # timed repetitions after one untimed warm-up; medians are reported
    batches: int | None  # training batches per epoch (None: the whole split)
    sweep_jobs: int  # jobs of the sweep-throughput comparison
    startup_repeats: int
    quick: bool

    @classmethod
    def full(cls) -> "Scale":
        return cls(repeats=5, batches=None, sweep_jobs=20, startup_repeats=5, quick=False)

    @classmethod
    def reduced(cls) -> "Scale":
        return cls(repeats=2, batches=8, sweep_jobs=2, startup_repeats=1, quick=True)


@dataclass
class Row:
    """One line of the table: `measured` (a ratio "×", a fraction "%" or seconds "s") against
    its target; `met` is None where no target is set (a reference figure)."""

    comparison: str
    measured: float
    unit: str
    target: str = ""
    met: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def shown(self) -> str:
        if self.unit == "%":
            return f"{100 * self.measured:.1f}%"
        if self.unit == "s":
            return f"{self.measured:.2f} s"
        return f"{self.measured:.2f}×"


def median_seconds(action: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """One untimed warm-up call, then `repeats` timed ones: (median, each)."""
    action()
    each = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        each.append(time.perf_counter() - start)
    return statistics.median(each), [round(seconds, 4) for seconds in each]


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown CPU"


def synchronize(device: str) -> None:
    """Wait until the work queued on a GPU is done: CUDA calls return before their kernels
    finish, so a clock read after GPU work counts it only after this (nothing to do on CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def machine(device: str) -> dict[str, Any]:
    import pytorch_lightning as pl

    gpu = {"gpu": torch.cuda.get_device_name()} if device == "cuda" else {}
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "python": platform.python_version(),
        "device": device,
        **gpu,
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }


def matmul_flops_per_second(device: str, size: int = 2048, repeats: int = 5) -> float:
    """The hardware limit the epochs are held against: float32 (size × size) @ (size × size),
    2·size³ floating-point operations, median over `repeats` after a warm-up."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)

    def multiply() -> None:
        torch.mm(a, b)
        synchronize(device)

    seconds, _ = median_seconds(multiply, repeats)
    return 2 * size**3 / seconds


def training_step_flops(step: Callable[[], Any]) -> int:
    """Floating-point operations of one call of `step` (forward and backward), as counted by
    torch.utils.flop_counter (matrix products; element-wise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


@contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """vnnlab resolves a relative store against the launch directory: run inside `folder`."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def compose_config(overrides: list[str]) -> Any:
    """vnnlab-train's config for `overrides`, composed as the command line would."""
    from hydra import compose, initialize_config_dir

    from vnnlab import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)
