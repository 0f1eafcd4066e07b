"""What every vnnlab model shares: optimiser and schedule from plain numbers, the {stage}/{term}
logging contract, and a test pass that computes its metrics once on the whole test set."""

from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from torch import Tensor

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("none", "cosine", "exponential")


class VNNModule(pl.LightningModule):
    """Subclasses set `task`, build their network in __init__ and implement:

    - `_step(batch, stage) -> dict[str, Tensor]`: the training terms, "loss" among them;
    - `predict_batch(batch) -> dict[str, Tensor]`: per-example predictions for the test metrics;
    - `test_metrics(predictions) -> dict[str, Tensor]`: metrics over the concatenated test set;
    - `figures(datamodule) -> dict[str, Figure]` (optional): artifacts for the run.
    """

    task: str

    def __init__(
        self,
        lr: float = 1e-3,
        optimizer: str = "adam",
        momentum: float = 0.0,
        nesterov: bool = False,
        lr_schedule: str = "cosine",
        lr_gamma: float = 0.95,
    ):
        super().__init__()
        self.optim = {"lr": lr, "optimizer": optimizer, "momentum": momentum, "nesterov": nesterov}
        self.schedule = {"name": lr_schedule, "gamma": lr_gamma}
        self.test_predictions: dict[str, Tensor] = {}
        self._test_batches: list[dict[str, Tensor]] = []

    def configure_optimizers(self) -> Any:
        optimizer = self._optimizer()
        scheduler = self._scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _optimizer(self) -> torch.optim.Optimizer:
        lr = self.optim["lr"]
        if self.optim["optimizer"] == "sgd":
            momentum, nesterov = self.optim["momentum"], self.optim["nesterov"]
            return torch.optim.SGD(self.parameters(), lr=lr, momentum=momentum, nesterov=nesterov)
        # fused: one kernel updates every parameter; a third off each CPU step of
        # 784-400-400-10 (3.0 → 2.0 ms, benchmarks/mnist_epoch.py)
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.Adam(self.parameters(), lr=lr, fused=fused)

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        if self.schedule["name"] == "cosine":  # decays to 0 over every optimiser step of the fit
            steps = self.trainer.estimated_stepping_batches
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
            return {"scheduler": cosine, "interval": "step"}
        if self.schedule["name"] == "exponential":  # lr ← γ·lr after every epoch
            gamma = self.schedule["gamma"]
            decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
            return {"scheduler": decay, "interval": "epoch"}
        return None

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Tensor]:
        raise NotImplementedError

    def predict_batch(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        raise NotImplementedError

    def test_metrics(self, predictions: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def figures(self, datamodule: pl.LightningDataModule) -> dict[str, Figure]:
        return {}

    def _log_terms(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        terms = self._step(batch, stage)
        # Epoch means only: per-step logging costs +49% (DESIGN.md, measured traps).
        self.log_dict(
            {f"{stage}/{name}": value.detach() for name, value in terms.items()},
            on_step=False,
            on_epoch=True,
            prog_bar=stage != "train",
            batch_size=len(batch[0]),
        )
        return terms["loss"]

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._log_terms(batch, "train")

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._log_terms(batch, "val")

    def on_test_epoch_start(self) -> None:
        self._test_batches = []

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._test_batches.append(
            {k: v.detach().cpu() for k, v in self.predict_batch(batch).items()}
        )

    def on_test_epoch_end(self) -> None:
        # Whole-test-set metrics (RMSE, ECE, coverage are not means of batch means).
        self.test_predictions = {
            key: torch.cat([b[key] for b in self._test_batches]) for key in self._test_batches[0]
        }
        self._test_batches = []
        metrics = self.test_metrics(self.test_predictions)
        self.log_dict({f"test/{name}": value for name, value in metrics.items()})
