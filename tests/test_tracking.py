"""The MLflow run lifecycle on a real SQLite store: every way out leaves a final status."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from vnnlab import tracking


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def only_run(store: str):
    client = MlflowClient(store)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return run


def test_finished_run_keeps_params_metrics_and_artifacts_beside_the_store(store, tmp_path):
    with tracking.tracked_run(store, "exp", "name", {"k": "v"}) as run:
        run.log_params({f"p{i}": str(i) for i in range(250)})  # more than one log_batch
        run.log_metrics({"test/mse": 0.5, "test/acc": 0.25}, step=3)
        run.log_text("a: 1\n", "config.yaml")
    recorded = only_run(store)
    assert recorded.info.status == "FINISHED"
    assert recorded.info.run_name == "name" and recorded.data.tags["k"] == "v"
    assert len(recorded.data.params) == 250 and recorded.data.params["p249"] == "249"
    assert recorded.data.metrics == {"test/mse": 0.5, "test/acc": 0.25}
    assert (tmp_path / "mlruns" / recorded.info.run_id / "artifacts" / "config.yaml").exists()


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED"), (SystemExit(1), "KILLED")],
)
def test_a_run_that_raises_is_never_left_running(store, error, status):
    with pytest.raises(type(error)):
        with tracking.tracked_run(store, "exp", "name", {}):
            raise error
    assert only_run(store).info.status == status


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5999"
    assert tracking.resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_flatten_gives_dotted_keys():
    tree = {"model": {"lr": 0.1, "hidden": [50, 50]}, "seed": 0, "tracking": {"uri": None}}
    assert tracking.flatten(tree) == {
        "model.lr": "0.1",
        "model.hidden": "[50, 50]",
        "seed": "0",
        "tracking.uri": "None",
    }
