"""Fixtures; the helpers they build on are in helpers.py (imported by the tests that need them).

Tests marked `slow` start real processes (signals, processes side by side on one store, a
server that goes away, launchers that start processes): `pytest -q -m slow` runs them; the
README's `pytest -q` runs the rest, in this process."""

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import CLI, InProcessCommand, MlflowServer, PostgresServer, regression_table


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """A SQLite store as MLflow creates it (its schema migrated, no run), made once: a fresh
    store takes MLflow 1.5-2 s of migrations, a copy of this one a few milliseconds."""
    store = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{store}").search_experiments()
    return store


@pytest.fixture
def store(tmp_path: Path, empty_store: Path) -> Path:
    """tmp_path/mlflow.db: a store of this test's own, created as the first command would."""
    path = tmp_path / "mlflow.db"
    shutil.copyfile(empty_store, path)
    return path


@pytest.fixture
def command(store: Path, capfd, monkeypatch) -> InProcessCommand:
    """vnnlab-train run in this process from tmp_path, into its store tmp_path/mlflow.db."""
    return InProcessCommand(store.parent, capfd, monkeypatch)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    """vnnlab-train as a real process, started in tmp_path (with no store yet)."""
    return CLI(tmp_path)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """The URL of a real `mlflow server` on 127.0.0.1 shared by the tests of a session (each
    writes to an experiment of its own)."""
    server = MlflowServer(tmp_path_factory.mktemp("server"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL on 127.0.0.1 for the session (each user makes a database of its own)."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def team_server(postgres, tmp_path_factory):
    """The URL of a real `mlflow server` as a team runs it: its store in PostgreSQL, artifacts
    proxied (clients need no database or storage credentials), two workers."""
    folder = tmp_path_factory.mktemp("team-server")
    server = MlflowServer(folder, backend_store_uri=postgres.create_database("mlflow"), workers=2)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def csv(tmp_path):
    """tmp_path/table.csv: regression_table() with `;` between its columns."""
    path = tmp_path / "table.csv"
    regression_table().to_csv(path, index=False, sep=";")  # the delimiter is sniffed
    return path
