"""The linear VAE is probabilistic PCA (Tipping & Bishop 1999): its closed-form terms against
torch.distributions, its optimum against pPCA's maximum likelihood (closed form, and
scikit-learn's PCA as an independent oracle), and brief fits against both."""

import math

import pytest
import torch
from mlflow.tracking import MlflowClient
from pytorch_lightning import Trainer
from sklearn.decomposition import PCA as SklearnPCA
from torch.distributions import MultivariateNormal, Normal

from helpers import QUICK, composed
from vnnlab.data.manifold import SyntheticManifoldDataModule
from vnnlab.models.objectives import (
    linear_gaussian_expected_nll,
    linear_gaussian_log_marginal,
    ppca_max_log_likelihood,
    ppca_noise_variance,
)
from vnnlab.models.subspaces import principal_subspace
from vnnlab.models.vae import LinearVAE
from vnnlab.run.load import load_model
from vnnlab.run.training import train

N_IN, SIGNAL, NOISE, N_TRAIN = 10, [9.0, 4.0, 1.0], 0.25, 2000
# Brief fits: full-batch Adam steps of the model's own loss, 0.1 decayed to 0 by a cosine
# (measured: σ² within 0.05% of σ²_ML, the ELBO within 0.05% of pPCA's maximum at 300 steps).
STEPS, LR = 400, 0.1


@pytest.fixture(scope="module")
def data() -> SyntheticManifoldDataModule:
    """x = U diag(√λ) z + ε in ℝ¹⁰: the population covariance has eigenvalues 9.25, 4.25, 1.25
    and 0.25 (seven times), the pPCA model itself."""
    return SyntheticManifoldDataModule(input_dim=N_IN, intrinsic_dim=len(SIGNAL),
                                       variances=SIGNAL, noise_var=NOISE, n_train=N_TRAIN,
                                       n_val=100, n_test=200, batch_size=100)  # fmt: skip


@pytest.fixture(scope="module")
def x_train(data) -> torch.Tensor:
    return data.split("train")[0].double()


def eigenvalues(x: torch.Tensor) -> torch.Tensor:
    """λ₁ ≥ … ≥ λ_n of the sample covariance with divisor N, computed here directly."""
    centred = x - x.mean(dim=0)
    return torch.linalg.eigvalsh(centred.T @ centred / len(x)).flip(0)


def sklearn_ppca(x: torch.Tensor, latent_dim: int) -> SklearnPCA:
    """scikit-learn's pPCA fitted so that its covariance estimate, which divides by N − 1,
    is vnnlab's (divisor N): the rows are shrunk towards their mean by √((N − 1)/N)."""
    n = len(x)
    mean = x.mean(dim=0)
    shrunk = mean + (x - mean) * math.sqrt((n - 1) / n)
    return SklearnPCA(n_components=latent_dim, svd_solver="full").fit(shrunk.numpy())


# --- the formulas ------------------------------------------------------------------------------


def test_expected_nll_of_a_linear_decoder_matches_monte_carlo_and_its_moments():
    torch.manual_seed(0)
    x, mean = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    var = torch.rand(4, 3, dtype=torch.float64) + 0.1
    weight, bias = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    exact = linear_gaussian_expected_nll(x, mean, var, weight, bias, 0.7)
    # by the decoder output's moments: y = Wz + μ ~ N(W mean + μ, W diag(var) Wᵀ)
    moments = ((x - mean @ weight.T - bias) ** 2).sum(-1)
    moments += torch.stack([torch.trace(weight @ torch.diag(v) @ weight.T) for v in var])
    torch.testing.assert_close(exact, moments / 1.4 + 2.5 * math.log(2 * math.pi * 0.7))
    # by Monte Carlo with torch.distributions, within five standard errors
    z = Normal(mean, var.sqrt()).sample((200_000,))
    draws = -Normal(z @ weight.T + bias, math.sqrt(0.7)).log_prob(x).sum(-1)  # (S, B)
    error = draws.std(dim=0) / math.sqrt(len(draws))
    assert ((draws.mean(dim=0) - exact).abs() < 5 * error).all()


def test_log_marginal_is_the_multivariate_normal_of_ppca():
    torch.manual_seed(1)
    weight, bias = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    x = torch.randn(9, 6, dtype=torch.float64)
    covariance = weight @ weight.T + 0.3 * torch.eye(6, dtype=torch.float64)
    expected = MultivariateNormal(bias, covariance).log_prob(x)
    torch.testing.assert_close(linear_gaussian_log_marginal(x, weight, bias, 0.3), expected)


@pytest.mark.parametrize("latent_dim", [1, 3, 5])
def test_ppca_closed_form_agrees_with_scikit_learn(x_train, latent_dim):
    lam, n = eigenvalues(x_train), len(x_train)
    sigma2 = ppca_noise_variance(lam, latent_dim)
    plain = SklearnPCA(n_components=latent_dim, svd_solver="full").fit(x_train.numpy())
    assert sigma2.item() == pytest.approx(plain.noise_variance_ * (n - 1) / n, rel=1e-9)
    best = ppca_max_log_likelihood(lam, latent_dim, sigma2)
    # the form of the maximum, and scikit-learn's own log-likelihood of the data
    by_formula = -0.5 * (N_IN * math.log(2 * math.pi) + lam[:latent_dim].log().sum()
                         + (N_IN - latent_dim) * sigma2.log() + N_IN)  # fmt: skip
    assert best.item() == pytest.approx(by_formula.item(), rel=1e-12)
    sklearn_score = sklearn_ppca(x_train, latent_dim).score(x_train.numpy())
    assert best.item() == pytest.approx(sklearn_score, rel=1e-9)


@pytest.mark.parametrize("sigma2", [0.1, 2.0, 6.0])
def test_ppca_maximum_at_a_fixed_sigma2_is_reached_by_its_weights(x_train, sigma2):
    # W = U_q (K_q − σ² I)^{1/2}, K_jj = max(λ_j, σ²): evaluated as a Gaussian density
    q = 5
    mean, components, lam = principal_subspace(x_train, q)
    scales = (lam[:q] - sigma2).clamp_min(0).sqrt()
    weight = components * scales
    covariance = weight @ weight.T + sigma2 * torch.eye(N_IN, dtype=torch.float64)
    direct = MultivariateNormal(mean, covariance).log_prob(x_train).mean()
    best = ppca_max_log_likelihood(lam, q, sigma2)
    assert best.item() == pytest.approx(direct.item(), rel=1e-9)
    # one latent fewer never does better
    assert best.item() > ppca_max_log_likelihood(lam, q - 1, sigma2).item() - 1e-12


# --- the model at pPCA's closed-form optimum --------------------------------------------------


def at_ppca_optimum(x: torch.Tensor, latent_dim: int) -> LinearVAE:
    """A float64 LinearVAE set to the maximum-likelihood solution (R = I) and its exact
    posterior: W = U_q (Λ_q − σ² I)^{1/2}, μ = x̄, A = M⁻¹Wᵀ, b = −A x̄, s² = σ²/λ_j
    (M = WᵀW + σ² I = Λ_q)."""
    mean, components, lam = principal_subspace(x, latent_dim)
    sigma2 = ppca_noise_variance(lam, latent_dim)
    kept = lam[:latent_dim]
    weight = components * (kept - sigma2).sqrt()
    model = LinearVAE(x.shape[1], latent_dim=latent_dim).double()
    encoder = weight.T / kept[:, None]
    with torch.no_grad():
        model.decoder.weight.copy_(weight), model.decoder.bias.copy_(mean)
        model.encoder.weight.copy_(encoder), model.encoder.bias.copy_(-encoder @ mean)
        model.posterior_logvar.copy_((sigma2 / kept).log())
        model.noise.log_sigma2.copy_(sigma2.log())
    return model


@pytest.mark.parametrize("latent_dim", [2, 3, 6])
def test_at_the_optimum_the_elbo_is_the_ppca_log_likelihood(x_train, latent_dim):
    model = at_ppca_optimum(x_train, latent_dim)
    with torch.no_grad():
        elbo = model.elbo_terms(x_train)["elbo"]
        log_p = model.log_likelihood(x_train)
    torch.testing.assert_close(elbo, log_p, atol=1e-9, rtol=0)  # q is the exact posterior
    oracle = sklearn_ppca(x_train, latent_dim).score_samples(x_train.numpy())
    torch.testing.assert_close(log_p, torch.from_numpy(oracle), atol=1e-9, rtol=0)
    lam = eigenvalues(x_train)
    best = ppca_max_log_likelihood(lam, latent_dim, ppca_noise_variance(lam, latent_dim))
    assert elbo.mean().item() == pytest.approx(best.item(), rel=1e-9)


# --- brief fits --------------------------------------------------------------------------------


def fit(x: torch.Tensor, **knobs) -> LinearVAE:
    """The model's loss (training_terms) minimised by its own optimiser on the whole of x."""
    torch.manual_seed(0)
    model = LinearVAE(N_IN, lr=LR, **knobs)
    optimizer = model.make_optimizer(model.parameter_groups())
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, STEPS)
    for _ in range(STEPS):
        optimizer.zero_grad()
        model.training_terms((x,))["loss"].backward()
        optimizer.step()
        schedule.step()
    return model


def test_learned_sigma2_and_elbo_reach_ppca_maximum_likelihood(data, x_train):
    lam = eigenvalues(x_train)
    sigma2_ml = ppca_noise_variance(lam, len(SIGNAL)).item()
    assert sigma2_ml == pytest.approx(NOISE, rel=0.05)  # the known spectrum, from 2000 points
    model = fit(x_train.float(), latent_dim=len(SIGNAL))
    model.use_training_inputs(x_train.float())
    with torch.no_grad():
        elbo = model.elbo_terms(x_train.float())["elbo"].mean().item()
    assert model.noise().item() == pytest.approx(sigma2_ml, rel=0.02)  # the floors
    best = ppca_max_log_likelihood(lam, len(SIGNAL), sigma2_ml).item()
    assert elbo == pytest.approx(best, rel=0.005) and elbo <= best + 1e-4
    assert model.reference_metrics(data.info())["ppca_sigma2"] == pytest.approx(sigma2_ml)


@pytest.mark.parametrize("sigma2", [0.5, 2.0, 6.0])
def test_with_sigma2_fixed_a_latent_collapses_exactly_when_its_eigenvalue_is_below(
    data, x_train, sigma2
):
    latent_dim = 5
    lam = eigenvalues(x_train)
    expected_active = int((lam[:latent_dim] > sigma2).sum())
    assert expected_active == {0.5: 3, 2.0: 2, 6.0: 1}[sigma2]
    model = fit(x_train.float(), latent_dim=latent_dim, sigma2=sigma2, learn_sigma2=False)
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    [metrics] = trainer.test(model, datamodule=data, verbose=False)
    assert metrics["test/active_units"] == expected_active
    with torch.no_grad():
        means = model.encode(x_train.float())
        elbo = model.elbo_terms(x_train.float())["elbo"].mean().item()
    spread = means.var(dim=0, correction=0).sort(descending=True).values
    assert (spread[expected_active:] <= 0.01).all() and (spread[:expected_active] > 0.01).all()
    best = ppca_max_log_likelihood(lam, latent_dim, sigma2).item()
    assert elbo == pytest.approx(best, rel=0.005)


def test_linear_vae_trains_logs_its_yardsticks_and_reloads(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = composed(*QUICK, "model=linear_vae", "model.latent_dim=2", "data=manifold",
                   "data.n_train=200", "data.n_val=50", "data.n_test=100", "data.batch_size=50",
                   f"tracking.uri={uri}")  # fmt: skip
    result = train(cfg)
    metrics = MlflowClient(uri).get_run(result.run_id).data.metrics
    wanted = {f"{stage}/{term}" for stage in ("train", "val", "test")
              for term in ("loss", "elbo", "recon", "kl")}  # fmt: skip
    wanted |= {"train/sigma2", "test/log_likelihood", "test/active_units", "test/recon_mse",
               "test/ppca_sigma2", "test/ppca_log_likelihood", "test/ppca_active_units",
               "test/pca_mse"}  # fmt: skip
    assert wanted <= set(metrics), wanted - set(metrics)
    assert metrics["test/ppca_active_units"] == 2  # σ² learned: σ²_ML < λ_q, every latent kept
    assert metrics["test/log_likelihood"] >= metrics["test/elbo"]
    (x_test,) = result.datamodule.split("test")
    reloaded = load_model(result.run_id, uri)
    with torch.no_grad():
        for name, value in result.model.eval().elbo_terms(x_test).items():
            assert torch.equal(value, reloaded.elbo_terms(x_test)[name]), name
