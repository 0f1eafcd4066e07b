"""What the tests share: small configs, the command run in this process or as a real process,
a real `mlflow server` (on SQLite or on a real PostgreSQL), and reading runs back from a store."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from vnnlab import CONFIG_DIR
from vnnlab.commands import train as train_command
from vnnlab.tracking.store import open_store

# Small and quick: two epochs, no progress bar; a few hundred synthetic points.
QUICK = [
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
FAST = [*QUICK, "data.n_train=200", "data.n_val=50", "data.n_test=100"]


def composed(*overrides: str) -> DictConfig:
    """The config `vnnlab-train <overrides>` would run, without Hydra's own settings."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return cfg


def printed_by_a_fresh_python(code: str) -> list[str]:
    """What `code` prints, word by word, run in a new interpreter (nothing imported yet)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


def regression_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """n rows: inputs a, b, c on different scales, a real target y (linear in them, noise sd
    0.1) and a label `kind` (y above or below its median: "high", "low")."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=[10.0, -3.0, 0.0], scale=[5.0, 0.5, 2.0], size=(n, 3))
    y = x @ np.array([0.2, 1.0, -0.5]) + rng.normal(0, 0.1, n)
    labels = np.where(y > np.median(y), "high", "low")
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y, "kind": labels})


def runs_in(store: Path | str) -> list[Run]:
    """Every run in the store (a SQLite file or a tracking URI), oldest first."""
    uri = store if isinstance(store, str) else f"sqlite:///{store}"
    client = open_store(uri)  # waits while a process is creating the store (its lock)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, order_by=["attributes.start_time ASC"])


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class LaunchFolder:
    """A folder a command starts in: its default store, workdir/mlflow.db, and its runs."""

    workdir: Path

    @property
    def store(self) -> Path:
        return self.workdir / "mlflow.db"

    def client(self) -> MlflowClient:
        return open_store(f"sqlite:///{self.store}")  # safe while a run creates the store

    def runs(self) -> list[Run]:
        return runs_in(self.store)


class InProcessCommand(LaunchFolder):
    """`vnnlab-train <argv>` as `vnnlab.commands.train.main(argv)` in this process, started in
    `workdir` (so the default store is workdir/mlflow.db), with what it printed and its exit
    code. For what needs no separate process: exit codes, messages, runs, sweeps with Hydra's
    basic launcher."""

    def __init__(self, workdir: Path, capfd: pytest.CaptureFixture, monkeypatch):
        self.workdir = workdir
        self.capfd = capfd
        workdir.mkdir(parents=True, exist_ok=True)
        monkeypatch.chdir(workdir)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def run(self, *argv: str) -> CommandResult:
        self.capfd.readouterr()  # what came before is not this command's
        try:
            train_command.main(list(argv))
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        out, err = self.capfd.readouterr()
        return CommandResult(code, out, err)


class CLI(LaunchFolder):
    """`python -m vnnlab` (vnnlab-train) as a real process in `workdir`, for what needs one:
    signals, processes side by side, launchers that start processes."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        self.env["OMP_NUM_THREADS"] = "1"  # two test processes must not fight over 2 cores

    def command(self, *overrides: str) -> list[str]:
        return [sys.executable, "-m", "vnnlab", *overrides]

    def run(self, *overrides: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*overrides), cwd=self.workdir, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def popen(self, *overrides: str) -> subprocess.Popen:
        """The command, started as from a terminal: Ctrl-C (SIGINT) interrupts it even when
        the tests run in the background (there a shell starts them with SIGINT ignored, and
        Python keeps an ignored SIGINT ignored)."""
        return subprocess.Popen(
            self.command(*overrides), cwd=self.workdir, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_sigint_interrupts,
        )  # fmt: skip

    def wait_for_an_epoch(
        self, process: subprocess.Popen, timeout: float = 120, known: frozenset[str] = frozenset()
    ) -> None:
        """Until a run (not one of the `known` ids) has logged train/loss: training is under
        way in `process`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs() if self.store.exists() else []
            if any("train/loss" in r.data.metrics for r in runs if r.info.run_id not in known):
                return
            time.sleep(0.5)
        process.kill()
        pytest.fail(f"no epoch logged: {process.communicate()[1][-2000:]}")


def _sigint_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with its store and artifacts in `folder`; it can be
    stopped and started again on the same port, as a server that goes away and comes back."""

    def __init__(self, folder: Path, backend_store_uri: str | None = None, workers: int = 1):
        self.folder = folder
        self.backend_store_uri = backend_store_uri or f"sqlite:///{folder / 'server.db'}"
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"  # a file, not a pipe: a pipe nobody reads fills and blocks
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", str(self.workers),
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.folder / "server-artifacts"),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.process.kill()
        self.process.wait()
        pytest.fail(f"mlflow server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.communicate(timeout=30)
            self.process = None


def postgres_bindir() -> Path:
    """The folder of PostgreSQL's server programs: Debian's newest /usr/lib/postgresql/<major>/bin
    (package postgresql, which .ci/run installs), else where `postgres` is on the PATH."""
    debian = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    debian.sort(key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0)
    on_path = shutil.which("postgres")
    if debian or on_path:
        return debian[-1] if debian else Path(on_path).parent
    pytest.fail("no PostgreSQL server programs: apt-get install postgresql (.ci/run does)")


class PostgresServer:
    """A real PostgreSQL on 127.0.0.1, a cluster of its own in a fresh folder, trust
    authentication for the user `postgres`. PostgreSQL refuses to run as root: as root, its
    programs run as the system user `postgres` (Debian's package makes it), in a folder under
    /tmp that user owns (pytest's tmp_path is root's alone)."""

    SUPERUSER = "postgres"

    def __init__(self, settings: dict[str, str] | None = None):
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.settings = settings or {}  # postgres -c key=value
        self.folder = Path(tempfile.mkdtemp(prefix="vnnlab-postgres-"))
        self.log = self.folder / "postgres.log"
        self.as_user: dict = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self.as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        data = self.folder / "data"
        subprocess.run(
            [self.bindir / "initdb", "-D", data, "-U", self.SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--no-sync"],
            check=True, capture_output=True, **self.as_user,
        )  # fmt: skip
        options = [f"-c{key}={value}" for key, value in self.settings.items()]
        command = [self.bindir / "postgres", "-D", data, "-h", "127.0.0.1",
                   "-p", str(self.port), "-k", self.folder, *options]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, **self.as_user
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.uri("postgres", driver=""), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"PostgreSQL did not start: {self.log.read_text()[-2000:]}")

    def uri(self, database: str, driver: str = "+psycopg") -> str:
        """SQLAlchemy's URL of `database` (psycopg 3), or libpq's with driver=""."""
        return f"postgresql{driver}://{self.SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        with psycopg.connect(self.uri("postgres", driver=""), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended, nothing is left half-written)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)


def task_model(task: type, method: type, *dims: int, **knobs):
    """task(*dims) fitted by `method`, each knob given to whichever of the two declares it:
    task_model(Regressor, BayesByBackprop, 1, 1, 100, hidden=[8], rho_init=-1.0)."""
    import inspect

    method_keys = set(inspect.signature(method).parameters)
    inference = {"_target_": f"{method.__module__}.{method.__qualname__}"}
    inference |= {key: value for key, value in knobs.items() if key in method_keys}
    own = {key: value for key, value in knobs.items() if key not in method_keys}
    return task(*dims, inference=inference, **own)


def split_table(path, n_splits=3, n=120):
    """y = x₁ − 2 x₂ + noise, with one train/val/test column per split (seeded shuffles)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    table = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1]})
    table["y"] = x[:, 0] - 2 * x[:, 1] + rng.normal(0, 0.1, n)
    for split in range(n_splits):
        names = np.array(["train"] * 80 + ["val"] * 20 + ["test"] * 20)
        table[f"split_{split}"] = rng.permutation(names)
    table.to_csv(path, index=False)
