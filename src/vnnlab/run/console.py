"""What a run prints: a progress bar on a terminal, one line per epoch otherwise (CI, nohup, a
cluster job), none of the dependencies' chatter, and a closing table of the test metrics."""

import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl

# Info lines from Lightning (device lists, "Tip: try installing litlogger ...", "max_epochs
# reached") and MLflow (database migrations) that tell the user nothing they can act on.
QUIET_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                 "mlflow.store.db.utils", "alembic.runtime.migration")  # fmt: skip
PROGRESS_BAR_VARIABLE = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# Warnings raised inside dependencies, about their own code or about logging intervals vnnlab
# does not use (it logs epoch means only).
DEPENDENCY_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # PCA is fitted in closed form: it has no optimiser by design
    r"`LightningModule.configure_optimizers` returned `None`",
    # a resumed run writes its checkpoints to a new folder; it tracks no best model to reload
    r"The dirpath has changed from",
    # a multi-process fit: vnnlab's metrics are reduced across processes before they are
    # logged (torchmetrics' compute, the strategy's reduce), so they need no sync_dist
    r"It is recommended to use `self.log\(.*sync_dist=True\)`",
)


@contextmanager
def quiet_dependencies() -> Iterator[None]:
    """Silence the lines above for the duration of a run; the user's own warnings still show."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    progress_bar_set = PROGRESS_BAR_VARIABLE in os.environ  # the user's choice wins
    os.environ.setdefault(PROGRESS_BAR_VARIABLE, "false")  # MLflow's, on every download
    with warnings.catch_warnings():
        for message in DEPENDENCY_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if not progress_bar_set:
                del os.environ[PROGRESS_BAR_VARIABLE]


def progress_on_a_terminal() -> bool:
    return sys.stderr.isatty()


class EpochLines(pl.Callback):
    """One line per epoch on stderr: `epoch 3/50  train/loss 0.1234  val/loss 0.2345 ...  1.2 s`."""

    def __init__(self) -> None:
        self._started = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:  # one line per epoch, not one per process
            return
        seconds = time.perf_counter() - self._started
        metrics = {  # the objective and the held-out metrics; the train/ terms are in MLflow
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k == "train/loss" or k.startswith("val/")
        }
        shown = "  ".join(f"{k} {format_number(v)}" for k, v in sorted(metrics.items()))
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        print(f"epoch {trainer.current_epoch + 1}/{total}  {shown}  {seconds:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip


def format_number(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def metrics_table(metrics: Mapping[str, Any], stage: str = "test") -> str:
    """The run's `{stage}/*` metrics as aligned `name  value` lines."""
    rows = sorted(
        (k.split("/", 1)[1], float(v)) for k, v in metrics.items() if k.startswith(f"{stage}/")
    )
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join(f"  {name:<{width}}  {format_number(value)}" for name, value in rows)
