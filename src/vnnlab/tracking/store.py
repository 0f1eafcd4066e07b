"""Where runs go and how a store is opened: the tracking URI, a SQLite file created by one
process at a time, "database is locked" retried, experiments created by name."""

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vnnlab import tags
from vnnlab.errors import bad_value

T = TypeVar("T")

ALLOWED_STORES = "sqlite:///<file>, a folder, or http(s)://<server> that answers"


def resolve_tracking_uri(configured: str | None, launch_dir: Path) -> str:
    """`tracking.uri`, else $MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlflow.db."""
    if configured:
        return configured
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{launch_dir.resolve() / 'mlflow.db'}"
    )


def sqlite_path(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or ":memory:" in tracking_uri:
        return None
    return Path(tracking_uri[len(prefix) :]).resolve()


def artifact_root(tracking_uri: str) -> str | None:
    """For a SQLite store: <folder of the .db>/mlruns, so artifacts live beside their store
    (MLflow's default is ./mlruns in whatever directory created the experiment)."""
    database = sqlite_path(tracking_uri)
    return None if database is None else (database.parent / "mlruns").as_uri()


def open_store(tracking_uri: str) -> MlflowClient:
    """A client on a store, created if new. A new SQLite file is created (MLflow's schema
    migration) by one process at a time: several processes opening a fresh store at once (a
    parallel sweep, four jobs started together) otherwise race in the migration and fail."""
    database = sqlite_path(tracking_uri)
    if database is None or database in _opened:
        return MlflowClient(tracking_uri)
    database.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(database.parent):
        client = MlflowClient(tracking_uri)  # creates or migrates the schema
    _opened.add(database)
    return client


_opened: set[Path] = set()  # SQLite stores this process has opened once


def open_existing_store(
    tracking_uri: str, key: str = "tracking.uri", value: Any = None
) -> MlflowClient:
    """A client on a store that must already hold runs (to resume, load or compare them): a
    SQLite file that does not exist is refused, since MLflow would create an empty store there
    and then report that the run is not in it. The refusal names `key` and `value` (default:
    the URI), the setting the user gave."""
    database = sqlite_path(tracking_uri)
    if database is not None and not database.is_file():
        store = f"an existing MLflow store (there is none at {database})"
        if value is None:
            raise bad_value(key, tracking_uri, store)
        raise bad_value(key, value, f"the id of a run in {store}")
    return open_store(tracking_uri)


def check_store(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """BadInputError unless runs can be written there: a tracking server must answer its
    health check, a SQLite file's folder must be writable (the file itself is created with the
    run, so bad input leaves none), anything else must be a store MLflow can open."""
    if tracking_uri.startswith(("http://", "https://")):
        try:
            requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s)
        except requests.RequestException as error:
            reason = type(error).__name__
            raise bad_value(
                "tracking.uri", tracking_uri, f"{ALLOWED_STORES} (got {reason})"
            ) from None
        return
    database = sqlite_path(tracking_uri)
    try:
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(database.parent, os.W_OK):
                raise PermissionError(13, "a read-only folder")
        else:
            open_store(tracking_uri)
    except (MlflowException, ValueError):  # its text is about the model registry
        allowed = f"{ALLOWED_STORES} (MLflow has no store for it)"
        raise bad_value("tracking.uri", tracking_uri, allowed) from None
    except OSError as error:  # a folder that cannot be written
        allowed = f"{ALLOWED_STORES} ({error.strerror})"
        raise bad_value("tracking.uri", tracking_uri, allowed) from None


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """flock on a folder (no lock file left behind), held by one process at a time (the SQLite
    store's creation; an Optuna sweeper's asks, vnnlab.sweep.study_storage); released if the
    process dies."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


# SQLite lets one writer in at a time; MLflow has the others wait up to 20 s (busy_timeout),
# then they get "database is locked", which a moment later may be gone. MLflow raises no typed
# error for it, hence its text: tests/reliability/test_shared_store.py holds a store locked for
# longer than SQLite waits and fails if that text (and so the retry) stops matching.
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


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of the experiment `name`, created (in the training view of the UI) if new."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        root = artifact_root(client.tracking_uri)
        try:
            return client.create_experiment(name, artifact_location=root, tags=tags.EXPERIMENT_KIND)
        except MlflowException as error:  # another process created it a moment ago
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    for key, value in tags.EXPERIMENT_KIND.items():
        if experiment.tags.get(key) is None:  # made by something else
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id
