"""The objectives, each once, with its equation beside it: log densities, KL divergences,
negative log-likelihoods and the bounds a model minimises or reports (the ELBO, the
importance-weighted bound).

Notation (DESIGN.md, tutorial § "Variational bayesian inference"): posterior
q_η(θ) = N(μ, diag std²) with std = softplus(ρ), prior π(θ) = N(0, s² I) or the scale
mixture π N(0, σ₁²) + (1 − π) N(0, σ₂²) per weight, Gaussian likelihood ℓ(y | θ) = N(y; f_θ(x), σ²).
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


def scale_mixture_log_prob(x: Tensor, pi: float, sigma1: float, sigma2: float) -> Tensor:
    """Elementwise log of the scale-mixture prior of Blundell et al. (2015, eq. 7):

    log π(x) = log [π N(x; 0, σ₁²) + (1 − π) N(x; 0, σ₂²)],
    by logsumexp over the two components (each density alone underflows far in the tails).
    """
    zero = torch.zeros_like(x)
    components = torch.stack(
        [
            math.log(pi) + gaussian_log_prob(x, zero, sigma1**2),
            math.log1p(-pi) + gaussian_log_prob(x, zero, sigma2**2),
        ]
    )
    return torch.logsumexp(components, dim=0)


def sampled_log_ratio(theta: Tensor, mean: Tensor, std: Tensor, log_prior: Tensor) -> Tensor:
    """log q_η(θ⁽ᵐ⁾) − log π(θ⁽ᵐ⁾) for each sample m: the Monte Carlo KL term of F̂(η), for any
    prior (the only KL a prior without a closed form has, e.g. the scale mixture).

    theta: (M, *mean.shape) sampled parameters, log_prior: log π(θ⁽ᵐ⁾) elementwise, the same
    shape → (M,).
    """
    log_q = gaussian_log_prob(theta, mean, std**2)
    return (log_q - log_prior).flatten(start_dim=1).sum(dim=1)


def optimal_noise_variance(y: Tensor, f: Tensor) -> Tensor:
    """The σ² that maximises Σ_i log N(yᵢ; fᵢ, σ² I) given the residuals (Rybkin et al. 2021,
    the calibrated decoder): setting the derivative of Σ_i [‖yᵢ − fᵢ‖²/(2σ²) + (q/2) log 2πσ²]
    to zero gives σ²* = (1/(N q)) Σ_i ‖yᵢ − fᵢ‖², the mean squared residual per element.

    y: (B, q), f: (..., B, q) (several draws of f average in as further residuals) → scalar.
    The ELBO's optimum in σ² given q is the same with the residuals' expectation under q.
    """
    return ((y - f) ** 2).mean()


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


def warmed_kl_weight(kl_weight: float, warmup_epochs: int, epoch: int) -> float:
    """β_e = β·min(1, e / W) for epoch e (0-based) of a warm-up over W epochs; β when W = 0.

    The tempered objective E_q[−log ℓ] + β_e KL: a network first fits the data, then pays for
    its distance to the prior (Bowman et al. 2016; Sønderby et al. 2016 for the VAE)."""
    if warmup_epochs == 0:
        return kl_weight
    return kl_weight * min(1.0, epoch / warmup_epochs)


def negative_elbo_per_point(nll: Tensor, kl: Tensor, n_train: int) -> dict[str, Tensor]:
    """F̂(η)/N from a minibatch: the ELBO's terms per training point, one value per point.

    F̂(η) = KL(q ‖ π) − Σ_{i≤N} E_q log ℓ(yᵢ | θ) is a full-data objective. A minibatch B of
    size b estimates its data term by (N/b) Σ_{i∈B}, so the data term is scaled by N/b and,
    dividing everything by N to stay on the scale of one point, the KL by 1/N (not 1/b):
    loss = (1/b) Σ_{i∈B} [(1/M) Σ_m −log ℓ(yᵢ | θ⁽ᵐ⁾) + KL/N].
    nll: (M, B) values of −log ℓ(yᵢ | θ⁽ᵐ⁾); kl: the whole network's KL (scalar).
    Returns (B,) tensors: expected_nll, kl (KL/N, the same for every point), loss, elbo;
    their means over the batch are the minibatch estimates.
    """
    expected_nll = nll.mean(dim=0)  # (B,) the Monte Carlo E_q[−log ℓ(yᵢ | θ)]
    kl_per_point = (kl / n_train).expand_as(expected_nll)
    loss = expected_nll + kl_per_point
    return {"loss": loss, "elbo": -loss, "expected_nll": expected_nll, "kl": kl_per_point}


# ---------------------------------------------------------------------------------------------
# Dimension reduction: autoencoders and the VAE.
# Notation (tutorial § "Variational (probabilistic) autoencoder"): inputs x ∈ ℝⁿ, latent z ∈ ℝᵐ,
# prior p(z) = N(0, I_m), encoder q(z | x) = N(g(x), diag h(x)²), decoder d_θ: ℝᵐ → ℝⁿ.
# ---------------------------------------------------------------------------------------------


def bernoulli_nll(x: Tensor, logits: Tensor) -> Tensor:
    """−log p(x | z) for independent Bernoulli pixels with p_j = σ(l_j), summed over features.

    x: (B, n) in [0, 1], logits: (..., B, n) → (..., B):
    −Σ_j [x_j log σ(l_j) + (1 − x_j) log(1 − σ(l_j))] = Σ_j [softplus(l_j) − x_j l_j],
    the right-hand form being exact and free of overflow for any logit.
    """
    return (torch.nn.functional.softplus(logits) - x * logits).sum(dim=-1)


def standard_normal_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²), with log σ² = logvar.

    mean, logvar: (..., B, m) → (..., B).
    """
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=-1)


def importance_weighted_log_likelihood(log_joint: Tensor, log_q: Tensor) -> Tensor:
    """The K-sample importance-weighted bound on log p(x) (Burda et al. 2016), per point.

    log_joint, log_q: (K, B) values of log p(x, z_k) and log q(z_k | x) for z_k ~ q(z | x) →
    (B,): L_K = log (1/K) Σ_k p(x, z_k) / q(z_k | x) = logsumexp_k(log p − log q) − log K.
    E[L_1] is the ELBO, E[L_K] ≤ E[L_{K+1}] ≤ log p(x), and L_K → log p(x) as K → ∞; it equals
    log p(x) for every K when q is the exact posterior.
    """
    n_samples = log_joint.shape[0]
    return torch.logsumexp(log_joint - log_q, dim=0) - math.log(n_samples)


def linear_gaussian_expected_nll(
    x: Tensor, mean: Tensor, var: Tensor, weight: Tensor, bias: Tensor, sigma2: Tensor | float
) -> Tensor:
    """E_{z ~ N(mean, diag var)}[−log N(x; W z + μ, σ² I)] in closed form, per example: the
    reconstruction term of a linear Gaussian decoder, with no Monte Carlo draw.

    With z = mean + ε, E[ε] = 0, Cov ε = diag var: E‖x − Wz − μ‖² = ‖x − W mean − μ‖² +
    Σ_j var_j ‖w_j‖², so the term is that over 2σ² plus (n/2) log 2πσ².
    x: (B, n), mean, var: (B, m) or (m,), weight W: (n, m), bias μ: (n,) → (B,).
    """
    n = x.shape[-1]
    sigma2 = torch.as_tensor(sigma2, dtype=x.dtype, device=x.device)
    residual = x - mean @ weight.T - bias  # (B, n)
    spread = (var * (weight**2).sum(dim=0)).sum(dim=-1)  # Σ_j var_j ‖w_j‖²
    squared = (residual**2).sum(dim=-1) + spread
    return squared / (2 * sigma2) + 0.5 * n * (LOG_2PI + torch.log(sigma2))


def linear_gaussian_log_marginal(
    x: Tensor, weight: Tensor, bias: Tensor, sigma2: Tensor | float
) -> Tensor:
    """log p(x) of probabilistic PCA (Tipping & Bishop 1999): z ~ N(0, I_m), x | z ~ N(Wz + μ,
    σ² I_n), so x ~ N(μ, C) with C = W Wᵀ + σ² I_n and
    log p(x) = −½ [n log 2π + log |C| + (x − μ)ᵀ C⁻¹ (x − μ)], by a Cholesky factor of C.
    x: (B, n), weight W: (n, m), bias μ: (n,) → (B,).
    """
    n = x.shape[-1]
    eye = torch.eye(n, dtype=weight.dtype, device=weight.device)
    factor = torch.linalg.cholesky(weight @ weight.T + sigma2 * eye)  # C = L Lᵀ
    whitened = torch.linalg.solve_triangular(factor, (x - bias).T, upper=False)  # L⁻¹(x − μ)
    log_det = 2 * factor.diagonal().log().sum()
    return -0.5 * (n * LOG_2PI + log_det + (whitened**2).sum(dim=0))


def ppca_noise_variance(variances: Tensor, latent_dim: int) -> Tensor:
    """Probabilistic PCA's maximum-likelihood noise variance (Tipping & Bishop 1999, eq. 8)
    from λ₁ ≥ … ≥ λ_n, the eigenvalues of the sample covariance S = (1/N) Σ_i (xᵢ − x̄)(xᵢ − x̄)ᵀ:
    σ²_ML = (1/(n − q)) Σ_{j>q} λ_j, the mean of the n − q discarded eigenvalues (q = latent_dim).
    """
    return variances[latent_dim:].mean()


def ppca_max_log_likelihood(variances: Tensor, latent_dim: int, sigma2: Tensor | float) -> Tensor:
    """The largest mean log-likelihood (1/N) Σ_i log N(xᵢ; μ, W Wᵀ + σ² I) over μ and W (n, q)
    for a given σ², from the sample covariance's eigenvalues λ₁ ≥ … ≥ λ_n (Tipping & Bishop
    1999, eq. 7 and appendix A): μ = x̄ and W = U_q (K_q − σ² I)^{1/2} R with K_jj = max(λ_j, σ²),
    so a column with λ_j ≤ σ² is zero (that latent collapses). C = W Wᵀ + σ² I has eigenvalues
    c_j = max(λ_j, σ²) for j ≤ q and σ² for j > q, and

    L/N = −½ Σ_j [log 2π + log c_j + λ_j / c_j].

    At σ² = σ²_ML (ppca_noise_variance) every λ_j ≥ σ² for j ≤ q and Σ_j λ_j / c_j = n:
    L/N = −½ [n log 2π + Σ_{j≤q} log λ_j + (n − q) log σ²_ML + n]. → a 0-d tensor.
    """
    floor = torch.full_like(variances, float(sigma2))
    kept = torch.arange(len(variances), device=variances.device) < latent_dim
    c = torch.where(kept, torch.maximum(variances, floor), floor)
    return -0.5 * (LOG_2PI + c.log() + variances / c).sum()
