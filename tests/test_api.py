"""The notebook API: overrides as a list in, run id, metrics and model out; reload by id."""

import shutil

import torch
from mlflow.tracking import MlflowClient

from helpers import QUICK
from vnnlab.api import load_model, run

SMALL = [*QUICK, "model=mlp_regressor", "data.n_train=64", "data.n_test=32"]


def test_run_returns_what_it_logged_and_load_model_gives_the_trained_model(store, monkeypatch):
    monkeypatch.chdir(store.parent)  # the default store is ./mlflow.db, as for the command line
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = run(SMALL)
    recorded = MlflowClient(f"sqlite:///{store}").get_run(result.run_id)
    assert recorded.info.status == "FINISHED"
    assert result.metrics["test/mse"] == recorded.data.metrics["test/mse"]
    assert (
        "Regressor fitted by MAP trained on SyntheticRegressionDataModule"
        in (recorded.data.tags["mlflow.note.content"])
    )
    experiment = MlflowClient(f"sqlite:///{store}").get_experiment(recorded.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    reloaded = load_model(result.run_id)
    x = torch.linspace(-3, 3, 50).unsqueeze(1)
    with torch.no_grad():
        assert torch.equal(reloaded.predict(x)[0], result.model.cpu().predict(x)[0])


def test_each_run_goes_to_the_store_of_the_directory_it_starts_in(
    tmp_path, empty_store, monkeypatch
):
    """A notebook that changes directory between runs: nothing of the first run (its store's
    address in the process environment) sends the second one to the first store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    stores = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        shutil.copyfile(empty_store, tmp_path / name / "mlflow.db")  # as a first run makes it
        monkeypatch.chdir(tmp_path / name)
        result = run(SMALL)
        stores.append(result.tracking_uri)
        client = MlflowClient(f"sqlite:///{tmp_path / name / 'mlflow.db'}")
        assert client.get_run(result.run_id).info.status == "FINISHED"
    assert stores == [f"sqlite:///{tmp_path / n / 'mlflow.db'}" for n in ("first", "second")]
