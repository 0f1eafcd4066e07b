"""What the tests share: small configs, the command run in this process or as a real process,
a real `mlflow server`, and reading runs back from a store."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from vnnlab import CONFIG_DIR
from vnnlab.commands import train as train_command

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


def runs_in(store: Path | str) -> list[Run]:
    """Every run in the store (a SQLite file or a tracking URI), oldest first."""
    uri = store if isinstance(store, str) else f"sqlite:///{store}"
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, order_by=["attributes.start_time ASC"])


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class InProcessCommand:
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

    @property
    def store(self) -> Path:
        return self.workdir / "mlflow.db"

    def client(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.store}")

    def runs(self) -> list[Run]:
        return runs_in(self.store)


class CLI:
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

    @property
    def store(self) -> Path:
        return self.workdir / "mlflow.db"

    def client(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.store}")

    def runs(self) -> list[Run]:
        return runs_in(self.store)


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

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
            "--artifacts-destination", str(self.folder / "server-artifacts"),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.process.kill()
        pytest.fail(f"mlflow server did not start: {self.process.communicate()[1][-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.communicate(timeout=30)
            self.process = None
