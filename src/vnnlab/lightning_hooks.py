"""Lightning's side of the tracking, apart so that vnnlab.tracking loads without Lightning
(vnnlab-compare and a sweep's parent process need MLflow only)."""

from typing import Any

from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import MLFlowLogger

from vnnlab import tracking


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger on an existing run. Lightning would mark the run FINISHED at
    the end of `fit`, before `test`; the run's status belongs to `tracking.tracked_run`."""

    def finalize(self, status: str = "success") -> None:
        pass


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
