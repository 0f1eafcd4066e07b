"""Lightning's side of the tracking, apart so that vnnlab.tracking loads without Lightning
(vnnlab-compare and a sweep's parent process need MLflow only)."""

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import MLFlowLogger

from vnnlab import tracking
from vnnlab.data.batches import TensorBatches


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger on an existing run. Lightning would mark the run FINISHED at
    the end of `fit`, before `test`; the run's status belongs to `tracking.tracked_run`.

    One write per epoch: the val/ metrics of a step wait for the train/ metrics of the same
    step and go with them (an MLflow write to SQLite costs about 12 ms, a tenth of a small
    model's epoch). A record waits no longer than the end of its training epoch, a change of
    step, or the end of fit or test (`finalize`, also on an exception).

    A resumed run replays the epochs after its last checkpoint; what the store already holds
    for a key up to `logged_through[key]` (a step) was computed identically and is skipped, so
    the metric history has every epoch exactly once."""

    def __init__(
        self,
        *,
        send: Callable[..., None],
        logged_through: Mapping[str, int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.send = send  # TrackedRun.send: retried, held back while the server is away
        self.logged_through = dict(logged_through or {})
        self._waiting: dict[str, float] = {}
        self._waiting_step: int | None = None

    @property
    def experiment(self) -> Any:
        """The client on the run, as Lightning's, without its `mlflow.set_tracking_uri`: that
        sets $MLFLOW_TRACKING_URI for the whole process, so the next run in a notebook would
        go to this run's store (vnnlab reads the variable) even from another directory."""
        if not self._initialized:
            self._experiment_id = self._mlflow_client.get_run(self._run_id).info.experiment_id
            self._initialized = True
        return self._mlflow_client

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        new = {
            key: float(value)
            for key, value in metrics.items()
            if step is None or step > self.logged_through.get(key, -1)
        }
        if self._waiting and step != self._waiting_step:
            self._send_waiting()
        self._waiting |= new
        self._waiting_step = step
        if any(key.startswith("train/") for key in new):  # a training epoch's last record
            self._send_waiting()

    def _send_waiting(self) -> None:
        if self._waiting:
            metrics, step = self._waiting, self._waiting_step
            self._waiting = {}
            self.send(tracking.describe_metrics(metrics, step), super().log_metrics, metrics, step)

    def finalize(self, status: str = "success") -> None:
        self._send_waiting()


class LightningHandlesSigterm(Callback):
    """Tells `tracking.raise_interrupt` when a Trainer is running: from the setup of a stage
    (fit, test) to its teardown, or to the exception that ends it (then there is no
    teardown). Meanwhile Lightning's own SIGTERM handler stops at the next batch."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        tracking.running_trainers.add(id(trainer))

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        tracking.running_trainers.discard(id(trainer))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        tracking.running_trainers.discard(id(trainer))


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
    outlives the process, and an fsync per epoch cost 66 ms, a third of a small model's epoch;
    only a crash of the machine itself could lose the newest checkpoint."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        torch.save(checkpoint, partial)
        os.replace(partial, target)
