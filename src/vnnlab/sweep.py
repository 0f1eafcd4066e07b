"""A multirun as one MLflow parent run with one child run per job, through Hydra's callbacks,
so it works with every launcher (jobs in this process, in joblib workers, on a cluster).

The parent process creates the store, the experiment and the parent run before any job starts,
and writes them to `<sweep dir>/vnnlab-sweep.json`; each job reads that file to nest its run
under the parent, and records its outcome in its own output folder. At the end the parent
gathers the outcomes, logs the comparison table, ends FINISHED (or FAILED when a job did not
finish) and the command lists every job that did not finish.

MLflow (2.5 s to import) is imported by the functions that use it, not here: Hydra loads this
module before the sweep starts, and a parallel sweep's workers should start importing first.

Registered in conf/config.yaml under `hydra.callbacks`.
"""

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_original_cwd
from omegaconf import DictConfig, OmegaConf

OUTCOME_FILE = "vnnlab-outcome.json"
SWEEP_FILE = "vnnlab-sweep.json"

# Hydra turns an exception raised in a callback into a warning, so the verdict of a sweep that
# ended in this process is left here for the console entry point to act on; so is a parent run
# still open when the process is interrupted, for the entry point to end KILLED.
_failed_sweeps: list["SweepFailed"] = []
_open_parents: list[tuple[str, str]] = []  # (tracking URI, run id)


@dataclass(frozen=True)
class JobOutcome:
    """How one job of a sweep ended: FINISHED, FAILED (its run ended FAILED), BAD_INPUT
    (refused before any run existed) or PRUNED (stopped early by the sweeper, run FINISHED);
    `metrics`: the last value of every metric it logged (train/ and val/ of the last epoch,
    test/), what a sweeper optimises."""

    overrides: str
    status: str
    reason: str = ""
    run_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SweepFailed(Exception):
    """Some jobs of a multirun did not finish; the message lists each with its reason."""

    def __init__(self, failed: list[JobOutcome], total: int):
        lines = [f"{len(failed)} of {total} jobs did not finish:"]
        lines += [f"  [{o.overrides}] {o.status}: {o.reason}" for o in failed]
        super().__init__("\n".join(lines))
        # exit 1 when a run failed; 2 when every failure was bad input refused before a run
        self.exit_code = 2 if all(o.status == "BAD_INPUT" for o in failed) else 1


@dataclass(frozen=True)
class Sweep:
    """What the parent process tells the jobs: where the parent run is, what was swept."""

    parent_run_id: str
    tracking_uri: str
    experiment_id: str
    swept: list[str]


# --- in a job -------------------------------------------------------------------------------


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def current_sweep() -> Sweep | None:
    """The sweep this job belongs to, or None outside a multirun."""
    if not in_multirun():
        return None
    path = _sweep_dir(HydraConfig.get().sweep.dir, Path(get_original_cwd())) / SWEEP_FILE
    return Sweep(**json.loads(path.read_text())) if path.is_file() else None


def job_name(sweep: Sweep | None) -> str:
    """A job is named by the values it takes on the swept keys (all its overrides otherwise)."""
    overrides = list(HydraConfig.get().overrides.task)
    swept = [o for o in overrides if sweep is not None and _key(o) in sweep.swept]
    return " ".join(swept or overrides)


def child_tags(sweep: Sweep) -> dict[str, str]:
    return {
        "mlflow.parentRunId": sweep.parent_run_id,
        "vnnlab.sweep.role": "child",
        "vnnlab.sweep.job": str(HydraConfig.get().job.num),
    }


def threads_per_job() -> int | None:
    """cores / parallel jobs for a job of a parallel launcher (two jobs with 2 threads each
    ran 4× slower on 2 cores than with 1 each: DESIGN.md); None: leave torch's default."""
    if not in_multirun():
        return None
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if not isinstance(n_jobs, int) or n_jobs == 1:
        return None
    cores = os.cpu_count() or 1
    return max(1, cores // (cores if n_jobs < 0 else n_jobs))


def record(outcome: JobOutcome) -> None:
    """Write the job's outcome into its own Hydra output folder."""
    folder = Path(HydraConfig.get().runtime.output_dir)
    (folder / OUTCOME_FILE).write_text(json.dumps(outcome.as_dict()))


# --- in the parent process ------------------------------------------------------------------


def collect(sweep_dir: Path) -> list[JobOutcome]:
    """The outcomes of every job under the sweep folder, in job order."""
    paths = sorted(sweep_dir.glob(f"*/{OUTCOME_FILE}"), key=lambda p: _job_number(p.parent.name))
    return [JobOutcome(**json.loads(path.read_text())) for path in paths]


def take_failure() -> SweepFailed | None:
    """The failure of the multirun that just ended in this process, if any (once)."""
    return _failed_sweeps.pop() if _failed_sweeps else None


def end_open_parents(status: str = "KILLED") -> None:
    """End every parent run this process left open (Ctrl-C or SIGTERM between jobs)."""
    from mlflow.tracking import MlflowClient

    while _open_parents:
        uri, run_id = _open_parents.pop()
        MlflowClient(uri).set_terminated(run_id, status)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _workers_importing(config.hydra.launcher, _jobs_at_once(config)):
            self._create_parent(config)

    def _create_parent(self, config: DictConfig) -> None:
        from vnnlab import tracking

        # The store and its experiment are created here, before parallel jobs start: jobs
        # migrating a fresh SQLite store at once corrupt it (DESIGN.md, measured traps).
        uri = tracking.resolve_tracking_uri(config.tracking.uri, Path.cwd())
        client = tracking.open_store(uri)  # once, before any job opens it
        experiment_id = tracking.experiment_id(client, config.tracking.experiment)
        overrides = list(config.hydra.overrides.task)
        swept = _swept_keys(overrides, config)
        name = _parent_name(overrides, swept)
        tags = _parent_tags(config, swept) | tracking.git_tags(Path(__file__).parent)
        parent = client.create_run(experiment_id, run_name=name, tags=tags)
        _open_parents.append((uri, parent.info.run_id))
        sweep = Sweep(parent.info.run_id, uri, experiment_id, swept)
        folder = _sweep_dir(config.hydra.sweep.dir, Path.cwd())
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SWEEP_FILE).write_text(json.dumps(asdict(sweep)))
        # so that the parent run ends KILLED, not RUNNING
        signal.signal(signal.SIGTERM, tracking.raise_interrupt)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        from vnnlab import tracking

        folder = _sweep_dir(config.hydra.sweep.dir, Path.cwd())
        sweep = Sweep(**json.loads((folder / SWEEP_FILE).read_text()))
        outcomes = collect(folder)
        failed = [o for o in outcomes if o.status not in ("FINISHED", "PRUNED")]
        client = MlflowClient(sweep.tracking_uri)
        _report(sweep)
        if failed:
            _failed_sweeps.append(SweepFailed(failed, len(outcomes)))
            message = f"{len(failed)} of {len(outcomes)} jobs did not finish"
            client.set_tag(sweep.parent_run_id, tracking.FAILURE_TAG, message)
        client.set_terminated(sweep.parent_run_id, "FAILED" if failed else "FINISHED")
        _open_parents.remove((sweep.tracking_uri, sweep.parent_run_id))


# --- joblib's workers -----------------------------------------------------------------------

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA_SWEEPER = "hydra_plugins.vnnlab_optuna_sweeper.optuna_sweeper.OptunaSweeper"


@contextmanager
def _workers_importing(launcher: DictConfig, jobs: int | None) -> Iterator[None]:
    """With Hydra's joblib launcher, start the workers the first `jobs` jobs (None: as many as
    the launcher has) will run on, each importing what a job needs (torch, Lightning, MLflow:
    7-10 s) while the body runs here. They are joblib's reusable executor, which the launcher's
    own Parallel call, made with the same arguments, finds ready."""
    if launcher.get("_target_") != JOBLIB_LAUNCHER or launcher.get("n_jobs") == 1 or jobs == 1:
        yield
        return
    thread = threading.Thread(target=_start_workers, args=(launcher, jobs), daemon=True)
    thread.start()
    yield
    thread.join()  # not on an exception: the sweep stops without waiting for the imports


def _start_workers(launcher: DictConfig, jobs: int | None) -> None:
    try:
        from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
        from joblib import Parallel, delayed, effective_n_jobs

        from vnnlab.cli import load_job_code

        # the launcher's arguments, processed as the launcher does, so that its call reuses them
        args = OmegaConf.to_container(launcher, resolve=True)
        args.pop("_target_")
        args["backend"] = "loky"
        process_joblib_cfg(args)
        # not one per core for a 4-job sweep with n_jobs=-1: each import holds ~0.5 GB
        workers = effective_n_jobs(args["n_jobs"])
        workers = workers if jobs is None else min(workers, jobs)
        Parallel(**args)(delayed(load_job_code)() for _ in range(workers))
    except Exception as error:  # only time is lost: each job imports what it needs anyway
        print(f"vnnlab: workers not started early ({type(error).__name__}: {error})",
              file=sys.stderr)  # fmt: skip


def _jobs_at_once(config: DictConfig) -> int | None:
    """The most jobs the sweeper hands the launcher at once, where it says: the basic sweeper's
    grid of swept values (or its max_batch_size), vnnlab's Optuna sweeper's n_jobs; None for
    another sweeper, or a sweep counted only against the config (glob)."""
    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") == OPTUNA_SWEEPER:
        return int(sweeper.n_jobs)
    if sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    params = sweeper.get("params") or {}
    overrides = [*config.hydra.overrides.task, *(f"{key}={value}" for key, value in params.items())]
    grid = 1
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            try:
                grid *= len(list(override.sweep_string_iterator()))
            except HydraException:
                return None
    return min(grid, sweeper.get("max_batch_size") or grid)


def _report(sweep: Sweep) -> None:
    """The comparison table on the terminal and as the parent run's artifacts. A table that
    cannot be built is reported, never allowed to leave the parent run open."""
    try:
        from vnnlab import compare  # its figure code is only needed once a sweep ends

        print(compare.report_sweep(sweep.tracking_uri, sweep.parent_run_id), flush=True)
    except Exception as error:
        print(f"vnnlab: no comparison table ({type(error).__name__}: {error})", file=sys.stderr)


def _swept_keys(overrides: list[str], config: DictConfig) -> list[str]:
    """Keys given several values on the command line, and a sweeper's search space."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    keys = [o.key_or_group for o in parsed if o.is_sweep_override() and not o.is_hydra_override()]
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return list(dict.fromkeys([*keys, *params]))


def _parent_name(overrides: list[str], swept: list[str]) -> str:
    shown = [o for o in overrides if _key(o) in swept] or overrides
    return " ".join(["sweep", *shown])


def _parent_tags(config: DictConfig, swept: list[str]) -> dict[str, str]:
    hydra_cfg = config.hydra
    return {
        "vnnlab.sweep.role": "parent",
        "vnnlab.sweep.params": ",".join(swept),
        "vnnlab.sweep.overrides": " ".join(hydra_cfg.overrides.task),
        "vnnlab.sweep.launcher": str(hydra_cfg.launcher.get("_target_", "")),
        "vnnlab.sweep.sweeper": str(hydra_cfg.sweeper.get("_target_", "")),
        "vnnlab.sweep.dir": str(_sweep_dir(hydra_cfg.sweep.dir, Path.cwd())),
    }


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _sweep_dir(configured: str, launch_dir: Path) -> Path:
    return (launch_dir / configured).resolve()


def _job_number(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)
