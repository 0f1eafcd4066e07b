"""The formulas, each once, with its equation beside it.

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


def kl_share(kl: Tensor, data_term: Tensor) -> Tensor:
    """How much of the loss KL/N + E_q[−log ℓ]/N is the KL: KL / (KL + |data term|) ∈ [0, 1].

    The data term of a Gaussian likelihood can be negative (−log N(y; f, σ²) < 0 when σ² is
    small), so its magnitude is taken; for a data term ≥ 0 this is KL / loss. Near 1, the
    posterior is still paying for its distance to the prior rather than fitting the data.
    """
    return kl / (kl + data_term.abs())


# ---------------------------------------------------------------------------------------------
# Dimension reduction: autoencoders, PCA, VAE.
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


def reconstruction_mse(x: Tensor, x_hat: Tensor) -> Tensor:
    """(1/n) ‖x − x̂‖² per point: x (B, n), x_hat (..., B, n) → (..., B).

    Its mean over examples is the mean squared error per input element (pixel).
    """
    return ((x - x_hat) ** 2).mean(dim=-1)


def _centred_covariance(x: Tensor, mean: Tensor, chunk_rows: int = 8192) -> Tensor:
    """S = (1/N) Σ_i (xᵢ − x̄)(xᵢ − x̄)ᵀ in float64: x (N, n), mean (n,) float64 → (n, n).

    Accumulated a chunk of rows at a time: a float64 copy of MNIST's 55000 × 784 training set
    alone would take 345 MB.
    """
    covariance = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, len(x), chunk_rows):
        centred = x[start : start + chunk_rows].double() - mean  # (chunk, n)
        covariance += centred.T @ centred
    return covariance / len(x)


def principal_subspace(x: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
    """Centred PCA of the rows of x (N, n): the m leading eigenvectors of the sample covariance.

    Returns (mean (n,), components W (n, m), variances (n,)): W has orthonormal columns ordered
    by decreasing variance, each signed so that its entry of largest magnitude is positive;
    variances are all n eigenvalues of S = (1/N) Σ_i (xᵢ − x̄)(xᵢ − x̄)ᵀ, decreasing (round-off
    below zero clipped). W maximises Σ_i ‖Wᵀ(xᵢ − x̄)‖² over WᵀW = I_m, so x̂ = x̄ + WWᵀ(x − x̄)
    minimises Σ_i ‖xᵢ − x̂ᵢ‖² among rank-m reconstructions, and its reconstruction MSE per
    element on this training set is sum(variances[m:]) / n. Computed in float64 (eigh of S),
    returned in x's dtype; m ≤ n.
    """
    mean = x.sum(dim=0, dtype=torch.float64) / len(x)
    eigenvalues, eigenvectors = torch.linalg.eigh(_centred_covariance(x, mean))  # ascending
    variances = eigenvalues.flip(0).clamp_min(0)
    components = eigenvectors.flip(1)[:, :m]  # (n, m)
    largest = components.abs().argmax(dim=0, keepdim=True)  # (1, m)
    components = components * components.gather(0, largest).sign()
    return mean.to(x.dtype), components.to(x.dtype), variances.to(x.dtype)


def largest_principal_angle(a: Tensor, b: Tensor) -> Tensor:
    """The largest principal angle θ_max between the column spaces of a (n, m) and b (n, m'),
    in degrees; both of full column rank.

    With orthonormal bases Q_a, Q_b (QR) and m' ≤ m (else the roles swap), the singular values
    of Q_aᵀ Q_b are cos θ_i and those of (I − Q_a Q_aᵀ) Q_b are sin θ_i, i = 1..m'. θ_max =
    atan2(max sin θ_i, min cos θ_i) keeps full precision at both ends: arccos alone loses
    angles below ~1e-6 rad, arcsin alone those near 90°. Computed in float64.
    """
    if b.shape[1] > a.shape[1]:
        a, b = b, a
    basis_a = torch.linalg.qr(a.double()).Q  # (n, m)
    basis_b = torch.linalg.qr(b.double()).Q  # (n, m')
    overlap = basis_a.T @ basis_b  # (m, m')
    residual = basis_b - basis_a @ overlap  # (n, m'): the part of span(b) outside span(a)
    largest_sine = torch.linalg.matrix_norm(residual, ord=2)
    smallest_cosine = torch.linalg.svdvals(overlap).min()
    return torch.rad2deg(torch.atan2(largest_sine, smallest_cosine))


def orthogonality_defect(w: Tensor) -> Tensor:
    """‖WᵀW − I_m‖_F for w (n, m): zero exactly when the columns are orthonormal (PCA's W)."""
    identity = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    return torch.linalg.matrix_norm(w.T @ w - identity)


def active_units(posterior_means: Tensor, threshold: float = 0.01) -> Tensor:
    """#{j : Var_x(μ_j(x)) > threshold}, the latent dimensions the encoder uses (Burda et al.
    2016): posterior_means (N, m) → a float scalar; variance over the N points with divisor N."""
    variance = posterior_means.var(dim=0, correction=0)  # (m,)
    return (variance > threshold).sum().to(posterior_means.dtype)
