"""Several processes, one SQLite store: nothing lost when they start together on a fresh store
or when the database stays locked longer than SQLite waits (MLflow sets busy_timeout to 20 s)."""

import sqlite3
import time

import pytest

from helpers import CLI, FAST

pytestmark = pytest.mark.slow

QUIET = [*FAST, "trainer.enable_progress_bar=false"]
# MLflow has SQLite wait 20 s for a lock (PRAGMA busy_timeout), then "database is locked"
LOCKED_FOR_S = 25


def histories(cli: CLI, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in cli.client().get_metric_history(run_id, key))


def test_four_processes_on_one_fresh_store_all_record_their_runs(cli):
    assert not cli.store.exists()
    processes = [cli.popen(*QUIET, f"seed={seed}") for seed in range(4)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    runs = cli.runs()
    assert sorted(run.data.params["seed"] for run in runs) == ["0", "1", "2", "3"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert {cli.client().get_experiment(run.info.experiment_id).name for run in runs} == {"vnnlab"}
    # started in the same second, each still has its own output folder for its checkpoint
    assert len({run.data.tags["vnnlab.checkpoint_dir"] for run in runs}) == 4
    for run in runs:
        assert len(histories(cli, run.info.run_id, "train/loss")) == 2
        assert "test/mse" in run.data.metrics


def test_a_store_locked_for_longer_than_sqlite_waits_loses_nothing(cli):
    epochs = 40
    process = cli.popen(*QUIET, f"trainer.max_epochs={epochs}", "model=mlp_regressor")
    cli.wait_for_an_epoch(process)
    with sqlite3.connect(cli.store, isolation_level=None) as lock:
        lock.execute("BEGIN EXCLUSIVE")  # no other reader or writer until COMMIT
        time.sleep(LOCKED_FOR_S)
        lock.execute("COMMIT")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    [run] = cli.runs()
    assert run.info.status == "FINISHED"
    assert len(histories(cli, run.info.run_id, "train/loss")) == epochs
    assert len(histories(cli, run.info.run_id, "val/loss")) == epochs
