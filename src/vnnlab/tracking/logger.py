"""Lightning's side of tracking: a `Logger` (Lightning's public interface) that writes a
training run's metrics into an open TrackedRun. The one module of vnnlab.tracking that imports
Lightning: vnnlab-compare and a sweep's parent process need MLflow only."""

from collections.abc import Mapping
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from vnnlab.tracking.run import TrackedRun


class RunLogger(Logger):
    """Lightning's metrics into `run`; the run's params (the resolved config) and its status
    are the training run's to write, not Lightning's (it would end the run after `fit`, before
    `test`). Only rank 0 writes (rank_zero_only), so a multi-process fit keeps one record.

    One write per epoch: the val/ metrics of a step wait for the train/ metrics of the same
    step and go with them (an MLflow write to SQLite costs about as much as a small model's
    training batch). A record waits no longer than the end of its training epoch, a change of
    step, or the end of fit or test (`finalize`, also on an exception).

    A resumed run replays the epochs after its last checkpoint; what the store already holds
    for a key up to `logged_through[key]` (a step) was computed identically and is skipped, so
    the metric history has every epoch exactly once."""

    def __init__(self, run: TrackedRun, logged_through: Mapping[str, int] | None = None):
        super().__init__()
        self.run = run
        self.logged_through = dict(logged_through or {})
        self.waiting: dict[str, float] = {}
        self.waiting_step: int | None = None

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run.run_id

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: the run's params are its resolved config, logged when it was created."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        new = {
            key: float(value)
            for key, value in metrics.items()
            if step is None or step > self.logged_through.get(key, -1)
        }
        if self.waiting and step != self.waiting_step:
            self.send_waiting()
        self.waiting |= new
        self.waiting_step = step
        if any(key.startswith("train/") for key in new):  # a training epoch's last record
            self.send_waiting()

    def send_waiting(self) -> None:
        if self.waiting:
            metrics, step = self.waiting, self.waiting_step or 0
            self.waiting = {}
            self.run.log_metrics(metrics, step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.send_waiting()
