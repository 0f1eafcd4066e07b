"""What evaluation reports, each formula once: per-point values whose mean over points is the
logged metric (the predictive's NLL, squared error, accuracy, coverage, reconstruction MSE), the
KL's share of the loss, and a VAE's active units.
"""

import math

import torch
from torch import Tensor


def mixture_nll(nll_per_sample: Tensor) -> Tensor:
    """−log p(y | x, data) of the Monte Carlo predictive (1/S) Σ_s p(y | θ⁽ˢ⁾), per point.

    nll_per_sample: (S, B) values of −log p(y | θ⁽ˢ⁾) → (B,), via logsumexp for stability.
    """
    n_samples = nll_per_sample.shape[0]
    return -(torch.logsumexp(-nll_per_sample, dim=0) - math.log(n_samples))


def squared_error(y: Tensor, mean: Tensor) -> Tensor:
    """‖y − ŷ‖² per point: y, mean (..., B, q) → (..., B). Its mean over points is the MSE."""
    return ((y - mean) ** 2).sum(dim=-1)


def correct(labels: Tensor, scores: Tensor) -> Tensor:
    """1.0 where the highest score (probability or logit) is the label's: (B, K) → (B,).
    Its mean over points is the accuracy."""
    return (scores.argmax(dim=-1) == labels).to(scores.dtype)


def coverage(y: Tensor, mean: Tensor, var: Tensor, z: float = 1.959964) -> Tensor:
    """Per point, the fraction of its q targets inside mean ± z·sd (z = 1.96: the central 95%
    interval of a Gaussian predictive); (B, q) → (B,). Its mean over points is coverage95."""
    return ((y - mean).abs() <= z * var.sqrt()).float().mean(dim=-1)


def kl_share(kl: Tensor, data_term: Tensor) -> Tensor:
    """How much of the loss KL/N + E_q[−log ℓ]/N is the KL: KL / (KL + |data term|) ∈ [0, 1].

    The data term of a Gaussian likelihood can be negative (−log N(y; f, σ²) < 0 when σ² is
    small), so its magnitude is taken; for a data term ≥ 0 this is KL / loss. Near 1, the
    posterior is still paying for its distance to the prior rather than fitting the data.
    """
    return kl / (kl + data_term.abs())


def reconstruction_mse(x: Tensor, x_hat: Tensor) -> Tensor:
    """(1/n) ‖x − x̂‖² per point: x (B, n), x_hat (..., B, n) → (..., B).

    Its mean over examples is the mean squared error per input element (pixel).
    """
    return ((x - x_hat) ** 2).mean(dim=-1)


def active_units(posterior_means: Tensor, threshold: float = 0.01) -> Tensor:
    """#{j : Var_x(μ_j(x)) > threshold}, the latent dimensions the encoder uses (Burda et al.
    2016): posterior_means (N, m) → a float scalar; variance over the N points with divisor N."""
    variance = posterior_means.var(dim=0, correction=0)  # (m,)
    return (variance > threshold).sum().to(posterior_means.dtype)
