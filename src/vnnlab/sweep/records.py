"""What a sweep's parent process and its jobs tell each other through the sweep folder, so that
it works with every launcher (jobs in the parent process, in joblib workers, on a cluster):
the parent run (`<sweep dir>/vnnlab-sweep.json`, written before any job starts) and each job's
outcome (`<job dir>/vnnlab-outcome.json`)."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vnnlab import tags

SWEEP_FILE = "vnnlab-sweep.json"
OUTCOME_FILE = "vnnlab-outcome.json"


def sweep_dir(hydra_cfg: Any) -> Path:
    """The sweep's folder, absolute: Hydra's `sweep.dir` is relative to the launch folder.
    `hydra_cfg`: the config's `hydra` node, or HydraConfig.get() in a job."""
    return (Path(hydra_cfg.runtime.cwd) / hydra_cfg.sweep.dir).resolve()


@dataclass(frozen=True)
class Sweep:
    """Where the parent run is, and what was swept."""

    parent_run_id: str
    tracking_uri: str
    experiment_id: str
    swept: list[str]

    def write(self, sweep_dir: Path) -> None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, sweep_dir: Path) -> "Sweep | None":
        path = sweep_dir / SWEEP_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


@dataclass(frozen=True)
class JobOutcome:
    """How one job ended: `status` one of tags.FINISHED, FAILED, BAD_INPUT, PRUNED, with its
    reason; `metrics`: the last value of every metric its run logged (train/ and val/ of the
    last epoch, test/), what a sweeper optimises. A job returns it to Hydra as a dict."""

    overrides: str
    status: str
    reason: str = ""
    run_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in (tags.FINISHED, tags.PRUNED)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, job_dir: Path) -> None:
        (job_dir / OUTCOME_FILE).write_text(json.dumps(self.as_dict()))


def collect(sweep_dir: Path) -> list[JobOutcome]:
    """The outcomes of every job under the sweep folder, in job order."""
    paths = sorted(sweep_dir.glob(f"*/{OUTCOME_FILE}"), key=lambda p: _job_number(p.parent.name))
    return [JobOutcome(**json.loads(path.read_text())) for path in paths]


def _job_number(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)


class SweepFailed(Exception):
    """Some jobs of a multirun did not finish; the message lists each with its reason."""

    def __init__(self, failed: list[JobOutcome], total: int):
        lines = [f"{len(failed)} of {total} jobs did not finish:"]
        lines += [f"  [{o.overrides}] {o.status}: {o.reason}" for o in failed]
        super().__init__("\n".join(lines))
        # exit 1 when a run failed; 2 when every failure was bad input refused before a run
        self.exit_code = 2 if all(o.status == tags.BAD_INPUT for o in failed) else 1
