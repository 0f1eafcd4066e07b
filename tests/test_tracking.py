"""The MLflow run lifecycle on a real SQLite store: every way out leaves a final status."""

import time
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


def test_system_metrics_are_sampled_while_the_run_is_open(store):
    with tracking.tracked_run(store, "exp", "name", {}, system_metrics_every_s=0.2):
        time.sleep(1.5)
    run = only_run(store)
    history = MlflowClient(store).get_metric_history(
        run.info.run_id, "system/cpu_utilization_percentage"
    )
    assert run.info.status == "FINISHED"
    assert len(history) >= 2 and all(0 <= m.value <= 100 for m in history)


def test_run_logger_sends_one_record_per_epoch_and_the_rest_when_lightning_finalizes(store):
    from vnnlab.lightning_hooks import RunLogger

    sent = []
    logger = RunLogger(send=lambda what, call, metrics, step: sent.append((step, metrics)),
                       tracking_uri=store, run_id="unused")  # fmt: skip
    logger.log_metrics({"val/loss": 2.0}, step=9)  # validation ends before the training epoch
    assert sent == []
    logger.log_metrics({"train/loss": 3.0}, step=9)
    assert sent == [(9, {"val/loss": 2.0, "train/loss": 3.0})]
    logger.log_metrics({"val/loss": 1.5}, step=19)  # a fit stopped after validation (NaN)
    logger.finalize("failed")
    logger.log_metrics({"test/loss": 1.0}, step=20)
    logger.finalize("success")
    assert sent[1:] == [(19, {"val/loss": 1.5}), (20, {"test/loss": 1.0})]
