"""The team server, started for real: `mlflow server` with its store in a real PostgreSQL on
127.0.0.1 and proxied artifacts (tests/conftest.py's `team_server`), written by a parallel
sweep's joblib workers; checked through MLflow's client as a teammate would read it."""

import pytest
from mlflow.tracking import MlflowClient

from helpers import FAST

pytestmark = pytest.mark.slow

EPOCHS = 3


def epoch_counts(client: MlflowClient, run_id: str, keys) -> dict[str, list[int]]:
    """For each per-epoch metric of the run: how many times each step was logged."""
    counts = {}
    for key in keys:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        counts[key] = [steps.count(step) for step in sorted(set(steps))]
    return counts


def test_a_joblib_sweep_on_the_postgresql_server_keeps_every_run_and_epoch_once(cli, team_server):
    result = cli.run("-m", *FAST, f"trainer.max_epochs={EPOCHS}", "data.n_train=100",
                     "model.lr=0.001,0.003,0.01,0.03", f"tracking.uri={team_server}",
                     "tracking.experiment=team", "hydra/launcher=joblib",
                     "hydra.launcher.n_jobs=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert not cli.store.exists()  # nothing went to a local SQLite file
    client = MlflowClient(team_server)
    experiment = client.get_experiment_by_name("team")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("vnnlab.sweep.role") == "parent"]
    children = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert len(children) == 4  # none lost, none outside the sweep
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(c.data.params["model.lr"] for c in children) == ["0.001", "0.003", "0.01", "0.03"]
    for child in children:
        per_epoch = [k for k in child.data.metrics if k.startswith(("train/", "val/"))]
        assert "train/loss" in per_epoch and "val/loss" in per_epoch
        counts = epoch_counts(client, child.info.run_id, per_epoch)
        assert counts == {key: [1] * EPOCHS for key in per_epoch}  # every epoch, exactly once
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "checkpoints"} <= artifacts  # through the server's proxy
