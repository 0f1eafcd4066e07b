"""Multirun bookkeeping through Hydra's callbacks, so it works with every launcher (jobs in
this process, in joblib workers, or on a cluster): each job records its outcome in its own
output folder; at the end of the sweep the parent lists every job that did not finish.

Registered in conf/config.yaml under `hydra.callbacks`.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from vnnlab import tracking

OUTCOME_FILE = "vnnlab-outcome.json"

# Hydra turns an exception raised in a callback into a warning, so the verdict of a sweep that
# ended in this process is left here for the console entry point to act on.
_failed_sweeps: list["SweepFailed"] = []


@dataclass(frozen=True)
class JobOutcome:
    """How one job of a sweep ended: FINISHED, FAILED (its run ended FAILED) or BAD_INPUT
    (refused before any run existed)."""

    overrides: str
    status: str
    reason: str = ""
    run_id: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class SweepFailed(Exception):
    """Some jobs of a multirun did not finish; the message lists each with its reason."""

    def __init__(self, failed: list[JobOutcome], total: int):
        lines = [f"{len(failed)} of {total} jobs did not finish:"]
        lines += [f"  [{o.overrides}] {o.status}: {o.reason}" for o in failed]
        super().__init__("\n".join(lines))
        # exit 1 when a run failed; 2 when every failure was bad input refused before a run
        self.exit_code = 2 if all(o.status == "BAD_INPUT" for o in failed) else 1


def record(outcome: JobOutcome) -> None:
    """Write the job's outcome into its own Hydra output folder."""
    folder = Path(HydraConfig.get().runtime.output_dir)
    (folder / OUTCOME_FILE).write_text(json.dumps(outcome.as_dict()))


def collect(sweep_dir: Path) -> list[JobOutcome]:
    """The outcomes of every job under the sweep folder, in job order."""
    paths = sorted(sweep_dir.glob(f"*/{OUTCOME_FILE}"), key=lambda p: _job_number(p.parent.name))
    return [JobOutcome(**json.loads(path.read_text())) for path in paths]


def take_failure() -> "SweepFailed | None":
    """The failure of the multirun that just ended in this process, if any (once)."""
    return _failed_sweeps.pop() if _failed_sweeps else None


def _job_number(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Create the store and its experiment once, here, before parallel jobs start: jobs
        # migrating a fresh SQLite store at once corrupt it (DESIGN.md, measured traps).
        uri = tracking.resolve_tracking_uri(config.tracking.uri, Path.cwd())
        tracking.experiment_id(MlflowClient(uri), config.tracking.experiment)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        outcomes = collect(Path(config.hydra.sweep.dir))
        failed = [o for o in outcomes if o.status != "FINISHED"]
        if failed:
            _failed_sweeps.append(SweepFailed(failed, len(outcomes)))
