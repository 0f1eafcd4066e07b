"""The dimension-reduction models against independent computations: PCA against numpy's SVD,
the linear autoencoder against PCA's subspace, the VAE's ELBO against torch.distributions."""

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from pytorch_lightning import Trainer
from torch.distributions import Bernoulli, Normal, kl_divergence

from vnnlab import CONFIG_DIR
from vnnlab.data.manifold import SyntheticManifoldDataModule
from vnnlab.errors import BadInputError
from vnnlab.models.reduction import PCA, LinearAutoencoder
from vnnlab.models.subspaces import largest_principal_angle
from vnnlab.models.vae import VAE, ActiveUnits
from vnnlab.run.training import train


def fitted(model, data, epochs: int, **trainer_args) -> Trainer:
    """Fitted as train() fits it: the closed-form parts from the training inputs first."""
    model.use_training_inputs(data.split("train")[0])
    trainer = Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, **trainer_args,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    return trainer


def subspace_data(**overrides) -> SyntheticManifoldDataModule:
    settings = {"input_dim": 10, "intrinsic_dim": 3, "variances": [9.0, 4.0, 1.0],
                "noise_var": 0.01, "n_train": 2000, "n_val": 200, "n_test": 500,
                "batch_size": 100} | overrides  # fmt: skip
    return SyntheticManifoldDataModule(**settings)


def test_pca_reconstructs_like_numpys_svd():
    data = subspace_data()
    model = PCA(10, latent_dim=2)
    trainer = fitted(model, data, epochs=5)
    assert trainer.current_epoch == 1 and trainer.global_step == 0  # one pass, no optimiser step
    (x_train,), (x_test,) = data.split("train"), data.split("test")
    centred = x_train.double().numpy() - x_train.double().numpy().mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[:2].T  # (n, 2): PCA's subspace from numpy alone
    mean = x_train.double().numpy().mean(axis=0)
    expected = mean + (x_test.double().numpy() - mean) @ basis @ basis.T
    with torch.no_grad():
        reconstructed = model.reconstruct(x_test).double().numpy()
    np.testing.assert_allclose(reconstructed, expected, atol=2e-4)


def test_pca_not_handed_its_training_inputs_refuses_to_fit():
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"use_training_inputs\(x_train\) was not called"):
        trainer.fit(PCA(10, latent_dim=2), datamodule=subspace_data())


def test_linear_autoencoder_finds_pcas_subspace_without_being_pca():
    torch.manual_seed(0)
    data = subspace_data()
    model = LinearAutoencoder(10, latent_dim=3, lr=0.03)
    fitted(model, data, epochs=15)
    pca = PCA(10, latent_dim=3)
    fitted(pca, data, epochs=1)
    w = model.decoder.weight.detach()
    assert largest_principal_angle(w, pca.components).item() < 1.0  # degrees (0.2 measured)
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    [metrics] = trainer.test(model, datamodule=data, verbose=False)
    logged = metrics["test/principal_angle"]  # against PCA of the inputs it was handed
    assert logged == pytest.approx(largest_principal_angle(w, pca.components).item(), rel=1e-5)
    assert "pca_components" not in model.state_dict()  # a yardstick, not in checkpoints
    with pytest.raises(RuntimeError, match="use_training_inputs"):
        trainer.test(LinearAutoencoder(10, latent_dim=3), datamodule=data, verbose=False)
    (x_test,) = data.split("test")
    with torch.no_grad():
        linear_error = ((x_test - model.reconstruct(x_test)) ** 2).mean()
        pca_error = ((x_test - pca.reconstruct(x_test)) ** 2).mean()
    assert linear_error.item() == pytest.approx(pca_error.item(), rel=0.05)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_vae_elbo_terms_against_torch_distributions(likelihood):
    torch.manual_seed(0)
    model = VAE(6, latent_dim=2, hidden=[5], likelihood=likelihood, sigma2=0.3, mc_samples=4)
    x = torch.rand(7, 6)
    torch.manual_seed(1)
    terms = model.elbo_terms(x, model.posterior(x))
    with torch.no_grad():
        features = model.trunk(x)
        mean, logvar = model.mean_head(features), model.logvar_head(features)
        posterior = Normal(mean, (0.5 * logvar).exp())
        torch.manual_seed(1)
        z = mean + posterior.stddev * torch.randn(4, 7, 2)  # the same draws ζ
        decoded = model.decoder(z)  # (M, B, n)
        if likelihood == "gaussian":
            log_p = Normal(decoded, 0.3**0.5).log_prob(x).sum(-1)
        else:
            log_p = Bernoulli(logits=decoded, validate_args=False).log_prob(x).sum(-1)  # x ∈ [0, 1]
        kl = kl_divergence(posterior, Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(terms["recon"], -log_p.mean(0), atol=1e-5)
    assert torch.allclose(terms["kl"], kl, atol=1e-6)
    assert torch.allclose(terms["elbo"], log_p.mean(0) - kl, atol=1e-5)
    assert torch.allclose(terms["loss"], -terms["elbo"])


def test_vae_importance_weighted_log_likelihood_is_never_below_the_elbo():
    torch.manual_seed(0)
    data = subspace_data(n_test=200)
    model = VAE(10, latent_dim=3, hidden=[16], sigma2=0.1, is_samples=50, is_points=200)
    trainer = fitted(model, data, epochs=3)
    [metrics] = trainer.test(model, datamodule=data, verbose=False)
    assert metrics["test/log_likelihood"] > metrics["test/elbo"]  # the same 200 test points
    # active units counted by hand over the whole test split (not batch by batch): latent
    # dimensions whose posterior mean has variance (divisor N) above 0.01
    (x,) = data.split("test")
    with torch.no_grad():
        variances = model.posterior(x)[0].var(dim=0, unbiased=False)
    assert metrics["test/active_units"] == (variances > 0.01).sum().item()
    # log_likelihood against torch.distributions on the same K draws, and never below their
    # plain average (the K-sample ELBO estimate): Jensen's inequality, draw by draw.
    torch.manual_seed(2)
    with torch.no_grad():
        iwae = model.log_likelihood(x, 20)
        mean, logvar = model.posterior(x)
        posterior = Normal(mean, (0.5 * logvar).exp())
        torch.manual_seed(2)
        z = mean + posterior.stddev * torch.randn(20, *mean.shape)
        log_joint = Normal(0.0, 1.0).log_prob(z).sum(-1) + Normal(
            model.decoder(z), 0.1**0.5
        ).log_prob(x).sum(-1)
        log_weights = log_joint - posterior.log_prob(z).sum(-1)  # (K, B)
    expected = torch.logsumexp(log_weights, dim=0) - torch.log(torch.tensor(20.0))
    assert torch.allclose(iwae, expected, atol=1e-4)
    assert (iwae >= log_weights.mean(dim=0) - 1e-6).all()


def test_active_units_counts_over_the_whole_split_not_per_batch():
    metric = ActiveUnits()  # threshold 0.01 on the variance of each posterior mean
    metric.update(torch.tensor([[0.0, 5.0], [0.0, 5.0]]))
    metric.update(torch.tensor([[1.0, 5.0], [1.0, 5.0]]))
    # z₁ is constant within each batch but has variance 0.25 over the split; z₂ never moves
    assert metric.compute().item() == 1.0


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=pca", "data=manifold", "model.latent_dim=20"],
         "model.latent_dim=20 is not allowed: expected an integer < 20"),
        (["model=vae", "data=manifold", "model.likelihood=bernoulli", "model.latent_dim=2"],
         "model.likelihood='bernoulli' is not allowed: expected gaussian for data whose inputs"),
        (["model=vae", "data=manifold", "model.hidden=[]"], "model.hidden=[] is not allowed"),
        (["model=bnn_regressor", "data=manifold"], "trains on data with real targets, but this "
                                                  "data set has inputs only"),
    ],
)  # fmt: skip
def test_models_refuse_data_they_cannot_use_before_any_run(tmp_path, overrides, message):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(BadInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train(composed(*overrides, f"tracking.uri={uri}"))
    assert not (tmp_path / "mlflow.db").exists()
