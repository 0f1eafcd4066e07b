"""Each formula against an independent computation (torch.distributions, float64, by hand)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, MixtureSameFamily, Normal, kl_divergence

from vnnlab.models.layers import (
    BayesianMLP,
    BayesLinear,
    GaussianPrior,
    NoiseVariance,
    ScaleMixturePrior,
)
from vnnlab.models.metrics import coverage, kl_share, mixture_nll, squared_error
from vnnlab.models.objectives import (
    categorical_nll,
    gaussian_kl,
    gaussian_log_prob,
    gaussian_nll,
    negative_elbo_per_point,
    optimal_noise_variance,
    sampled_log_ratio,
    scale_mixture_log_prob,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("prior_std", [1.0, 0.3, 2.5])
def test_closed_form_kl_matches_torch_distributions(prior_std):
    mean, std = torch.randn(7, 5, dtype=torch.float64), torch.rand(7, 5, dtype=torch.float64) + 0.05
    expected = kl_divergence(Normal(mean, std), Normal(0.0, prior_std)).sum()
    assert torch.allclose(gaussian_kl(mean, std, prior_std), expected)


def test_gaussian_log_prob_and_nll_match_torch_distributions():
    y, f = torch.randn(32, 3, dtype=torch.float64), torch.randn(4, 32, 3, dtype=torch.float64)
    sigma2 = 0.37
    expected = -Normal(f, math.sqrt(sigma2)).log_prob(y).sum(dim=-1)  # (M, B)
    assert torch.allclose(gaussian_nll(y, f, sigma2), expected)
    assert torch.allclose(gaussian_log_prob(y, f[0], sigma2), Normal(f[0], sigma2**0.5).log_prob(y))


def test_categorical_nll_matches_cross_entropy_per_sample():
    logits, labels = torch.randn(3, 16, 10), torch.randint(0, 10, (16,))
    expected = torch.stack([F.cross_entropy(row, labels, reduction="none") for row in logits])
    assert torch.allclose(categorical_nll(labels, logits), expected, atol=1e-6)
    assert torch.allclose(expected[0], -Categorical(logits=logits[0]).log_prob(labels), atol=1e-6)


def test_mixture_nll_is_minus_log_of_the_mean_density():
    nll = torch.rand(50, 8, dtype=torch.float64) * 5  # −log p(y | θ⁽ˢ⁾)
    expected = -torch.log(torch.exp(-nll).mean(dim=0))
    assert torch.allclose(mixture_nll(nll), expected)
    # far-out densities (exp(−1000) underflows to 0) still give the exact answer:
    # −log((1/3) Σ_s e^(−1000)) = 1000
    assert torch.allclose(mixture_nll(torch.full((3, 2), 1000.0)), torch.full((2,), 1000.0))


def test_sampled_log_ratio_is_log_q_minus_log_prior():
    mean, std = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64) + 0.1
    theta = mean + std * torch.randn(6, 4, 3, dtype=torch.float64)
    expected = torch.stack(
        [(Normal(mean, std).log_prob(t) - Normal(0.0, 0.5).log_prob(t)).sum() for t in theta]
    )
    log_prior = Normal(0.0, 0.5).log_prob(theta)
    assert torch.allclose(sampled_log_ratio(theta, mean, std, log_prior), expected)


def mixture(pi: float, sigma1: float, sigma2: float) -> MixtureSameFamily:
    """The scale-mixture prior as torch.distributions builds it."""
    weights = Categorical(probs=torch.tensor([pi, 1 - pi], dtype=torch.float64))
    scales = torch.tensor([sigma1, sigma2], dtype=torch.float64)
    return MixtureSameFamily(weights, Normal(torch.zeros(2, dtype=torch.float64), scales))


@pytest.mark.parametrize(("pi", "sigma1", "sigma2"), [(0.5, 1.0, math.exp(-6)), (0.25, 2.0, 0.1)])
def test_scale_mixture_log_density_matches_torch_distributions(pi, sigma1, sigma2):
    # near 0 the narrow component dominates, far out the wide one; at 40 σ₁ both densities
    # underflow to 0 in float64 and only a log-space sum stays finite
    x = torch.cat([torch.randn(200, dtype=torch.float64) * sigma2,
                   torch.randn(200, dtype=torch.float64) * sigma1,
                   torch.tensor([0.0, 40.0 * sigma1], dtype=torch.float64)])  # fmt: skip
    expected = mixture(pi, sigma1, sigma2).log_prob(x)
    assert torch.allclose(scale_mixture_log_prob(x, pi, sigma1, sigma2), expected)
    assert torch.isfinite(scale_mixture_log_prob(x, pi, sigma1, sigma2)).all()
    # one component alone (π → 1) is that Gaussian
    alone = scale_mixture_log_prob(x, 1 - 1e-12, sigma1, sigma2)
    assert torch.allclose(alone, Normal(0.0, sigma1).log_prob(x), atol=1e-9)


def test_scale_mixture_monte_carlo_kl_matches_an_independent_computation():
    """A Bayesian layer under the scale-mixture prior: each draw's log q − log π is what
    torch.distributions gives on the same weights, and the mean over many draws agrees with an
    independent estimate of KL(q ‖ π) from fresh draws within their standard errors."""
    prior = ScaleMixturePrior(pi=0.5, sigma1=1.0, sigma2=math.exp(-6))
    layer = BayesLinear(5, 3, prior=prior, rho_init=-2.0).double()
    with torch.no_grad():
        layer.weight_mu.normal_(0, 0.5)
        layer.weight_rho.uniform_(-4, 0)
    n = 20_000
    layer(torch.zeros(1, 5, dtype=torch.float64), n_samples=n)
    draws = layer.kl_monte_carlo().detach()  # (n,)
    weight, bias = (t.detach() for t in layer._last_sample)
    p = mixture(0.5, 1.0, math.exp(-6))

    def log_ratio(theta, mean, rho):
        q = Normal(mean.detach(), F.softplus(rho.detach()))
        return (q.log_prob(theta) - p.log_prob(theta)).flatten(1).sum(1)

    same = log_ratio(weight, layer.weight_mu, layer.weight_rho) + log_ratio(
        bias, layer.bias_mu, layer.bias_rho
    )
    assert torch.allclose(draws, same)
    q_w = Normal(layer.weight_mu.detach(), F.softplus(layer.weight_rho.detach()))
    q_b = Normal(layer.bias_mu.detach(), F.softplus(layer.bias_rho.detach()))
    fresh_w, fresh_b = q_w.sample((n,)), q_b.sample((n,))
    fresh = (q_w.log_prob(fresh_w) - p.log_prob(fresh_w)).flatten(1).sum(1) + (
        q_b.log_prob(fresh_b) - p.log_prob(fresh_b)
    ).sum(1)
    standard_error = math.sqrt(draws.var() / n + fresh.var() / n)
    assert abs(draws.mean() - fresh.mean()) < 4 * standard_error
    # and it is not the Gaussian prior's KL (the test tells the two priors apart)
    gaussian = GaussianPrior(1.0)
    closed = gaussian.kl(layer.weight_mu, F.softplus(layer.weight_rho)) + gaussian.kl(
        layer.bias_mu, F.softplus(layer.bias_rho)
    )
    assert abs(draws.mean() - closed.detach()) > 10 * standard_error


def test_the_scale_mixture_prior_has_no_closed_form_kl():
    layer = BayesLinear(2, 2, prior=ScaleMixturePrior())
    with pytest.raises(ValueError, match="monte_carlo"):
        layer.kl_closed_form()


def test_optimal_noise_variance_is_the_argmin_of_the_gaussian_nll():
    y, f = torch.randn(40, 3, dtype=torch.float64), torch.randn(5, 40, 3, dtype=torch.float64)
    best = optimal_noise_variance(y, f)
    assert torch.allclose(best, ((y - f) ** 2).sum() / (5 * 40 * 3))

    def total_nll(sigma2):
        return gaussian_nll(y, f, sigma2).sum()

    for factor in (0.9, 0.99, 1.01, 1.1):
        assert total_nll(best * factor) > total_nll(best)
    sigma2 = best.clone().requires_grad_()
    (grad,) = torch.autograd.grad(total_nll(sigma2), sigma2)
    assert abs(grad.item()) < 1e-8 * total_nll(best).abs().item()


def test_kl_share_by_hand():
    assert kl_share(torch.tensor(3.0), torch.tensor(1.0)).item() == pytest.approx(0.75)
    # a negative data term (a Gaussian −log density below 0) counts by its size
    assert kl_share(torch.tensor(11.76), torch.tensor(-0.88)).item() == pytest.approx(11.76 / 12.64)


def test_noise_variance_modes():
    y, f = torch.randn(8, 2), torch.randn(3, 8, 2)
    fixed = NoiseVariance(0.3)
    assert fixed().item() == pytest.approx(0.3) and not list(fixed.parameters())
    assert fixed.state_dict() == {}  # a hyper-parameter: older checkpoints load unchanged
    assert fixed.for_step(y, f).item() == pytest.approx(0.3)
    learned = NoiseVariance(0.3, "learned")
    assert [p.shape for p in learned.parameters()] == [torch.Size([])]
    learned.for_step(y, f).backward()  # a parameter of the objective
    assert learned.log_sigma2.grad is not None
    optimal = NoiseVariance(0.3, "optimal")
    assert optimal.for_step(y, f).item() == pytest.approx(((y - f) ** 2).mean().item())
    assert optimal().item() == pytest.approx(0.3)  # until an epoch ends
    optimal.end_epoch(torch.tensor(0.05))
    assert optimal().item() == pytest.approx(0.05)
    assert set(optimal.state_dict()) == {"log_sigma2"}  # kept for evaluation after a reload


def test_monte_carlo_kl_agrees_with_closed_form_within_standard_error():
    layer = BayesLinear(6, 4, prior=GaussianPrior(0.8), rho_init=-1.0).double()
    with torch.no_grad():
        layer.weight_mu.normal_()
    n = 20_000
    layer(torch.zeros(1, 6, dtype=torch.float64), n_samples=n)  # draws n weight sets
    draws = layer.kl_monte_carlo().detach()  # (n,) unbiased single-sample estimates
    standard_error = draws.std() / math.sqrt(n)
    exact = layer.kl_closed_form().detach()
    assert abs(draws.mean() - exact) < 4 * standard_error


def test_monte_carlo_elbo_agrees_with_closed_form_elbo_within_standard_error():
    """F̂ with the sampled KL and F̂ with the exact KL estimate the same ELBO."""
    net = BayesianMLP(2, [8], 1, "tanh", prior=GaussianPrior(1.0), rho_init=-2.0).double()
    x, y = torch.randn(20, 2, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    n_train, sigma2, n = 20, 0.5, 4000
    with torch.no_grad():
        f = net(x, n)  # (n, B, 1): n weight sets
        nll = gaussian_nll(y, f, sigma2)  # (n, B)
        kl_draws = sum(layer.kl_monte_carlo() for layer in net.layers)  # (n,)
        per_draw_mc = nll.mean(dim=1) + kl_draws / n_train  # each draw: an unbiased F̂/N
        per_draw_exact = nll.mean(dim=1) + net.kl("closed_form") / n_train
    difference = per_draw_mc - per_draw_exact  # same θ draws: only the KL estimator differs
    assert abs(difference.mean()) < 4 * difference.std() / math.sqrt(n)
    mc_loss = negative_elbo_per_point(nll, net.kl("monte_carlo"), n_train)["loss"].mean()
    assert torch.allclose(mc_loss, per_draw_mc.mean())


def test_negative_elbo_per_point_is_full_data_objective_over_n():
    nll, kl, n_train = torch.rand(3, 10, dtype=torch.float64), torch.tensor(42.0), 10
    terms = {k: v.mean() for k, v in negative_elbo_per_point(nll, kl, n_train).items()}
    # F̂(η) = (1/M) Σ_m [KL − Σ_i log ℓ(yᵢ | θ⁽ᵐ⁾)] with the whole data set in the batch
    full_objective = (kl + nll.sum(dim=1)).mean()
    assert torch.allclose(terms["loss"] * n_train, full_objective.double())
    assert torch.allclose(terms["elbo"], -terms["loss"])
    assert torch.allclose(terms["kl"] + terms["expected_nll"], terms["loss"])


def test_minibatch_elbo_is_an_unbiased_estimate_of_the_full_data_objective_over_n():
    """b < N: the mean of the minibatch losses over a partition of the data is F̂/N exactly,
    which holds only with the data term averaged over b and the KL divided by N (not b)."""
    n_train, batch, kl = 12, 4, torch.tensor(30.0, dtype=torch.float64)
    nll = torch.rand(2, n_train, dtype=torch.float64)  # (M, N)
    full_objective = (kl + nll.sum(dim=1)).mean()  # F̂(η) on all N points
    minibatch_losses = [
        negative_elbo_per_point(part, kl, n_train)["loss"].mean() for part in nll.split(batch, 1)
    ]
    assert torch.allclose(torch.stack(minibatch_losses).mean() * n_train, full_objective)
    kl_over_b = [(part.mean() + kl / batch) for part in nll.split(batch, 1)]  # the wrong scale
    assert not torch.allclose(torch.stack(kl_over_b).mean() * n_train, full_objective)


@pytest.mark.parametrize("estimator", ["weights", "local_reparam"])
def test_bayes_linear_output_distribution(estimator):
    """Both estimators give pre-activations with mean x·μ + b and variance x²·std² + std_b²."""
    layer = BayesLinear(3, 2, rho_init=-1.0, estimator=estimator).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    out = layer(x, n_samples=40_000).detach()  # (M, B, out)
    assert out.shape == (40_000, 5, 2)
    w_var = F.softplus(layer.weight_rho).detach() ** 2
    b_var = F.softplus(layer.bias_rho).detach() ** 2
    mean = x @ layer.weight_mu.detach().T + layer.bias_mu.detach()
    var = x**2 @ w_var.T + b_var
    assert torch.allclose(out.mean(dim=0), mean, atol=4 * (var / 40_000).sqrt().max())
    assert torch.allclose(out.var(dim=0), var, rtol=0.05)


def test_bayesian_mlp_keeps_samples_apart():
    """(M, B, out): each sample m uses one weight set for the whole batch (weights estimator)."""
    net = BayesianMLP(1, [4], 1, "identity", rho_init=0.0).double()
    x = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    out = net(x, n_samples=3).detach()
    # an identity-activation net is affine in x: within one sample the outputs are collinear
    second_differences = out[:, 2] - 2 * out[:, 1] + out[:, 0]
    assert torch.allclose(second_differences, torch.zeros_like(second_differences), atol=1e-10)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize(("mean", "var"), [(0.0, 1.0), (2.0, 0.25), (-1.0, 4.0)])
def test_coverage_counts_points_inside_the_interval_by_hand(mean, var):
    """Other means and variances than N(0, 1), where sd and var coincide."""
    y = mean + torch.randn(2000, 1) * 1.3 * var**0.5
    sd = var**0.5
    inside = [abs(v - mean) <= 1.959964 * sd for v in y[:, 0].tolist()]
    per_point = coverage(y, torch.full_like(y, mean), torch.full_like(y, var))
    assert per_point.shape == (2000,)
    assert per_point.mean().item() == pytest.approx(sum(inside) / len(inside))
    assert 0.8 < per_point.mean().item() < 0.9  # about 95% of 1/1.3 sd: P(|z| ≤ 1.51) ≈ 0.87


def test_coverage_of_several_targets_is_the_share_of_targets_inside():
    y = torch.tensor([[0.0, 5.0], [1.0, 1.0]])
    per_point = coverage(y, torch.zeros(2, 2), torch.ones(2, 2))
    assert per_point.tolist() == [0.5, 1.0]


def test_squared_error_is_the_squared_norm_per_point():
    y, mean = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert squared_error(y, mean).tolist() == [5.0, 25.0]
