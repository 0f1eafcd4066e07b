"""The notebook API: overrides as a list in, run id, metrics and model out; reload by id."""

import torch
from mlflow.tracking import MlflowClient

from conftest import QUICK
from vnnlab.api import load_model, run


def test_run_returns_what_it_logged_and_load_model_gives_the_trained_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default store is ./mlflow.db, as for the command line
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = run([*QUICK, "model=mlp_regressor", "data.n_train=64", "data.n_test=32"])
    recorded = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(result.run_id)
    assert recorded.info.status == "FINISHED"
    assert result.metrics["test/mse"] == recorded.data.metrics["test/mse"]
    assert (
        "MLPRegressor trained on SyntheticRegressionDataModule"
        in (recorded.data.tags["mlflow.note.content"])
    )
    experiment = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment(
        recorded.info.experiment_id
    )
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    reloaded = load_model(result.run_id)
    x = torch.linspace(-3, 3, 50).unsqueeze(1)
    with torch.no_grad():
        assert torch.equal(reloaded.predict(x)[0], result.model.cpu().predict(x)[0])
