"""The formulas, each once, with its equation beside it.

Notation (DESIGN.md, tutorial § "Variational bayesian inference"): posterior
q_η(θ) = N(μ, diag std²) with std = softplus(ρ), prior π(θ) = N(0, s² I), Gaussian
likelihood ℓ(y | θ) = N(y; f_θ(x), σ²).
"""

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(x: Tensor, mean: Tensor, var: Tensor | float) -> Tensor:
    """Elementwise log N(x; mean, var) = −½ [log 2π var + (x − mean)² / var]."""
    var = torch.as_tensor(var, dtype=mean.dtype, device=mean.device)
    return -0.5 * (LOG_2PI + torch.log(var) + (x - mean) ** 2 / var)


def gaussian_kl(mean: Tensor, std: Tensor, prior_std: float) -> Tensor:
    """Closed form KL(N(mean, std²) ‖ N(0, s²)), summed over all elements.

    KL = Σ [log(s / std) + (std² + mean²) / (2 s²) − ½]
    """
    prior_var = prior_std**2
    return (math.log(prior_std) - torch.log(std) + (std**2 + mean**2) / (2 * prior_var) - 0.5).sum()


def sampled_log_ratio(theta: Tensor, mean: Tensor, std: Tensor, prior_std: float) -> Tensor:
    """log q_η(θ⁽ᵐ⁾) − log π(θ⁽ᵐ⁾) for each sample m: the Monte Carlo KL term of F̂(η).

    theta: (M, *mean.shape) sampled parameters → (M,).
    """
    log_q = gaussian_log_prob(theta, mean, std**2)
    log_prior = gaussian_log_prob(theta, torch.zeros_like(mean), prior_std**2)
    return (log_q - log_prior).flatten(start_dim=1).sum(dim=1)


def gaussian_nll(y: Tensor, f: Tensor, sigma2: float) -> Tensor:
    """−log ℓ(y | θ) per data point for y = f_θ(x) + ε, ε ~ N(0, σ² I).

    y: (B, q), f: (..., B, q) → (..., B): ‖y − f‖² / (2σ²) + (q/2) log 2πσ².
    """
    return -gaussian_log_prob(y, f, sigma2).sum(dim=-1)


def categorical_nll(labels: Tensor, logits: Tensor) -> Tensor:
    """−log softmax(logits)[label] per data point; logits (..., B, K), labels (B,) → (..., B)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    index = labels.expand(*logits.shape[:-1]).unsqueeze(-1)
    return -log_probs.gather(-1, index).squeeze(-1)


def mixture_nll(nll_per_sample: Tensor) -> Tensor:
    """−log p(y | x, data) of the Monte Carlo predictive (1/S) Σ_s p(y | θ⁽ˢ⁾), per point.

    nll_per_sample: (S, B) values of −log p(y | θ⁽ˢ⁾) → (B,), via logsumexp for stability.
    """
    n_samples = nll_per_sample.shape[0]
    return -(torch.logsumexp(-nll_per_sample, dim=0) - math.log(n_samples))


def coverage(y: Tensor, mean: Tensor, var: Tensor, z: float = 1.959964) -> Tensor:
    """Fraction of y inside mean ± z·sd (z = 1.96 gives the 95% interval), over all elements."""
    return ((y - mean).abs() <= z * var.sqrt()).float().mean()


def negative_elbo_per_point(nll: Tensor, kl: Tensor, n_train: int) -> dict[str, Tensor]:
    """F̂(η)/N from a minibatch: the ELBO terms per training point.

    F̂(η) = KL(q ‖ π) − Σ_{i≤N} E_q log ℓ(yᵢ | θ) is a full-data objective. A minibatch B of
    size b estimates its data term by (N/b) Σ_{i∈B}; dividing everything by N keeps the loss on
    the scale of one point: loss = KL/N + (1/(M b)) Σ_m Σ_{i∈B} −log ℓ(yᵢ | θ⁽ᵐ⁾).
    nll: (M, B) values of −log ℓ(yᵢ | θ⁽ᵐ⁾); kl: the whole network's KL (scalar).
    """
    nll_mean, kl_per_point = nll.mean(), kl / n_train
    loss = nll_mean + kl_per_point
    return {"loss": loss, "elbo": -loss, "nll": nll_mean, "kl": kl_per_point}
