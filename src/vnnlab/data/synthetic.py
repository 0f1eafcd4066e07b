"""Synthetic regression: Y = f(X) + ε, ε ~ N(0, σ²_true), with f and σ²_true known."""

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor

from vnnlab.data.batches import TensorBatches

# f: ℝⁿ → ℝ through u = Σ_j x_j / √n, so every input dimension matters and n = 1 gives f(x).
FUNCTIONS = {
    "linear": lambda u: u,
    "sine": torch.sin,
    "cubic": lambda u: u**3,
}


class SyntheticRegressionDataModule(pl.LightningDataModule):
    """Train, val and test sets drawn once from `seed`; inputs uniform on [x_low, x_high]ⁿ.

    `gap=[a, b]` leaves the interval a < x₁ < b without training or validation inputs (test
    inputs still cover it), to show how predictive uncertainty grows away from the data.
    """

    task = "regression"

    def __init__(
        self,
        function: str = "sine",
        input_dim: int = 1,
        x_low: float = -3.0,
        x_high: float = 3.0,
        noise_var: float = 0.01,
        n_train: int = 1000,
        n_val: int = 200,
        n_test: int = 1000,
        gap: Sequence[float] | None = None,
        batch_size: int = 50,
        seed: int = 0,
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

    def true_function(self, x: Tensor) -> Tensor:
        """f(x): (B, n) → (B, 1), the noise-free regression function."""
        u = x.sum(dim=1, keepdim=True) / self.input_dim**0.5
        return FUNCTIONS[self.function](u)

    def reference_metrics(self) -> dict[str, float]:
        """Test-set yardsticks: `noise_floor` = σ²_true, the expected test MSE of the true f
        (the best any model can expect); `oracle_mse`, the MSE the true f scores on this
        finite test set (it differs from σ²_true by about σ²·√(2/n_test))."""
        x, y = self.splits["test"]
        oracle_mse = ((y - self.true_function(x)) ** 2).sum(dim=1).mean().item()
        return {"noise_floor": self.noise_var, "oracle_mse": oracle_mse}

    def dims(self) -> dict[str, int]:
        return {"in_features": self.input_dim, "out_features": 1, "n_train": self.sizes["train"]}

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

    def train_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["train"], self.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["val"], self.batch_size)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["test"], self.batch_size)
