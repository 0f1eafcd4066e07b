"""The Lightning callbacks and plugin every training run uses: who handles SIGTERM while a
Trainer runs and which signal ended a stage, the random state a checkpoint needs, and
checkpoints written whole or not at all."""

import os
import signal
import threading
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
    stopped the stage, so that `interruption()` can say which signal that exit stands for.
    In a multi-process fit, every process receives the SIGTERM, but one may stop while
    another waits for it in a step: that one then fails on the lost connection, an error
    that also stands for the signal."""

    def __init__(self) -> None:
        self.sigterm = SigtermHandler()
        self.exception: BaseException | None = None
        self.after_sigterm = False

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.sigterm.trainer_running = True

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.sigterm.trainer_running = False

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.sigterm.trainer_running = False
        self.exception = exception
        self.after_sigterm = trainer.received_sigterm

    @contextmanager
    def signals_as_interruptions(self) -> Iterator[None]:
        """Lightning's SystemExit for a signal, or an error after a SIGTERM, becomes
        Interrupted(signal number)."""
        try:
            yield
        except (SystemExit, Exception) as stop:
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
        if self.after_sigterm:
            return Interrupted(signal.SIGTERM)
        return None


class StopTogether(Callback):
    """A multi-process fit stopped by SIGTERM: every process stops after the same step.

    Lightning's own SIGTERM handler (2.6) broadcasts from inside the handler; a process that
    takes the signal in the middle of a step's gradient all-reduce pairs that broadcast with
    the wrong collective, and every process waits for the others until gloo's 30-minute
    timeout, the run left RUNNING (Lightning issue #20806). Measured here: 2 CPU processes,
    SIGTERM to rank 0 at epoch 17, both still hung 14 minutes later. So while a multi-process
    fit trains, the handler only notes the signal (in whichever process receives it: rank 0
    from `kill`, all of them from a scheduler), and after each training batch the processes
    agree in one all-reduce whether any has; then each raises Interrupted(SIGTERM), at the
    same step. Installed as training starts, after Lightning has installed its own; Lightning
    restores the handlers of before the fit when it ends."""

    def __init__(self) -> None:
        self.received = False

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        main_thread = threading.current_thread() is threading.main_thread()
        if trainer.world_size > 1 and main_thread:
            signal.signal(signal.SIGTERM, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        self.received = True

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(
            self.received, all=False
        ):
            raise Interrupted(signal.SIGTERM)


class SeedTheFit(Callback):
    """As a fit starts (its weights drawn, Lightning's processes started), torch's generator is
    seeded from the run's seed, so the Monte Carlo draws that follow are the same however the
    fit was started: in one process, or in each process of a multi-process fit (Lightning
    reseeds those as they start: without this, they would draw what a single process does
    not). seed + 1: a stream other than the one that drew the initial weights."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            torch.manual_seed(self.seed + 1)


class RandomState(Callback):
    """The random state a checkpoint needs beyond Lightning's own (weights, optimiser, loops):
    torch's generator (weight noise, Monte Carlo draws, ζ) and the training batches' shuffling.
    Restored when training starts (after SeedTheFit), so that a run resumed from a checkpoint
    draws what the uninterrupted run drew after writing it."""

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
