"""The dimension-reduction formulas against independent computations (torch.distributions,
numpy, closed forms, by hand)."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vnnlab.models.metrics import active_units, reconstruction_mse
from vnnlab.models.objectives import (
    bernoulli_nll,
    importance_weighted_log_likelihood,
    standard_normal_kl,
)
from vnnlab.models.subspaces import (
    largest_principal_angle,
    orthogonality_defect,
    principal_subspace,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_bernoulli_nll_matches_torch_distributions_and_stays_finite():
    x = torch.randint(0, 2, (16, 9)).double()
    logits = 4 * torch.randn(3, 16, 9, dtype=torch.float64)  # (S, B, n)
    expected = -Bernoulli(logits=logits).log_prob(x).sum(dim=-1)  # (S, B)
    assert torch.allclose(bernoulli_nll(x, logits), expected)
    # Saturated logits: a confident right answer costs nothing, a confident wrong one |l|.
    extreme = torch.tensor([[1000.0, -1000.0, 1000.0]])
    target = torch.tensor([[1.0, 0.0, 0.0]])
    assert bernoulli_nll(target, extreme).item() == pytest.approx(1000.0)


def test_bernoulli_nll_takes_grey_pixels_in_the_unit_interval():
    x, logits = torch.rand(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    p = torch.sigmoid(logits)
    expected = -(x * p.log() + (1 - x) * (1 - p).log()).sum(dim=-1)
    assert torch.allclose(bernoulli_nll(x, logits), expected)


def test_standard_normal_kl_matches_torch_distributions():
    mean, logvar = torch.randn(2, 6, 4, dtype=torch.float64), torch.randn(2, 6, 4).double()
    expected = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(dim=-1)
    assert torch.allclose(standard_normal_kl(mean, logvar), expected)
    assert torch.equal(standard_normal_kl(torch.zeros(3, 2), torch.zeros(3, 2)), torch.zeros(3))


# A model with a known evidence: z ~ N(0, 1), x | z ~ N(z, s²), so p(x) = N(0, 1 + s²) and the
# exact posterior is N(x / (1 + s²), s² / (1 + s²)).
NOISE_VAR = 0.5
X = torch.tensor([-2.0, -0.3, 0.8, 2.5], dtype=torch.float64)  # (B,)
LOG_EVIDENCE = Normal(0.0, math.sqrt(1 + NOISE_VAR)).log_prob(X)  # (B,)
POSTERIOR = Normal(X / (1 + NOISE_VAR), math.sqrt(NOISE_VAR / (1 + NOISE_VAR)))
ROUGH_Q = Normal(0.6 * POSTERIOR.mean + 0.2, 1.4 * POSTERIOR.stddev)  # deliberately off


def importance_weighted_estimates(q: Normal, n_samples: int, repeats: int) -> torch.Tensor:
    """L_K for each of `repeats` independent draws of K samples: (repeats, B)."""
    z = q.sample((n_samples, repeats))  # (K, R, B)
    log_joint = Normal(0.0, 1.0).log_prob(z) + Normal(z, math.sqrt(NOISE_VAR)).log_prob(X)
    flat = (n_samples, repeats * len(X))
    log_ratio_terms = (log_joint.reshape(flat), q.log_prob(z).reshape(flat))
    return importance_weighted_log_likelihood(*log_ratio_terms).reshape(repeats, len(X))


def test_importance_weighted_bound_is_exact_with_the_true_posterior():
    for n_samples in (1, 7):
        estimate = importance_weighted_estimates(POSTERIOR, n_samples, repeats=3)
        assert torch.allclose(estimate, LOG_EVIDENCE.expand(3, -1), atol=1e-12)


def test_importance_weighted_bound_rises_from_the_elbo_to_the_evidence():
    elbo = LOG_EVIDENCE - kl_divergence(ROUGH_Q, POSTERIOR)  # exact: log p(x) − KL(q ‖ p(z|x))
    means, errors = {}, {}
    for n_samples, repeats in ((1, 20_000), (10, 4000), (1000, 200)):
        estimates = importance_weighted_estimates(ROUGH_Q, n_samples, repeats)
        means[n_samples] = estimates.mean(dim=0)
        errors[n_samples] = estimates.std(dim=0) / math.sqrt(repeats)
    assert torch.all((means[1] - elbo).abs() < 4 * errors[1])  # L_1 is the ELBO
    assert torch.all(means[10] > means[1] + 4 * (errors[1] + errors[10]))  # more samples help
    assert torch.all(means[10] < LOG_EVIDENCE + 4 * errors[10])  # and it is still a lower bound
    assert torch.all((means[1000] - LOG_EVIDENCE).abs() < 4 * errors[1000])  # it converges
    assert torch.all(errors[1000] < 0.02 * (LOG_EVIDENCE - elbo))  # to well within the gap


def test_reconstruction_mse_by_hand():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    x_hat = torch.tensor([[[1.0, 3.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 2.0]]])  # (S, B, n)
    assert torch.equal(reconstruction_mse(x, x_hat), torch.tensor([[5.0, 0.0], [0.0, 1.0]]))


def anisotropic_sample(n_points: int = 400, n: int = 8) -> torch.Tensor:
    scales = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1])[:n]
    rotation = torch.linalg.qr(torch.randn(n, n)).Q
    return (torch.randn(n_points, n) * scales) @ rotation.T + torch.randn(n)


def test_principal_subspace_matches_numpy_svd():
    x, m = anisotropic_sample(), 3
    mean, components, variances = principal_subspace(x, m)
    centred = x.double().numpy() - x.double().numpy().mean(axis=0)
    _, singular_values, right_vectors = np.linalg.svd(centred, full_matrices=False)
    assert np.allclose(mean.numpy(), x.double().numpy().mean(axis=0), atol=1e-5)
    assert np.allclose(variances.numpy(), singular_values**2 / len(x), rtol=1e-5)
    expected = right_vectors[:m].T  # (n, m), defined up to the sign of each column
    assert np.allclose(np.abs(components.numpy().T @ expected), np.eye(m), atol=1e-5)
    assert components.dtype == x.dtype and components.shape == (8, m)


def test_principal_subspace_signs_and_training_error():
    x, m = anisotropic_sample(), 2
    mean, components, variances = principal_subspace(x, m)
    largest = components.abs().argmax(dim=0)
    assert torch.all(components[largest, torch.arange(m)] > 0)
    assert torch.equal(principal_subspace(-x, m)[1], components)  # sign fixed by the rule
    x_hat = mean + (x - mean) @ components @ components.T
    training_mse = reconstruction_mse(x, x_hat).mean()
    assert training_mse.item() == pytest.approx(variances[m:].sum().item() / 8, rel=1e-4)


def planes_at_angle(degrees: float, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """span(e1, e2) and span(cos θ e1 + sin θ e3, e2): their largest principal angle is θ."""
    identity = torch.eye(n, dtype=torch.float64)
    theta = math.radians(degrees)
    tilted = math.cos(theta) * identity[:, 0] + math.sin(theta) * identity[:, 2]
    return identity[:, :2], torch.stack([tilted, identity[:, 1]], dim=1)


@pytest.mark.parametrize("degrees", [0.0, 1e-4, 0.5, 30.0, 89.9999, 90.0])
def test_largest_principal_angle_of_constructed_planes(degrees):
    a, b = planes_at_angle(degrees)
    assert largest_principal_angle(a, b).item() == pytest.approx(degrees, rel=1e-9, abs=1e-12)
    # A change of basis of either space leaves the angle alone.
    mix_a = torch.randn(2, 2, dtype=torch.float64) + 2 * torch.eye(2, dtype=torch.float64)
    mix_b = torch.randn(2, 2, dtype=torch.float64) + 2 * torch.eye(2, dtype=torch.float64)
    mixed = largest_principal_angle(a @ mix_a, b @ mix_b).item()
    assert mixed == pytest.approx(degrees, rel=1e-7, abs=1e-10)


def test_largest_principal_angle_between_spaces_of_different_dimensions():
    identity = torch.eye(5, dtype=torch.float64)
    theta = math.radians(20.0)
    line = (math.cos(theta) * (identity[:, 0] + identity[:, 1]) / math.sqrt(2)) + (
        math.sin(theta) * identity[:, 4]
    )  # 20° out of span(e1, e2, e3)
    space = identity[:, :3] @ (torch.randn(3, 3, dtype=torch.float64) + 3 * identity[:3, :3])
    for a, b in ((space, line[:, None]), (line[:, None], space)):
        assert largest_principal_angle(a, b).item() == pytest.approx(20.0, rel=1e-10)


def test_orthogonality_defect_by_hand():
    assert orthogonality_defect(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])) == 3.0
    skewed = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])  # WᵀW − I = [[0, 1], [1, 1]]
    assert orthogonality_defect(skewed).item() == pytest.approx(math.sqrt(3))
    orthonormal = torch.linalg.qr(torch.randn(7, 3, dtype=torch.float64)).Q
    assert orthogonality_defect(orthonormal).item() < 1e-14


def test_active_units_by_hand():
    signs = torch.tensor([1.0, -1.0]).repeat(50)[:, None]  # (100, 1), mean 0, variance 1
    spreads = torch.tensor([0.5, 0.005, 0.02, 0.0]).sqrt()  # variances of the four means
    means = signs * spreads + torch.tensor([3.0, -1.0, 0.0, 7.0])  # (100, 4)
    assert active_units(means).item() == 2.0
    assert active_units(means, threshold=0.001).item() == 3.0
    # Divisor N: the two points {0, 0.2} have variance 0.01, not the unbiased 0.02.
    assert active_units(torch.tensor([[0.0], [0.2]]), threshold=0.015).item() == 0.0
