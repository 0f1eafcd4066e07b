"""The VAE's two objectives (the ELBO, the importance-weighted bound of Burda et al. 2016), its
KL weight and warm-up, and its test log-likelihood, against independent computations
(torch.distributions) and a VAE whose q is the exact posterior, where every bound is log p(x)."""

import math

import pytest
import torch
from pytorch_lightning import Callback, Trainer
from torch.distributions import Bernoulli, MultivariateNormal, Normal

from helpers import composed
from vnnlab.data.manifold import SyntheticManifoldDataModule
from vnnlab.errors import BadInputError
from vnnlab.inference import bbb
from vnnlab.models import objectives, vae
from vnnlab.models.vae import VAE
from vnnlab.validate import validate

N_IN, LATENT, BATCH = 6, 2, 7


def tiny_vae(**overrides) -> VAE:
    torch.manual_seed(0)
    settings = {"latent_dim": LATENT, "hidden": [5], "sigma2": 0.3} | overrides
    return VAE(N_IN, **settings)


def log_weights_by_hand(model: VAE, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """log p(x | z), log p(z), log q(z | x) for draws z (k, B, m), by torch.distributions."""
    with torch.no_grad():
        features = model.trunk(x)
        mean, logvar = model.mean_head(features), model.logvar_head(features)
        decoded = model.decoder(z)
        if model.likelihood == "gaussian":
            log_lik = Normal(decoded, model.hparams["sigma2"] ** 0.5).log_prob(x).sum(-1)
        else:  # grey x in [0, 1]: the binary cross-entropy, as a Bernoulli "density"
            log_lik = Bernoulli(logits=decoded, validate_args=False).log_prob(x).sum(-1)
        log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_q = Normal(mean, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    return {"log_lik": log_lik, "log_prior": log_prior, "log_q": log_q}


def same_draws(model: VAE, x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """The z the model draws after torch.manual_seed(seed): mean + sd ⊙ randn(k, B, m)."""
    with torch.no_grad():
        mean, logvar = model.posterior(x)
    torch.manual_seed(seed)
    return mean + (0.5 * logvar).exp() * torch.randn(k, *mean.shape)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_iwae_terms_against_torch_distributions(likelihood):
    k = 5
    model = tiny_vae(likelihood=likelihood, mc_samples=k, objective="iwae")
    x = torch.rand(BATCH, N_IN)
    z = same_draws(model, x, k, seed=1)
    torch.manual_seed(1)
    with torch.no_grad():
        terms = model.elbo_terms(x, model.posterior(x))
    parts = log_weights_by_hand(model, x, z)
    log_w = parts["log_lik"] + parts["log_prior"] - parts["log_q"]  # (k, B)
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)
    torch.testing.assert_close(terms["iwae_bound"], bound, atol=1e-5, rtol=0)
    torch.testing.assert_close(terms["elbo"], log_w.mean(dim=0), atol=1e-5, rtol=0)
    torch.testing.assert_close(terms["recon"], -parts["log_lik"].mean(0), atol=1e-5, rtol=0)
    kl_estimate = (parts["log_q"] - parts["log_prior"]).mean(0)
    torch.testing.assert_close(terms["kl"], kl_estimate, atol=1e-5, rtol=0)
    assert torch.equal(terms["loss"], -terms["iwae_bound"])
    assert (terms["iwae_bound"] >= terms["elbo"] - 1e-6).all()  # Jensen, on the same draws
    assert (terms["iwae_bound"] > terms["elbo"]).any()


def test_with_one_draw_both_bounds_are_the_single_sample_bound():
    model = tiny_vae(mc_samples=1, objective="iwae")
    x = torch.rand(BATCH, N_IN)
    with torch.no_grad():
        terms = model.elbo_terms(x, model.posterior(x))
    torch.testing.assert_close(terms["iwae_bound"], terms["elbo"], atol=1e-6, rtol=0)


def test_elbo_objective_logs_no_iwae_bound_and_weighs_the_kl_in_the_loss_only():
    model = tiny_vae(mc_samples=3, kl_weight=0.25)
    x = torch.rand(BATCH, N_IN)
    torch.manual_seed(2)
    with torch.no_grad():
        terms = model.elbo_terms(x, model.posterior(x))  # val and test: β, the warm-up's end
        torch.manual_seed(2)
        warm = model.elbo_terms(x, model.posterior(x), kl_weight=0.1)  # a training step's β_e
    assert "iwae_bound" not in terms
    torch.testing.assert_close(terms["elbo"], -(terms["recon"] + terms["kl"]))
    torch.testing.assert_close(terms["loss"], terms["recon"] + 0.25 * terms["kl"])
    torch.testing.assert_close(warm["loss"], warm["recon"] + 0.1 * warm["kl"])
    assert torch.equal(warm["elbo"], terms["elbo"])  # the same draws: the bound ignores β


# --- a VAE whose q is the exact posterior: every bound is log p(x) -----------------------------

SIGMA2 = 0.2
SCALES = torch.tensor([1.5, 0.7], dtype=torch.float64)  # the lengths of W's orthogonal columns


def exact_posterior_vae(objective: str, mc_samples: int) -> tuple[VAE, MultivariateNormal]:
    """A linear-Gaussian VAE (identity activations, one hidden layer of n units) set by hand:
    decoder x | z ~ N(Wz + μ, σ² I) with WᵀW diagonal, encoder the exact posterior
    N(M⁻¹Wᵀ(x − μ), σ² M⁻¹), M = WᵀW + σ² I (diagonal). Returns it (float64) and the
    marginal x ~ N(μ, WWᵀ + σ² I) to compare with."""
    torch.manual_seed(3)
    basis, _ = torch.linalg.qr(torch.randn(N_IN, LATENT, dtype=torch.float64))
    weight = basis * SCALES  # (n, m), orthogonal columns
    offset = torch.randn(N_IN, dtype=torch.float64)
    model = VAE(N_IN, latent_dim=LATENT, hidden=[N_IN], activation="identity", sigma2=SIGMA2,
                mc_samples=mc_samples, objective=objective).double()  # fmt: skip
    sigma2 = model.noise().item()  # SIGMA2 as the model holds it (log σ² stored in float32)
    precision = SCALES**2 + sigma2  # the diagonal of M
    trunk, decoder_in, decoder_out = model.trunk[0][0], model.decoder[0], model.decoder[2]
    eye = torch.eye(N_IN, dtype=torch.float64)
    with torch.no_grad():
        trunk.weight.copy_(eye), trunk.bias.zero_()
        encoder = weight.T / precision[:, None]  # M⁻¹Wᵀ
        model.mean_head.weight.copy_(encoder), model.mean_head.bias.copy_(-encoder @ offset)
        model.logvar_head.weight.zero_(), model.logvar_head.bias.copy_((sigma2 / precision).log())
        decoder_in.weight.copy_(weight), decoder_in.bias.zero_()
        decoder_out.weight.copy_(eye), decoder_out.bias.copy_(offset)
    marginal = MultivariateNormal(offset, weight @ weight.T + sigma2 * eye)
    return model, marginal


def test_exact_posterior_makes_every_importance_weighted_bound_log_p_x(monkeypatch):
    model, marginal = exact_posterior_vae("iwae", mc_samples=3)
    x = marginal.sample((BATCH,))
    log_p = marginal.log_prob(x)
    monkeypatch.setattr(vae, "IS_CHUNK_ROWS", 2 * BATCH)  # the test log-likelihood in chunks
    with torch.no_grad():
        terms = model.elbo_terms(x, model.posterior(x))
        log_likelihood = model.log_likelihood(x, 25)
    for value in (terms["elbo"], terms["iwae_bound"], log_likelihood):
        torch.testing.assert_close(value, log_p, atol=1e-9, rtol=0)


def test_exact_posterior_makes_the_elbo_log_p_x_in_expectation():
    # objective=elbo: the KL in closed form, E_q[log p(x | z)] from k draws; each draw's value
    # varies, so the mean over k draws lands within a few standard errors of log p(x)
    k = 4000
    model, marginal = exact_posterior_vae("elbo", mc_samples=k)
    x = marginal.sample((BATCH,))
    with torch.no_grad():
        elbo = model.elbo_terms(x, model.posterior(x))["elbo"]
        mean, logvar = model.posterior(x)
        z = Normal(mean, (0.5 * logvar).exp()).sample((1000,))
        spread = Normal(model.decoder(z), SIGMA2**0.5).log_prob(x).sum(-1).std(dim=0)
    assert ((elbo - marginal.log_prob(x)).abs() <= 5 * spread / math.sqrt(k)).all()


# --- the test log-likelihood in chunks ---------------------------------------------------------


class NoisePool:
    """sample_latent drawing its ζ from a fixed pool, in order: chunked and unchunked
    evaluations then see the very same draws."""

    def __init__(self, n_samples: int, shape: tuple[int, ...]):
        self.noise, self.used = torch.randn(n_samples, *shape), 0

    def __call__(self, mean, logvar, n_samples):
        noise = self.noise[self.used : self.used + n_samples]
        self.used += n_samples
        return mean + (0.5 * logvar).exp() * noise


@pytest.mark.parametrize("chunk_rows", [1, 3 * BATCH, 10**6])
def test_chunked_log_likelihood_equals_one_pass_over_the_same_draws(monkeypatch, chunk_rows):
    k = 50
    model = tiny_vae(likelihood="bernoulli")
    x = torch.rand(BATCH, N_IN)
    pool = NoisePool(k, (BATCH, LATENT))
    z = model.posterior(x)[0].detach() + (0.5 * model.posterior(x)[1].detach()).exp() * pool.noise
    parts = log_weights_by_hand(model, x, z)
    expected = torch.logsumexp(parts["log_lik"] + parts["log_prior"] - parts["log_q"], 0)
    monkeypatch.setattr(vae, "IS_CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(model, "sample_latent", pool)
    with torch.no_grad():
        chunked = model.log_likelihood(x, k)
    assert pool.used == k
    torch.testing.assert_close(chunked, expected - math.log(k), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("is_points", "expected"), [(0, [0, 0]), (5, [5, 0]), ("all", [7, 7])])
def test_is_points_counts_the_test_examples_scored(is_points, expected):
    model = tiny_vae(is_samples=4, is_points=is_points).eval()
    model.on_test_epoch_start()
    scored = []
    with torch.no_grad():
        for _ in range(2):  # two test batches
            values = model.evaluate((torch.rand(BATCH, N_IN),), "test")
            scored.append(len(values.get("log_likelihood", [])))
    assert scored == expected


def test_val_is_samples_scores_every_validation_example_with_its_own_draws():
    """val/log_likelihood: the importance-weighted estimate with K' = val_is_samples on the
    whole validation batch (not is_points); off (0) by default."""
    model = tiny_vae(is_samples=4, is_points=0, val_is_samples=6).eval()
    x = torch.rand(BATCH, N_IN)
    assert "log_likelihood" not in tiny_vae(is_samples=4).eval().evaluate((x,), "val")
    torch.manual_seed(3)
    with torch.no_grad():
        values = model.evaluate((x,), "val")
        torch.manual_seed(3)  # the same draws: the ELBO's first, then the estimate's
        posterior = model.posterior(x)
        model.elbo_terms(x, posterior)
        expected = model._log_likelihood(x, 6, posterior)
    assert values["log_likelihood"].shape == (BATCH,)
    torch.testing.assert_close(values["log_likelihood"], expected)


# --- β and its warm-up -------------------------------------------------------------------------


class EpochMetrics(Callback):
    def __init__(self):
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def test_kl_warmup_is_logged_per_epoch_and_the_elbo_stays_the_true_bound():
    torch.manual_seed(0)
    data = SyntheticManifoldDataModule(input_dim=6, intrinsic_dim=2, variances=[4.0, 1.0],
                                       n_train=200, n_val=50, n_test=50, batch_size=50)  # fmt: skip
    model = VAE(6, latent_dim=2, hidden=[8], kl_weight=0.5, kl_warmup_epochs=2, mc_samples=2)
    metrics = EpochMetrics()
    trainer = Trainer(max_epochs=4, logger=False, enable_checkpointing=False, callbacks=[metrics],
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=data)
    betas = [epoch["train/kl_weight"] for epoch in metrics.epochs]
    assert betas == [0.0, 0.25, 0.5, 0.5]  # β·min(1, e/W), bbb's schedule
    for beta, epoch in zip(betas, metrics.epochs, strict=True):
        recon, kl = epoch["train/recon"], epoch["train/kl"]
        assert epoch["train/elbo"] == pytest.approx(-(recon + kl), rel=1e-5)
        assert epoch["train/loss"] == pytest.approx(recon + beta * kl, rel=1e-5)
        assert epoch["val/loss"] == pytest.approx(epoch["val/recon"] + 0.5 * epoch["val/kl"],
                                                  rel=1e-5)  # fmt: skip


def test_one_warm_up_schedule_serves_bbb_and_the_vae():
    assert bbb.warmed_kl_weight is objectives.warmed_kl_weight


@pytest.mark.parametrize("override", ["model.kl_weight=0.5", "model.kl_warmup_epochs=10"])
def test_a_tempered_importance_weighted_bound_is_refused_in_one_line(override):
    with pytest.raises(BadInputError) as caught:
        validate(composed("model=vae", "model.objective=iwae", override))
    message = str(caught.value)
    assert message.startswith(override) and "\n" not in message
    assert "model.objective=iwae" in message
