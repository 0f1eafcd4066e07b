"""One MLflow run: created (or reopened), recorded into, and always ended FINISHED, FAILED or
KILLED.

The run is driven through `MlflowClient` with explicit ids (no fluent `mlflow.start_run`
global), so runs in one process (a Hydra sweep) cannot leak into each other, and the
experiment id is passed explicitly (set_experiment races put runs in "Default").
"""

import functools
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vnnlab import tags
from vnnlab.tracking.interrupts import SigtermHandler, sigterm_interrupts, stop_reason
from vnnlab.tracking.store import experiment_id, open_store, with_retries

LOG_BATCH_LIMIT = 100  # MLflow accepts at most 100 params per log_batch call


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
    dirty = "unknown" if changes is None else str(bool(changes)).lower()
    return {tags.GIT_COMMIT: commit, tags.GIT_DIRTY: dirty}


def _git(path: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class TrackedRun:
    """An open MLflow run: what a training run records into it.

    Every record goes through `send`. When a tracking server stops answering (after MLflow's
    own retries), training goes on: records are held back in order and sent by `flush` when
    the run ends; what still cannot be sent is left in `unsent` for the caller to report."""

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
        self.set_tag(tags.NOTE, text)

    def log_file(self, path: Path, artifact_dir: str) -> None:
        what = f"artifact {artifact_dir}/{path.name} (kept at {path})"
        self.send(what, self.client.log_artifact, self.run_id, str(path), artifact_dir)


def describe_metrics(metrics: Mapping[str, float], step: int | None) -> str:
    """One line for a record of metrics: `metrics at step 80: val/loss=0.52, ...`."""
    values = ", ".join(f"{key}={float(value)!r}" for key, value in metrics.items())
    return f"metrics at step {step}: {values}"


def unreachable(error: MlflowException) -> bool:
    """MLflow's REST client gave up on a server that does not answer (connection refused or
    reset, timeouts), as opposed to a server that answered with an error. MLflow raises one
    type for both; the text is requests' (tests/reliability/test_server_outage.py stops a real
    server and fails if it changes)."""
    text = str(error)
    return "Max retries exceeded" in text or "Connection aborted" in text


@contextmanager
def tracked_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    run_tags: Mapping[str, str],
    known_experiment_id: str | None = None,
    resume_run_id: str | None = None,
    system_metrics_every_s: float | None = None,
    sigterm: SigtermHandler | None = None,
) -> Iterator[TrackedRun]:
    """Create a run, or reopen `resume_run_id`, and always end it: FINISHED, KILLED (Ctrl-C,
    SIGTERM, a SystemExit) or FAILED (any other exception, its reason in a tag).

    While it is open, `sigterm` (default: a new SigtermHandler) handles SIGTERM, raising
    Interrupted so that the run ends KILLED. A new run goes to
    the experiment named `experiment` (created if new), or to `known_experiment_id`. With
    `system_metrics_every_s`, MLflow's monitor samples CPU, memory, disk and network meanwhile.
    """
    client = open_store(tracking_uri)
    if resume_run_id is None:
        in_experiment = known_experiment_id or experiment_id(client, experiment)
        run = client.create_run(in_experiment, run_name=run_name, tags=dict(run_tags))
    else:
        run = _reopen(client, resume_run_id, run_tags)
    tracked = TrackedRun(client, run.info.run_id, tracking_uri, run.info.experiment_id)
    monitor = _system_metrics(tracked, system_metrics_every_s, resumed=resume_run_id is not None)
    status = RunStatus.FAILED
    try:
        with sigterm_interrupts(sigterm or SigtermHandler()):
            yield tracked
        status = RunStatus.FINISHED
    except (KeyboardInterrupt, SystemExit) as stop:
        status = RunStatus.KILLED
        tracked.set_tag(tags.STOPPED_BY, stop_reason(stop))
        raise
    except Exception as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        tracked.set_tag(tags.FAILURE, reason[:5000])
        raise
    finally:
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


def _reopen(client: MlflowClient, run_id: str, run_tags: Mapping[str, str]) -> Run:
    """Mark a stopped (or stale RUNNING) run RUNNING again, without the reason it stopped."""
    run = client.get_run(run_id)
    client.update_run(run_id, status="RUNNING")
    for stale in (tags.FAILURE, tags.STOPPED_BY):
        if stale in run.data.tags:
            client.delete_tag(run_id, stale)
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in run_tags.items()])
    return run
