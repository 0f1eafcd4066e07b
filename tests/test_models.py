"""One smoke test over every (model, inference, data) combination: train() end to end into a
temporary store, then the checkpoint reloads under torch.load(weights_only=True) and predicts
as trained."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from mlflow.tracking import MlflowClient
from pytorch_lightning import Trainer

from idx_files import write_mnist
from vnnlab import CONFIG_DIR
from vnnlab.data.synthetic import SyntheticRegressionDataModule
from vnnlab.models.regression import Regressor
from vnnlab.run.load import load_model
from vnnlab.run.training import train

# Small and quick: two epochs, no progress bar.
QUICK = ["trainer.max_epochs=2", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false"]  # fmt: skip
SMALL_SYNTHETIC = ["data.n_train=128", "data.n_val=32", "data.n_test=64", "data.batch_size=32"]
REGRESSION = {"test/mse", "test/rmse", "test/noise_floor", "train/loss", "val/loss", "val/mse"}
PREDICTIVE = {"test/nll", "val/nll", "test/coverage95", "val/coverage95"}
ELBO = {f"{stage}/{term}" for stage in ("train", "val", "test")
        for term in ("loss", "elbo", "kl", "expected_nll")}  # fmt: skip
# whether the posterior learns, per epoch, in every BNN (two layers in these cases)
POSTERIOR = {"train/kl_share", "train/kl_weight", "train/posterior_sd_layer1",
             "train/posterior_sd_layer2"}  # fmt: skip
BNN_FIGURES = {"signal_to_noise.png"}
CLASSIFICATION = {
    "test/acc",
    "test/nll",
    "test/ece",
    "train/loss",
    "val/loss",
    "val/acc",
    "val/nll",
}

FIGURES = {"reliability.png", "entropy.png"}
TINY_MNIST = ["data=mnist", "data.n_val=20", "model.hidden=[16]"]
SMALL_MANIFOLD = ["data=manifold", "data.n_train=200", "data.n_val=50", "data.n_test=100",
                  "data.batch_size=50", "model.latent_dim=2"]  # fmt: skip
RECONSTRUCTION = {f"{stage}/{term}" for stage in ("train", "val", "test")
                  for term in ("loss", "recon_mse")}  # fmt: skip
VAE_TERMS = {f"{stage}/{term}" for stage in ("train", "val", "test")
             for term in ("loss", "elbo", "recon", "kl")}  # fmt: skip
VAE_METRICS = VAE_TERMS | {"val/recon_mse", "test/recon_mse", "test/active_units",
                           "test/log_likelihood"}  # fmt: skip
REDUCTION_FIGURES = {"reconstructions.png", "latent.png"}

# name → (overrides, metrics that must be logged, figures that must be logged)
CASES = {
    "mlp_regressor": (
        ["model=mlp_regressor", *SMALL_SYNTHETIC], REGRESSION | PREDICTIVE | {"train/sigma2"},
        {"fit.png"},
    ),
    "bnn_regressor": (
        SMALL_SYNTHETIC,
        REGRESSION | PREDICTIVE | ELBO | POSTERIOR | {"train/sigma2"},
        {"fit.png"} | BNN_FIGURES,
    ),
    "bnn_regressor-weights-M4-learned_sigma2-warmup": (
        ["inference.estimator=weights", "inference.mc_samples=4", "model.learn_sigma2=true",
         "inference.kl_warmup_epochs=2", *SMALL_SYNTHETIC],
        REGRESSION | PREDICTIVE | ELBO | POSTERIOR | {"train/sigma2"},
        {"fit.png"} | BNN_FIGURES,
    ),
    "bnn_regressor-flipout-tempered": (
        ["inference.estimator=flipout", "inference.mc_samples=2", "inference.kl_weight=0.5",
         *SMALL_SYNTHETIC],
        REGRESSION | PREDICTIVE | ELBO | POSTERIOR,
        {"fit.png"} | BNN_FIGURES,
    ),
    "bnn_regressor-scale_mixture-2d": (
        ["inference.prior=scale_mixture", "inference.kl=monte_carlo",
         "inference.estimator=weights", "inference.mc_samples=3", "data.input_dim=2",
         *SMALL_SYNTHETIC],
        REGRESSION | PREDICTIVE | ELBO | POSTERIOR,
        BNN_FIGURES,  # no fit figure for a 2-D input
    ),
    "regressor-map-heteroscedastic": (
        ["inference=map", "model.noise=heteroscedastic", *SMALL_SYNTHETIC],
        REGRESSION | PREDICTIVE, {"fit.png"},
    ),
    "regressor-mc_dropout": (
        ["inference=mc_dropout", "optimizer.weight_decay=1e-4", *SMALL_SYNTHETIC],
        REGRESSION | PREDICTIVE | {"train/sigma2"}, {"fit.png"},
    ),
    "regressor-ensemble": (
        ["inference=ensemble", "inference.members=3", *SMALL_SYNTHETIC],
        REGRESSION | PREDICTIVE, {"fit.png"},
    ),
    "regressor-laplace-standardized": (
        ["inference=laplace", "model.standardize_target=true", *SMALL_SYNTHETIC],
        REGRESSION | PREDICTIVE | {"train/sigma2"}, {"fit.png"},
    ),
    "regressor-ivon": (
        ["inference=ivon", *SMALL_SYNTHETIC], REGRESSION | PREDICTIVE | {"train/sigma2"},
        {"fit.png"},
    ),
    "mlp_classifier": (["model=mlp_classifier", *TINY_MNIST], CLASSIFICATION, FIGURES),
    "bnn_classifier": (
        ["model=bnn_classifier", "inference.mc_samples=2", *TINY_MNIST],
        CLASSIFICATION | ELBO | POSTERIOR,
        FIGURES | BNN_FIGURES,
    ),
    "classifier-mc_dropout": (
        ["model=classifier", "inference=mc_dropout", *TINY_MNIST], CLASSIFICATION, FIGURES
    ),
    "classifier-ensemble": (
        ["model=classifier", "inference=ensemble", "inference.members=2", *TINY_MNIST],
        CLASSIFICATION, FIGURES,
    ),
    "classifier-laplace-all-diag": (
        ["model=classifier", "inference=laplace", "inference.subset_of_weights=all",
         "inference.hessian_structure=diag", *TINY_MNIST],
        CLASSIFICATION, FIGURES,
    ),
    "classifier-ivon": (["model=classifier", "inference=ivon", *TINY_MNIST], CLASSIFICATION,
                        FIGURES),
    "pca-manifold": (
        ["model=pca", *SMALL_MANIFOLD], RECONSTRUCTION | {"test/pca_mse"}, REDUCTION_FIGURES
    ),
    "linear_autoencoder-manifold": (
        ["model=linear_autoencoder", *SMALL_MANIFOLD],
        RECONSTRUCTION | {"test/pca_mse", "test/principal_angle", "test/orthogonality_defect"},
        REDUCTION_FIGURES,
    ),
    "autoencoder-synthetic_regression_inputs": (
        ["model=autoencoder", "model.hidden=[8]", "model.latent_dim=1", "data.input_dim=3",
         *SMALL_SYNTHETIC],
        RECONSTRUCTION,
        REDUCTION_FIGURES,
    ),
    "autoencoder-mnist": (
        ["model=autoencoder", "model.latent_dim=3", *TINY_MNIST], RECONSTRUCTION, REDUCTION_FIGURES
    ),
    "vae-manifold-gaussian-M2-optimal_sigma2": (
        ["model=vae", "model.hidden=[16]", "model.mc_samples=2", "model.is_samples=8",
         "model.learn_sigma2=optimal", *SMALL_MANIFOLD],
        VAE_METRICS | {"train/sigma2"},
        REDUCTION_FIGURES | {"traversal.png"},
    ),
    "vae-mnist-bernoulli": (
        ["model=vae", "model.likelihood=bernoulli", "model.latent_dim=2", "model.is_samples=8",
         *TINY_MNIST],
        VAE_METRICS,
        REDUCTION_FIGURES | {"traversal.png", "prior_samples.png"},
    ),
    "vae-binarized_mnist-iwae-warmup": (
        ["model=vae", "model.likelihood=bernoulli", "model.latent_dim=2", "model.is_samples=8",
         "model.objective=iwae", "model.mc_samples=3", "data.binarize=dynamic", *TINY_MNIST],
        VAE_METRICS | {"train/iwae_bound", "test/iwae_bound"},
        REDUCTION_FIGURES | {"traversal.png", "prior_samples.png"},
    ),
    "linear_vae-manifold": (
        ["model=linear_vae", *SMALL_MANIFOLD],
        VAE_TERMS | {"val/recon_mse", "test/recon_mse", "test/log_likelihood", "test/ppca_sigma2",
                     "test/ppca_log_likelihood"},
        REDUCTION_FIGURES,
    ),
}  # fmt: skip


def evaluation_on_test_split(model, datamodule) -> dict[str, torch.Tensor]:
    """Every per-example evaluation value of the model on the whole test split, seeded."""
    torch.manual_seed(123)
    model.eval()
    with torch.no_grad():
        values = model.evaluate(datamodule.split("test"), "test")
    return {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("case", list(CASES))
def test_every_model_trains_tests_logs_and_reloads(case, tmp_path):
    overrides, metrics, figures = CASES[case]
    write_mnist(tmp_path, n_train=100, n_test=40)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*QUICK, *overrides, f"tracking.uri={uri}"])
    if "root" in cfg.data:
        cfg.data.root = str(tmp_path)  # the small IDX files written above
    result = train(cfg)

    client = MlflowClient(uri)
    recorded = client.get_run(result.run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.info.artifact_uri.startswith(tmp_path.as_uri())  # beside the store, not in cwd
    assert metrics <= set(recorded.data.metrics), set(recorded.data.metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in recorded.data.metrics.values())
    for key, value in result.metrics.items():  # what train() returns is what it logged
        assert recorded.data.metrics[key] == pytest.approx(value)
    logged = {a.path.split("/")[-1] for a in client.list_artifacts(result.run_id, "figures")}
    assert logged == figures

    path = client.download_artifacts(result.run_id, "checkpoints/last.ckpt", str(tmp_path))
    state = torch.load(path, weights_only=True)
    assert state["global_step"] == result.model.trainer.global_step  # the end of the fit
    reloaded = get_class(cfg.model._target_).load_from_checkpoint(path, weights_only=True)
    trained = evaluation_on_test_split(result.model, result.datamodule)
    for again in (reloaded, load_model(result.run_id, uri)):  # Lightning's way and vnnlab's
        evaluated = evaluation_on_test_split(again, result.datamodule)
        assert trained.keys() == evaluated.keys() and trained
        for key in trained:
            assert torch.equal(trained[key], evaluated[key]), key


@pytest.mark.parametrize(
    ("schedule", "expected_final_lr"),
    [("none", 0.01), ("exponential", 0.01 * 0.5**3), ("cosine", 0.0)],
)
def test_learning_rate_schedules(schedule, expected_final_lr, tmp_path):
    """Three epochs of 4 steps: the lr the optimiser holds when the fit ends."""
    model = Regressor(1, 1, 40, lr=0.01, lr_schedule=schedule, lr_gamma=0.5)
    data = SyntheticRegressionDataModule(n_train=40, n_val=10, n_test=10, batch_size=10)
    trainer = Trainer(max_epochs=3, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=data)
    final_lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert final_lr == pytest.approx(expected_final_lr, abs=1e-12)
