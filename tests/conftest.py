"""Shared fixtures: a real `vnnlab-train` subprocess in a temporary launch directory."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from vnnlab import tracking

# Small and quick: two epochs, no progress bar; a few hundred synthetic points.
QUICK = [
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
FAST = [*QUICK, "data.n_train=200", "data.n_val=50", "data.n_test=100"]


class CLI:
    """Runs `python -m vnnlab.cli` (vnnlab-train) in `workdir`, so the default store is
    workdir/mlflow.db."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        self.env["OMP_NUM_THREADS"] = "1"  # two test processes must not fight over 2 cores

    def command(self, *overrides: str) -> list[str]:
        return [sys.executable, "-m", "vnnlab.cli", *overrides]

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
        return tracking.open_store(f"sqlite:///{self.store}")  # safe while a run creates it

    def runs(self):
        client = self.client()
        experiments = [e.experiment_id for e in client.search_experiments()]
        return client.search_runs(experiments)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def _sigint_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with its store and artifacts in `folder`; it can be
    stopped and started again on the same port, as a server that goes away and comes back."""

    def __init__(self, folder: Path):
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
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


@pytest.fixture
def mlflow_server(tmp_path):
    """The URL of a running MlflowServer, stopped after the test."""
    server = MlflowServer(tmp_path)
    server.start()
    yield server.url
    server.stop()
