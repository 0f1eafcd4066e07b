"""Synthetic inputs near a known low-dimensional structure in ℝⁿ, for dimension reduction.

x = V y + ε, ε ~ N(0, τ² I_n): V (n, d) has orthonormal columns drawn once from `seed`, and the
coordinates y ∈ ℝᵈ are zero-mean and uncorrelated with variances v (for "curve", sin t and cos t
of one latent t are dependent yet uncorrelated). So the generating covariance is
Σ = V diag(v) Vᵀ + τ² I_n, its eigenvalues are v + τ² and τ² (n − d times), and the best rank-m
linear reconstruction (the population PCA) leaves the n − m smallest of them as its expected
squared error.
"""

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from vnnlab.data.base import DataInfo, VNNDataModule
from vnnlab.errors import bad_value
from vnnlab.schema import NonNegative, NonNegativeInt, Positive, PositiveInt

Structure = Literal["subspace", "curve"]

# "curve": each latent t_j ~ Uniform(−a, a) traces the arc (sin t_j, cos t_j) of a circle, 270°
# of it: curved enough that a linear map needs two directions per latent, yet open (an interval,
# not a loop) so that a continuous encoder into ℝᵏ can unroll it.
ARC_HALF_ANGLE = 3 * math.pi / 4


def arc_moments(a: float) -> tuple[float, float, float]:
    """Moments of (sin t, cos t) for t ~ Uniform(−a, a): (E cos t, Var sin t, Var cos t).

    E sin t = E[sin t cos t] = 0 (odd integrands), E cos t = sin(a)/a,
    E sin² t = ½ − sin(2a)/(4a), E cos² t = ½ + sin(2a)/(4a), so
    Var sin t = ½ − sin(2a)/(4a) and Var cos t = ½ + sin(2a)/(4a) − (sin(a)/a)².
    """
    mean_cos = math.sin(a) / a
    half_sine_term = math.sin(2 * a) / (4 * a)
    return mean_cos, 0.5 - half_sine_term, 0.5 + half_sine_term - mean_cos**2


def coordinate_variances(structure: Structure, variances: Sequence[float]) -> Tensor:
    """v (d,) float64: the variances of the d coordinates y, in the order the basis V uses.

    "subspace": v = λ (d = k). "curve": radius r_j² = λ_j / Var sin t, so the sine coordinate
    has variance λ_j and the cosine one κ λ_j with κ = Var cos t / Var sin t (≈ 0.50 for the
    270° arc): v = (λ_1..λ_k, κλ_1..κλ_k) (d = 2k), exact by arc_moments, no Monte Carlo.
    """
    lam = torch.tensor(variances, dtype=torch.float64)  # (k,)
    if structure == "subspace":
        return lam
    _, var_sin, var_cos = arc_moments(ARC_HALF_ANGLE)
    return torch.cat([lam, var_cos / var_sin * lam])


def sample_coordinates(
    structure: Structure, variances: Sequence[float], n_points: int, generator: torch.Generator
) -> Tensor:
    """N draws of the zero-mean coordinates y: (N, d), with covariance diag(coordinate_variances).

    "subspace": y = diag(√λ) z, z ~ N(0, I_k). "curve": y = (r ⊙ sin t, r ⊙ (cos t − E cos t)),
    t ~ Uniform(−a, a)ᵏ, r_j = √(λ_j / Var sin t).
    """
    scale = torch.tensor(variances, dtype=torch.float64).sqrt()  # (k,)
    k = len(variances)
    if structure == "subspace":
        return torch.randn(n_points, k, generator=generator, dtype=torch.float64) * scale
    mean_cos, var_sin, _ = arc_moments(ARC_HALF_ANGLE)
    uniform = torch.rand(n_points, k, generator=generator, dtype=torch.float64)
    angle = (2 * uniform - 1) * ARC_HALF_ANGLE  # (N, k), Uniform(−a, a)
    radius = scale / math.sqrt(var_sin)  # (k,)
    return torch.cat([radius * angle.sin(), radius * (angle.cos() - mean_cos)], dim=1)  # (N, 2k)


class SyntheticManifoldDataModule(VNNDataModule):
    """Inputs only (batches are `(x,)`), drawn once from `seed`, near a known structure:

    - "subspace": x = U diag(√λ) z + ε, z ~ N(0, I_k), U (n, k) orthonormal: the probabilistic
      PCA model; Σ = U diag(λ) Uᵀ + τ² I, so PCA with m = k recovers span(U).
    - "curve": each of k latents t_j ~ Uniform(−3π/4, 3π/4) bends one arc of radius r_j in its
      own plane of ℝⁿ (k = 1: a curve; k > 1: a product of arcs, a curved k-surface), plus the
      same noise; Σ = V diag(v) Vᵀ + τ² I in closed form (see `coordinate_variances`). A linear
      map needs 2k directions where a nonlinear autoencoder needs k.

    `variances` λ (k values, decreasing) sets the spread along each latent; `noise_var` is τ².
    """

    def __init__(
        self,
        structure: Structure = "subspace",
        input_dim: PositiveInt = 20,
        intrinsic_dim: PositiveInt = 3,
        variances: Sequence[Positive] = (9.0, 4.0, 1.0),
        noise_var: NonNegative = 0.01,
        n_train: PositiveInt = 5000,
        n_val: PositiveInt = 1000,
        n_test: PositiveInt = 5000,
        batch_size: PositiveInt = 100,
        seed: NonNegativeInt = 0,
    ):
        super().__init__()
        self.structure = structure
        self.input_dim = input_dim
        self.intrinsic_dim = intrinsic_dim
        self.variances = [float(v) for v in variances]  # also accepts Hydra's ListConfig
        self.noise_var = noise_var
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.batch_size = batch_size
        self.seed = seed
        self.basis: Tensor | None = None  # V (n, d), set by setup()
        self.splits: dict[str, tuple[Tensor]] = {}

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> None:
        """intrinsic_dim < input_dim (2·intrinsic_dim ≤ input_dim for "curve", two directions per
        arc), one variance per intrinsic dimension, in decreasing order."""
        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
        values = {**defaults, **args}
        k, n, variances = values["intrinsic_dim"], values["input_dim"], list(values["variances"])
        if values["structure"] == "curve" and 2 * k > n:
            raise bad_value("data.intrinsic_dim", k, f"≤ data.input_dim/2 = {n / 2:g} for curve")
        if k >= n:
            raise bad_value("data.intrinsic_dim", k, f"< data.input_dim = {n}")
        if len(variances) != k:
            allowed = f"a list of data.intrinsic_dim = {k} numbers > 0"
            raise bad_value("data.variances", variances, allowed)
        if min(variances) <= 0 or variances != sorted(variances, reverse=True):
            raise bad_value("data.variances", variances, "numbers > 0 in decreasing order")

    # --- the generating model, known exactly --------------------------------------------------

    def population_variances(self) -> Tensor:
        """The n eigenvalues of Σ, decreasing (float64): v + τ², then τ² n − d times."""
        signal = coordinate_variances(self.structure, self.variances)  # (d,)
        no_signal = torch.zeros(self.input_dim - len(signal), dtype=torch.float64)
        return torch.cat([signal, no_signal]).sort(descending=True).values + self.noise_var

    def covariance(self) -> Tensor:
        """Σ = V diag(v) Vᵀ + τ² I_n (n, n), float64."""
        self.setup()
        v = coordinate_variances(self.structure, self.variances)  # (d,)
        noise = self.noise_var * torch.eye(self.input_dim, dtype=torch.float64)
        return self.basis @ torch.diag(v) @ self.basis.T + noise

    # --- the data -------------------------------------------------------------------------------

    def info(self) -> DataInfo:
        self.setup()
        variances = tuple(self.population_variances().tolist())  # the eigenvalues of Σ
        return DataInfo(
            in_features=self.input_dim, n_train=self.sizes["train"], input_variances=variances
        )

    def split(self, name: str) -> tuple[Tensor]:
        self.setup()
        return self.splits[name]

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        generator = torch.Generator().manual_seed(self.seed)
        d = len(coordinate_variances(self.structure, self.variances))
        gaussian = torch.randn(self.input_dim, d, generator=generator, dtype=torch.float64)
        self.basis = torch.linalg.qr(gaussian).Q  # (n, d), orthonormal columns
        for split, n_points in self.sizes.items():
            y = sample_coordinates(self.structure, self.variances, n_points, generator)  # (N, d)
            noise = torch.randn(n_points, self.input_dim, generator=generator, dtype=torch.float64)
            x = y @ self.basis.T + math.sqrt(self.noise_var) * noise  # (N, n)
            self.splits[split] = (x.to(torch.float32),)
