"""One smoke test over every (model, data) pair: train() end to end into a temporary store,
then the checkpoint reloads under torch.load(weights_only=True)."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from mlflow.tracking import MlflowClient
from pytorch_lightning import Trainer

from conftest import QUICK
from idx_files import write_mnist
from vnnlab.data.synthetic import SyntheticRegressionDataModule
from vnnlab.models.mlp import MLPRegressor
from vnnlab.train import CONFIG_DIR, train

SMALL_SYNTHETIC = ["data.n_train=128", "data.n_val=32", "data.n_test=64", "data.batch_size=32"]
REGRESSION = {"test/mse", "test/rmse", "test/noise_floor", "train/loss", "val/loss"}
BAYES = {"train/elbo", "train/kl", "train/nll", "test/nll"}
CLASSIFICATION = {"test/acc", "test/nll", "test/ece", "train/loss", "val/loss", "val/acc"}

FIGURES = {"reliability.png", "entropy.png"}
TINY_MNIST = ["data=mnist", "data.n_val=20", "model.hidden=[16]"]

# name → (overrides, metrics that must be logged, figures that must be logged)
CASES = {
    "mlp_regressor": (["model=mlp_regressor", *SMALL_SYNTHETIC], REGRESSION, {"fit.png"}),
    "bnn_regressor": (SMALL_SYNTHETIC, REGRESSION | BAYES | {"test/coverage95"}, {"fit.png"}),
    "bnn_regressor-local_reparam-M4": (
        ["model.estimator=local_reparam", "model.mc_samples=4", *SMALL_SYNTHETIC],
        REGRESSION | BAYES,
        {"fit.png"},
    ),
    "bnn_regressor-monte_carlo_kl-2d": (
        ["model.kl=monte_carlo", "model.mc_samples=3", "data.input_dim=2", *SMALL_SYNTHETIC],
        REGRESSION | BAYES,
        set(),  # no fit figure for a 2-D input
    ),
    "mlp_classifier": (["model=mlp_classifier", *TINY_MNIST], CLASSIFICATION, FIGURES),
    "bnn_classifier": (
        ["model=bnn_classifier", "model.mc_samples=2", *TINY_MNIST], CLASSIFICATION | BAYES, FIGURES
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_every_model_trains_tests_logs_and_reloads(case, tmp_path):
    overrides, metrics, figures = CASES[case]
    write_mnist(tmp_path, n_train=100, n_test=40)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*QUICK, *overrides, f"tracking.uri={uri}"])
    if "root" in cfg.data:
        cfg.data.root = str(tmp_path)  # the small IDX files written above
    run = train(cfg)

    client = MlflowClient(uri)
    recorded = client.get_run(run.run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.info.artifact_uri.startswith(tmp_path.as_uri())  # beside the store, not in cwd
    assert metrics <= set(recorded.data.metrics), set(recorded.data.metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in recorded.data.metrics.values())
    logged = {a.path.split("/")[-1] for a in client.list_artifacts(run.run_id, "figures")}
    assert logged == figures

    path = client.download_artifacts(run.run_id, "checkpoints/final.ckpt", str(tmp_path))
    torch.load(path, weights_only=True)
    model = get_class(cfg.model._target_).load_from_checkpoint(path, weights_only=True)
    assert model.hparams["lr"] == cfg.model.lr


@pytest.mark.parametrize(
    ("schedule", "expected_final_lr"),
    [("none", 0.01), ("exponential", 0.01 * 0.5**3), ("cosine", 0.0)],
)
def test_learning_rate_schedules(schedule, expected_final_lr, tmp_path):
    """Three epochs of 4 steps: the lr the optimiser holds when the fit ends."""
    model = MLPRegressor(1, 1, lr=0.01, lr_schedule=schedule, lr_gamma=0.5)
    data = SyntheticRegressionDataModule(n_train=40, n_val=10, n_test=10, batch_size=10)
    trainer = Trainer(max_epochs=3, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=data)
    final_lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert final_lr == pytest.approx(expected_final_lr, abs=1e-12)
