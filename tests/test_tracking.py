"""The MLflow run lifecycle on a real SQLite store: every way out leaves a final status; the
Lightning logger's batching."""

import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import runs_in
from vnnlab import tags
from vnnlab.tracking.interrupts import Interrupted
from vnnlab.tracking.logger import RunLogger
from vnnlab.tracking.run import flatten, tracked_run
from vnnlab.tracking.store import resolve_tracking_uri


@pytest.fixture
def uri(store: Path) -> str:
    return f"sqlite:///{store}"


def test_finished_run_keeps_params_metrics_and_artifacts_beside_the_store(uri, store):
    with tracked_run(uri, "exp", "name", {"k": "v"}) as run:
        run.log_params({f"p{i}": str(i) for i in range(250)})  # more than one log_batch
        run.log_metrics({"test/mse": 0.5, "test/acc": 0.25}, step=3)
        run.log_text("a: 1\n", "config.yaml")
    [recorded] = runs_in(store)
    assert recorded.info.status == "FINISHED"
    assert recorded.info.run_name == "name" and recorded.data.tags["k"] == "v"
    assert len(recorded.data.params) == 250 and recorded.data.params["p249"] == "249"
    assert recorded.data.metrics == {"test/mse": 0.5, "test/acc": 0.25}
    folder = store.parent / "mlruns" / recorded.info.run_id
    assert (folder / "artifacts" / "config.yaml").read_text() == "a: 1\n"
    experiment = MlflowClient(uri).get_experiment(recorded.info.experiment_id)
    assert experiment.name == "exp" and experiment.tags.items() >= tags.EXPERIMENT_KIND.items()


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (RuntimeError("boom"), "FAILED", ("vnnlab.failure", "RuntimeError: boom")),
        (KeyboardInterrupt(), "KILLED", ("vnnlab.stopped_by", "SIGINT")),
        (Interrupted(signal.SIGTERM), "KILLED", ("vnnlab.stopped_by", "SIGTERM")),
        (SystemExit(1), "KILLED", ("vnnlab.stopped_by", "SystemExit(1)")),
    ],
)
def test_a_run_that_raises_is_never_left_running_and_says_why(uri, store, error, status, reason):
    with pytest.raises(type(error)):
        with tracked_run(uri, "exp", "name", {}):
            raise error
    [run] = runs_in(store)
    assert run.info.status == status
    key, text = reason
    assert run.data.tags[key] == text


def test_sigterm_while_a_run_is_open_ends_it_killed_and_the_handler_is_restored(uri, store):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as stopped:
        with tracked_run(uri, "exp", "name", {}):
            signal.raise_signal(signal.SIGTERM)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    [run] = runs_in(store)
    assert (run.info.status, run.data.tags[tags.STOPPED_BY]) == ("KILLED", "SIGTERM")


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5999"
    assert resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_flatten_gives_dotted_keys():
    tree = {"model": {"lr": 0.1, "hidden": [50, 50]}, "seed": 0, "tracking": {"uri": None}}
    assert flatten(tree) == {
        "model.lr": "0.1",
        "model.hidden": "[50, 50]",
        "seed": "0",
        "tracking.uri": "None",
    }


def test_system_metrics_are_sampled_while_the_run_is_open(uri, store):
    with tracked_run(uri, "exp", "name", {}, system_metrics_every_s=0.2):
        time.sleep(1.5)
    [run] = runs_in(store)
    history = MlflowClient(uri).get_metric_history(
        run.info.run_id, "system/cpu_utilization_percentage"
    )
    assert run.info.status == "FINISHED"
    assert len(history) >= 2 and all(0 <= m.value <= 100 for m in history)


def test_run_logger_sends_one_record_per_epoch_and_the_rest_when_lightning_finalizes(uri, store):
    with tracked_run(uri, "exp", "name", {}) as run:
        logger = RunLogger(run, logged_through={"val/loss": 4})  # a resumed run: steps ≤ 4 held
        sent = []
        run.log_metrics = lambda metrics, step: sent.append((step, dict(metrics)))
        logger.log_metrics({"val/loss": 9.0}, step=4)  # already in the store
        logger.log_metrics({"val/loss": 2.0}, step=9)  # validation ends before the training epoch
        assert sent == []
        logger.log_metrics({"train/loss": 3.0}, step=9)
        assert sent == [(9, {"val/loss": 2.0, "train/loss": 3.0})]
        logger.log_metrics({"val/loss": 1.5}, step=19)  # a fit stopped after validation (NaN)
        logger.finalize("failed")
        logger.log_metrics({"test/loss": 1.0}, step=20)
        logger.finalize("success")
        assert sent[1:] == [(19, {"val/loss": 1.5}), (20, {"test/loss": 1.0})]
        assert logger.version == run.run_id
