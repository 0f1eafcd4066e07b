"""PCA algebra: the principal subspace of a data set, the angle between two subspaces and how
far a matrix's columns are from orthonormal. Inputs x ∈ ℝⁿ, m ≤ n components; float64 inside.
"""

import torch
from torch import Tensor


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
