"""What a data module offers, said explicitly: models, the pairing rule and the figures read
`DataInfo` and `split()` instead of probing a module's attributes."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pytorch_lightning as pl
from torch import Tensor

from vnnlab.data.batches import TensorBatches

# The targets a data set carries: real vectors (regression), class labels, or none (inputs only).
Target = Literal["real", "class"] | None


@dataclass(frozen=True)
class DataInfo:
    """Sizes and capabilities of a loaded data set.

    in_features: n, the input dimension; n_train: N, the training points (the ELBO's scale);
    target: what follows the inputs in a batch, if anything; out_features: q real targets or
    K classes (0 without targets); image_shape: (H, W) when an input is an image flattened to
    H·W values; unit_interval: every input lies in [0, 1] (a Bernoulli likelihood is valid);
    true_function, input_range, gap: a known regression function f: (B, n) → (B, q), the
    interval its inputs are drawn from, and an interval left without training inputs;
    input_variances: λ₁ ≥ … ≥ λₙ, the population variances of the inputs along their principal
    axes (the eigenvalues of their covariance), when the data set knows them; other_target:
    (kind, override) when the same data set gives targets of that other kind under that
    override, e.g. ("real", "data.task=regression") for integer labels read as classes.
    """

    in_features: int
    n_train: int
    target: Target = None
    out_features: int = 0
    image_shape: tuple[int, int] | None = None
    unit_interval: bool = False
    true_function: Callable[[Tensor], Tensor] | None = None
    input_range: tuple[float, float] | None = None
    gap: tuple[float, float] | None = None
    input_variances: tuple[float, ...] | None = None
    other_target: tuple[Target, str] | None = None

    def model_dims(self) -> dict[str, int]:
        """The sizes a model takes from its data (a model's signature picks what it needs)."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "n_train": self.n_train,
        }


class VNNDataModule(pl.LightningDataModule):
    """A LightningDataModule holding its whole data set as tensors. Subclasses set
    `batch_size` and `seed` and implement:

    - `info() -> DataInfo` (loading the data if needed);
    - `split(name) -> (x, y)` or `(x,)`: a whole split ("train", "val", "test") as model
      inputs, the same tensors the dataloaders slice into batches;
    - `reference_metrics()` (optional): yardsticks the data alone sets, logged beside the test
      metrics, e.g. the noise floor (a model adds its own from `info()`: VNNModule's);
    - `batches(split, shuffle)` (optional): how a split is served (default: index slices of
      `split(name)`, the training split reshuffled every epoch from `seed`), built with
      `tensor_batches`, which places them on the trainer's device and shares them out among
      the processes of a multi-process fit.
    """

    batch_size: int
    seed: int

    def batches(self, split: str, shuffle: bool = False) -> TensorBatches:
        return self.tensor_batches(self.split(split), shuffle)

    def tensor_batches(
        self,
        tensors: tuple[Tensor, ...],
        shuffle: bool,
        transform: Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]] | None = None,
    ) -> TensorBatches:
        """Batches of `tensors`, moved once to the device the trainer trains on (a GPU keeps
        the whole split), this process's share of them when several train together."""
        trainer = self.trainer
        if trainer is None:  # served outside a fit (a test, a notebook)
            return TensorBatches(tensors, self.batch_size, shuffle, self.seed, transform)
        device = trainer.strategy.root_device
        return TensorBatches(
            tuple(t.to(device) for t in tensors),
            self.batch_size,
            shuffle,
            self.seed,
            transform,
            rank=trainer.global_rank,
            replicas=trainer.world_size,
        )

    def train_dataloader(self) -> TensorBatches:
        return self.batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self.batches("val")

    def test_dataloader(self) -> TensorBatches:
        return self.batches("test")

    def info(self) -> DataInfo:
        raise NotImplementedError

    def split(self, name: str) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def reference_metrics(self) -> dict[str, float]:
        return {}

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> None:
        """Raise BadInputError for values that are wrong together (each alone has the type and
        range its signature declares, checked by vnnlab.validate)."""
