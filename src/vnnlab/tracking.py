"""MLflow bookkeeping for one run: where it goes, what it records, and how it ends.

The run is driven through `MlflowClient` with explicit ids (no fluent `mlflow.start_run`
global), so runs in one process (a Hydra sweep) cannot leak into each other, and the
experiment id is passed explicitly (set_experiment races put runs in "Default").
"""

import fcntl
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import requests
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vnnlab.errors import bad_value

T = TypeVar("T")

LOG_BATCH_LIMIT = 100  # MLflow accepts at most 100 params per log_batch call
FAILURE_TAG = "vnnlab.failure"  # why a FAILED run failed
STOPPED_TAG = "vnnlab.stopped_by"  # why a KILLED run stopped (Ctrl-C, SIGTERM)


def resolve_tracking_uri(configured: str | None, launch_dir: Path) -> str:
    """`tracking.uri`, else $MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlflow.db."""
    if configured:
        return configured
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{launch_dir.resolve() / 'mlflow.db'}"
    )


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"model": {"lr": 0.1}} → {"model.lr": "0.1"}: MLflow params as dotted keys."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_tags(path: Path) -> dict[str, str]:
    """Provenance of the code at `path`: its commit, and whether the working tree had
    uncommitted changes (then the commit alone does not reproduce the run). {} outside git."""
    commit = _git(path, "rev-parse", "HEAD")
    if commit is None:
        return {}
    changes = _git(path, "status", "--porcelain", "--untracked-files=no")
    return {
        "mlflow.source.git.commit": commit,
        "vnnlab.git.dirty": "unknown" if changes is None else str(bool(changes)).lower(),
    }


def _git(path: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def artifact_root(tracking_uri: str) -> str | None:
    """For a SQLite store: <folder of the .db>/mlruns, so artifacts live beside their store
    (MLflow's default is ./mlruns in whatever directory created the experiment)."""
    database = sqlite_path(tracking_uri)
    return None if database is None else (database.parent / "mlruns").as_uri()


def open_store(tracking_uri: str) -> MlflowClient:
    """A client on a store that exists. A new SQLite file is created (MLflow's schema migration)
    by one process at a time: several processes opening a fresh store at once (a parallel
    sweep, four jobs started together) otherwise race in the migration and fail."""
    database = sqlite_path(tracking_uri)
    if database is None or database in _opened:
        return MlflowClient(tracking_uri)
    database.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(database.parent):
        client = MlflowClient(tracking_uri)  # creates or migrates the schema
    _opened.add(database)
    return client


_opened: set[Path] = set()  # SQLite stores this process has opened once


def check_store(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """BadInputError unless the store can be used: a tracking server must answer its health
    check, anything else must be a store MLflow can open."""
    allowed = "sqlite:///<file>, a folder, or http(s)://<server> that answers"
    if tracking_uri.startswith(("http://", "https://")):
        try:
            requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s)
        except requests.RequestException as error:
            reason = type(error).__name__
            raise bad_value("tracking.uri", tracking_uri, f"{allowed} (got {reason})") from None
        return
    database = sqlite_path(tracking_uri)
    if database is not None:  # the file is created with the run: bad input leaves none
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise bad_value("tracking.uri", tracking_uri, f"{allowed} ({error.strerror})") from None
        if not os.access(database.parent, os.W_OK):
            raise bad_value("tracking.uri", tracking_uri, f"{allowed} (a read-only folder)")
        return
    try:
        open_store(tracking_uri)
    except (MlflowException, ValueError):  # its text is about the model registry
        raise bad_value(
            "tracking.uri", tracking_uri, f"{allowed} (MLflow has no store for it)"
        ) from None
    except OSError as error:  # a folder that cannot be written
        raise bad_value("tracking.uri", tracking_uri, f"{allowed} ({error.strerror})") from None


def sqlite_path(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or ":memory:" in tracking_uri:
        return None
    return Path(tracking_uri[len(prefix) :]).resolve()


@contextmanager
def _exclusive_lock(folder: Path) -> Iterator[None]:
    """flock on the store's folder (no lock file left behind); released if the process dies."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


# SQLite lets one writer in at a time; MLflow has the others wait up to 20 s (busy_timeout),
# then they get "database is locked", which a moment later may be gone.
LOCKED = "database is locked"
RETRY_SECONDS = (0.5, 1, 2, 4, 8, 15, 30)


def with_retries(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`, tried again after a pause while SQLite says it is locked."""
    for pause in RETRY_SECONDS:
        try:
            return call(*args, **kwargs)
        except MlflowException as error:
            if LOCKED not in str(error):
                raise
            time.sleep(pause)
    return call(*args, **kwargs)


# MLflow 3's UI opens an experiment in its GenAI view (traces, prompts) unless told otherwise.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of the experiment `name`, created (in the training view of the UI) if new."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        root = artifact_root(client.tracking_uri)
        try:
            return client.create_experiment(name, artifact_location=root, tags=EXPERIMENT_KIND)
        except MlflowException as error:  # another process created it a moment ago
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.tags.get("mlflow.experimentKind") is None:  # made by something else
        for key, value in EXPERIMENT_KIND.items():
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


# ids of the Trainers running a stage (vnnlab.lightning_hooks.LightningHandlesSigterm)
running_trainers: set[int] = set()


def raise_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handler: KeyboardInterrupt, so that the run ends KILLED rather than RUNNING.
    While a Trainer runs, Lightning's own handler has already noted the signal and stops at
    the next batch with SIGTERMException (a SystemExit, also KILLED); raising here as well
    could cut a database write in half and leave the store locked."""
    if not running_trainers:
        raise KeyboardInterrupt(f"signal {signum}")


class TrackedRun:
    """An open MLflow run: what train() records into it.

    Every record goes through `send`. When a tracking server stops answering (after MLflow's
    own retries), training goes on: records are held back in order and sent by `flush` when
    the run ends; what still cannot be sent is left in `unsent` for train() to report."""

    def __init__(self, client: MlflowClient, run_id: str, tracking_uri: str, experiment_id: str):
        self.client = client
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.held_back: list[tuple[str, Callable[[], Any]]] = []  # (what, how to send it)
        self.unsent: list[str] = []

    def send(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """`call(*args, **kwargs)` now, or, while the server does not answer, at `flush`."""
        if not self.held_back:
            try:
                with_retries(call, *args, **kwargs)
                return
            except MlflowException as error:
                if not unreachable(error):
                    raise
                print(f"vnnlab: the tracking server {self.tracking_uri} does not answer; "
                      "training goes on and keeps its records to send at the end",
                      file=sys.stderr, flush=True)  # fmt: skip
        self.held_back.append((what, functools.partial(call, *args, **kwargs)))

    def flush(self) -> None:
        """Send what was held back, in order; what the server still refuses goes to `unsent`."""
        while self.held_back:
            what, call = self.held_back[0]
            try:
                call()
            except MlflowException as error:
                if not unreachable(error):
                    raise
                self.unsent = [what for what, _ in self.held_back]
                return
            self.held_back.pop(0)

    def lightning_logger(self, logged_through: Mapping[str, int] | None = None) -> Any:
        """Lightning's logger on this run; `logged_through`: per key, the last step the store
        already holds (a resumed run does not log those again)."""
        from vnnlab.lightning_hooks import RunLogger  # Lightning only where a model trains

        return RunLogger(
            tracking_uri=self.tracking_uri,
            run_id=self.run_id,
            send=self.send,
            logged_through=logged_through,
        )

    def set_tag(self, key: str, value: str) -> None:
        self.send(f"tag {key}={value[:80]}", self.client.set_tag, self.run_id, key, value)

    def log_params(self, params: Mapping[str, str]) -> None:
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), LOG_BATCH_LIMIT):
            batch = items[start : start + LOG_BATCH_LIMIT]
            what = "params " + ", ".join(f"{p.key}={p.value}" for p in batch)
            self.send(what, self.client.log_batch, self.run_id, params=batch)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        timestamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
        self.send(
            describe_metrics(metrics, step), self.client.log_batch, self.run_id, metrics=batch
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        self.send(
            f"artifact {artifact_file}", self.client.log_text, self.run_id, text, artifact_file
        )

    def log_figure(self, figure: Figure, artifact_file: str) -> None:
        what = f"artifact {artifact_file}"
        self.send(what, self.client.log_figure, self.run_id, figure, artifact_file)

    def describe(self, text: str) -> None:
        """The run's description, shown at the top of its page in the MLflow UI."""
        self.set_tag("mlflow.note.content", text)

    def log_file(self, path: Path, artifact_dir: str) -> None:
        what = f"artifact {artifact_dir}/{path.name} (kept at {path})"
        self.send(what, self.client.log_artifact, self.run_id, str(path), artifact_dir)


def describe_metrics(metrics: Mapping[str, float], step: int | None) -> str:
    """One line for a record of metrics: `metrics at step 80: val/loss=0.52, ...`."""
    values = ", ".join(f"{key}={float(value)!r}" for key, value in metrics.items())
    return f"metrics at step {step}: {values}"


def unreachable(error: MlflowException) -> bool:
    """MLflow's REST client gave up on a server that does not answer (connection refused or
    reset, timeouts), as opposed to a server that answered with an error."""
    text = str(error)
    return "Max retries exceeded" in text or "Connection aborted" in text


@contextmanager
def tracked_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    known_experiment_id: str | None = None,
    resume_run_id: str | None = None,
    system_metrics_every_s: float | None = None,
) -> Iterator[TrackedRun]:
    """Create a run, or reopen `resume_run_id`, and always end it: FINISHED, KILLED (Ctrl-C,
    SIGTERM) or FAILED.

    SIGTERM (from `kill`, SLURM, a sweep launcher) is turned into KeyboardInterrupt for the
    duration of the run so that it ends KILLED instead of being left RUNNING. A new run goes to
    the experiment named `experiment` (created if new), or to `known_experiment_id`. With
    `system_metrics_every_s`, MLflow's monitor samples CPU, memory, disk and network meanwhile.
    """
    client = open_store(tracking_uri)
    if resume_run_id is None:
        in_experiment = known_experiment_id or experiment_id(client, experiment)
        run = client.create_run(in_experiment, run_name=run_name, tags=dict(tags))
    else:
        run = _reopen(client, resume_run_id, tags)
    tracked = TrackedRun(client, run.info.run_id, tracking_uri, run.info.experiment_id)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_interrupt) if in_main_thread else None
    monitor = _system_metrics(tracked, system_metrics_every_s, resumed=resume_run_id is not None)
    status = RunStatus.FAILED
    try:
        yield tracked
        status = RunStatus.FINISHED
    except (KeyboardInterrupt, SystemExit) as stop:  # Lightning turns Ctrl-C into sys.exit(1)
        status = RunStatus.KILLED
        cause = stop.__context__ if isinstance(stop.__context__, KeyboardInterrupt) else stop
        tracked.set_tag(STOPPED_TAG, repr(cause))
        raise
    except Exception as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        tracked.set_tag(FAILURE_TAG, reason[:5000])
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if monitor is not None:
            monitor.finish()  # its last samples, before the run ends
        status_text = RunStatus.to_string(status)
        tracked.send(f"status {status_text}", client.set_terminated, tracked.run_id, status_text)
        tracked.flush()


def _system_metrics(run: TrackedRun, every_s: float | None, resumed: bool) -> Any:
    """MLflow's system-metrics monitor on `run`, started (a thread), or None."""
    if every_s is None:
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run.run_id, sampling_interval=every_s, resume_logging=resumed,
                                   tracking_uri=run.tracking_uri)  # fmt: skip
    monitor.start()
    return monitor


def _reopen(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> Run:
    """Mark a stopped (or stale RUNNING) run RUNNING again, without the reason it stopped."""
    run = client.get_run(run_id)
    client.update_run(run_id, status="RUNNING")
    for stale in (FAILURE_TAG, STOPPED_TAG):
        if stale in run.data.tags:
            client.delete_tag(run_id, stale)
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
    return run
