"""The Lightning callbacks and plugin every training run uses: who handles SIGTERM while a
Trainer runs and which signal ended a stage, the random state a checkpoint needs, and
checkpoints written whole or not at all."""

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from vnnlab.data.batches import TensorBatches
from vnnlab.tracking.interrupts import Interrupted, SigtermHandler


class TrainerStops(Callback):
    """From a stage's setup (fit, test) to its teardown, or to the exception that ends it,
    Lightning handles SIGTERM itself (it stops at the next batch): `sigterm`, the handler the
    run installs, is told.

    Lightning ends a stage stopped by a signal with a SystemExit: SIGTERMException, or
    sys.exit(1) after a KeyboardInterrupt. Its public `on_exception` hook hands over what
    stopped the stage, so that `interruption()` can say which signal that exit stands for."""

    def __init__(self) -> None:
        self.sigterm = SigtermHandler()
        self.exception: BaseException | None = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.sigterm.trainer_running = True

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.sigterm.trainer_running = False

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.sigterm.trainer_running = False
        self.exception = exception

    @contextmanager
    def signals_as_interruptions(self) -> Iterator[None]:
        """Lightning's SystemExit for a signal becomes Interrupted(signal number)."""
        try:
            yield
        except SystemExit as stop:
            interrupted = self.interruption()
            if interrupted is None:
                raise
            raise interrupted from stop

    def interruption(self) -> Interrupted | None:
        """The signal that stopped the last stage, if one did."""
        if isinstance(self.exception, Interrupted):
            return self.exception
        if isinstance(self.exception, SIGTERMException):
            return Interrupted(signal.SIGTERM)
        if isinstance(self.exception, KeyboardInterrupt):
            return Interrupted(signal.SIGINT)
        return None


class RandomState(Callback):
    """The random state a checkpoint needs beyond Lightning's own (weights, optimiser, loops):
    torch's generator (weight noise, Monte Carlo draws, ζ) and the training batches' shuffling.
    Restored when training starts, so that a run resumed from a checkpoint draws what the
    uninterrupted run drew after writing it."""

    def __init__(self) -> None:
        self._restored: dict[str, Any] | None = None
        self._trainer: Any = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        batches = self._train_batches
        if batches is not None:
            state["train_batches"] = batches.shuffle_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self._restored is None:
            return
        torch.set_rng_state(self._restored["torch"])
        if "cuda" in self._restored and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._restored["cuda"])
        batches = trainer.train_dataloader
        if "train_batches" in self._restored and isinstance(batches, TensorBatches):
            batches.restore_shuffle_state(self._restored["train_batches"])
        self._restored = None

    @property
    def _train_batches(self) -> TensorBatches | None:
        batches = self._trainer.train_dataloader if self._trainer is not None else None
        return batches if isinstance(batches, TensorBatches) else None


class DurableCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all: to a temporary name in the same folder, then
    renamed over the old file (atomic on one file system). A process killed mid-write
    (SIGKILL, the OOM killer) leaves the previous checkpoint intact. No fsync: the page cache
    outlives the process, so only a crash of the machine itself could lose the newest
    checkpoint, and an fsync every epoch would cost a small model a large share of its epoch."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        torch.save(checkpoint, partial)
        os.replace(partial, target)
