"""Continuing a run where it stopped: `vnnlab-train resume=<run_id> [trainer.max_epochs=N]`.

The run continues in the same MLflow run, with its own config (its config.yaml artifact), not
today's defaults: the only overrides allowed are `trainer.max_epochs` (to train longer),
`tracking.uri` (where the run is) and the console's progress options. Training restarts from
the newest checkpoint: the local last.ckpt in the folder the run recorded (rewritten every
`checkpoint.every_n_epochs`, so it outlives a SIGKILL), else the one logged to the run when it
ended, else from the start.

MLflow only, no Lightning: a resume= that cannot work is refused before torch loads the data.
"""

import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from vnnlab import tags
from vnnlab.errors import BadInputError, bad_value
from vnnlab.overrides import override_key
from vnnlab.tracking.store import open_existing_store, open_store

# Overrides allowed beside resume=: where the run is, and values that replace the run's own:
# the length of training and how the console shows progress (no number the run computes).
FINDING_OVERRIDES = ("resume", "tracking.uri")
REPLACING_OVERRIDES = ("trainer.max_epochs", "trainer.enable_progress_bar",
                       "trainer.enable_model_summary")  # fmt: skip
ALLOWED_OVERRIDES = FINDING_OVERRIDES + REPLACING_OVERRIDES
LAST_CHECKPOINT = "last.ckpt"  # rewritten every checkpoint.every_n_epochs (vnnlab.run.build)
CHECKPOINT_ARTIFACT = f"checkpoints/{LAST_CHECKPOINT}"


@dataclass(frozen=True)
class PriorRun:
    """A run to continue: its id, its config (trainer.max_epochs as asked), the local last.ckpt
    it was writing (None: gone, or never written) and, per metric, the last step the store
    holds."""

    run_id: str
    experiment_id: str
    cfg: DictConfig
    local_checkpoint: Path | None
    logged_through: dict[str, int] = field(default_factory=dict)

    def checkpoint(self, folder: Path) -> Path | None:
        """The newest checkpoint to start from: the local last.ckpt, else the one logged when
        the run ended, downloaded into `folder` (the continued run's checkpoint folder, where
        Lightning then rewrites it: nothing is left behind in a temporary folder), else None:
        it stopped before its first checkpoint and starts again from the beginning."""
        if self.local_checkpoint is not None:
            return self.local_checkpoint
        client = open_store(self.cfg.tracking.uri)
        try:
            logged = Path(client.download_artifacts(self.run_id, CHECKPOINT_ARTIFACT, str(folder)))
        except (MlflowException, OSError):
            return None
        checkpoint = folder / LAST_CHECKPOINT
        if logged != checkpoint:  # a store that keeps the artifact's folder: checkpoints/
            logged.replace(checkpoint)
            logged.parent.rmdir()
        return checkpoint


def owner_tags(checkpoint_dir: Path) -> dict[str, str]:
    """Tags that say which process writes a run and where its checkpoints go."""
    return {
        tags.HOST: socket.gethostname(),
        tags.PID: str(os.getpid()),
        tags.CHECKPOINT_DIR: str(checkpoint_dir),
    }


def prior_run(
    cfg: DictConfig, overrides: list[str], tracking_uri: str, writer: bool = True
) -> PriorRun:
    """The run named by `cfg.resume`, checked and ready to continue. BadInputError when it does
    not exist, is still running, is a sweep's parent, or other overrides were given.
    `writer=False`: a process that trains beside the run's writer (a multi-process fit's rank
    1, 2, …), which may find the run RUNNING: its writer has reopened it."""
    run_id = str(cfg.resume)
    _refuse_other_overrides(overrides, run_id)
    client = open_existing_store(tracking_uri, "resume", run_id)
    run = _existing_run(client, run_id, tracking_uri)
    if writer:
        _refuse_if_alive(run)
    config = _run_config(client, run)
    for key in REPLACING_OVERRIDES:
        if _overridden(key, overrides):
            OmegaConf.update(config, key, OmegaConf.select(cfg, key), force_add=True)
    config.tracking.uri = tracking_uri
    config.resume = run_id
    return PriorRun(
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        cfg=config,
        local_checkpoint=_local_checkpoint(run),
        logged_through=_logged_through(client, run),
    )


def _refuse_other_overrides(overrides: list[str], run_id: str) -> None:
    for override in overrides:
        if override_key(override) not in ALLOWED_OVERRIDES:
            raise BadInputError(
                f"{override} cannot be combined with resume={run_id}: a resumed run keeps its "
                f"own config; allowed beside resume=: {', '.join(ALLOWED_OVERRIDES[1:])}"
            )


def _overridden(key: str, overrides: list[str]) -> bool:
    return any(override_key(override) == key for override in overrides)


def _existing_run(client: MlflowClient, run_id: str, tracking_uri: str) -> Run:
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise bad_value("resume", run_id, f"the id of a run in {tracking_uri}") from None
    if run.data.tags.get(tags.SWEEP_ROLE) == tags.PARENT:
        raise bad_value("resume", run_id, "a run, not a sweep's parent (resume its children)")
    return run


def _refuse_if_alive(run: Run) -> None:
    """A RUNNING run may be stale (SIGKILL, a lost node) or really running; only a live process
    on this host is known to be the latter."""
    run_tags = run.data.tags
    if run.info.status != "RUNNING" or run_tags.get(tags.HOST) != socket.gethostname():
        return
    pid = int(run_tags.get(tags.PID, "0"))
    if pid and pid != os.getpid() and _alive(pid):
        raise bad_value(
            "resume", run.info.run_id, f"a run that is not running (process {pid} still writes it)"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _run_config(client: MlflowClient, run: Run) -> DictConfig:
    with tempfile.TemporaryDirectory(prefix="vnnlab-resume-") as scratch:
        try:
            path = client.download_artifacts(run.info.run_id, "config.yaml", scratch)
        except (MlflowException, OSError):
            raise bad_value(
                "resume", run.info.run_id, "a run recorded by vnnlab (it has no config.yaml)"
            ) from None
        config = OmegaConf.load(path)
    assert isinstance(config, DictConfig)
    return config


def _local_checkpoint(run: Run) -> Path | None:
    """The last.ckpt the run was writing, where it said it would (kept after a SIGKILL)."""
    local = Path(run.data.tags.get(tags.CHECKPOINT_DIR, "/nonexistent")) / LAST_CHECKPOINT
    return local if local.is_file() else None


def _logged_through(client: MlflowClient, run: Run) -> dict[str, int]:
    """Per metric key, the last step already in the store."""
    return {
        key: max(metric.step for metric in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }
