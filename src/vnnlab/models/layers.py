"""Network building blocks shared by every model: the plain MLP and its Bayesian twin."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vnnlab.models.objectives import (
    gaussian_kl,
    gaussian_log_prob,
    optimal_noise_variance,
    sampled_log_ratio,
    scale_mixture_log_prob,
)

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity}
Activation = Literal["relu", "tanh", "identity"]
Estimator = Literal["weights", "local_reparam", "flipout"]
NoiseMode = Literal["fixed", "learned", "optimal"]


def make_mlp(
    in_features: int, hidden: Sequence[int], out_features: int, activation: str
) -> nn.Sequential:
    """in → hidden[0] → … → out, with `activation` between layers and none after the last."""
    sizes = [in_features, *hidden, out_features]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class GaussianPrior:
    """π(θ) = N(0, s²) for every weight and bias; its KL from q has a closed form."""

    std: float = 1.0

    def log_prob(self, theta: Tensor) -> Tensor:
        return gaussian_log_prob(theta, torch.zeros_like(theta), self.std**2)

    def kl(self, mean: Tensor, std: Tensor) -> Tensor:
        return gaussian_kl(mean, std, self.std)


@dataclass(frozen=True)
class ScaleMixturePrior:
    """π(θ) = π N(0, σ₁²) + (1 − π) N(0, σ₂²) per weight (Blundell et al. 2015): a wide
    component and a narrow one near 0. Its KL from q has no closed form: Monte Carlo only."""

    pi: float = 0.5
    sigma1: float = 1.0
    sigma2: float = 0.0025

    def log_prob(self, theta: Tensor) -> Tensor:
        return scale_mixture_log_prob(theta, self.pi, self.sigma1, self.sigma2)

    def kl(self, mean: Tensor, std: Tensor) -> Tensor:
        raise ValueError("the scale-mixture prior has no closed-form KL: use kl='monte_carlo'")


Prior = GaussianPrior | ScaleMixturePrior


class BayesLinear(nn.Module):
    """Linear layer with a mean-field Gaussian posterior q(W, b) = N(μ, diag softplus(ρ)²).

    `forward` draws M samples in one batched pass. Three estimators of the same expectation:
    - "weights": θ⁽ᵐ⁾ = μ + softplus(ρ) ⊙ ξ⁽ᵐ⁾ (Blundell et al. 2015), one weight set per sample;
    - "local_reparam": sample the pre-activations a ~ N(x μᵀ, x² std²ᵀ) directly (Kingma,
      Salimans & Welling 2015): no weight sampling, shared matmuls, lower gradient variance;
    - "flipout": one perturbation Δ = std ⊙ ξ per sample, made a different one for each
      example i by random signs, a_i = x_i μᵀ + ((x_i ⊙ r_i) Δᵀ) ⊙ s_i with r_i, s_i uniform on
      {−1, 1} (Wen et al. 2018): each example's weights are still distributed as q, so the
      gradient is unbiased, while the examples of a batch decorrelate.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        prior: Prior = GaussianPrior(),
        rho_init: float = -6.0,
        estimator: str = "weights",
    ):
        super().__init__()
        self.prior = prior
        self.estimator = estimator
        # μ starts like nn.Linear's weights; std = softplus(ρ_init) starts tiny (≈2.5e-3 at −6).
        bound = 1 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(
            torch.empty(out_features, in_features).uniform_(-bound, bound)
        )
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.weight_rho = nn.Parameter(torch.full((out_features, in_features), float(rho_init)))
        self.bias_rho = nn.Parameter(torch.full((out_features,), float(rho_init)))
        self._last_sample: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor, n_samples: int) -> Tensor:
        """x: (B, in) shared by all samples, or (M, B, in) → (M, B, out)."""
        if self.estimator == "local_reparam":
            return self._local_reparam(x, n_samples)
        if self.estimator == "flipout":
            return self._flipout(x, n_samples)
        return self._sampled_weights(x, n_samples)

    def _sampled_weights(self, x: Tensor, n_samples: int) -> Tensor:
        w_std, b_std = F.softplus(self.weight_rho), F.softplus(self.bias_rho)
        weight = self.weight_mu + w_std * torch.randn(
            n_samples, *self.weight_mu.shape, device=x.device
        )
        bias = self.bias_mu + b_std * torch.randn(n_samples, *self.bias_mu.shape, device=x.device)
        self._last_sample = (weight, bias)
        # (M|·, B, in) @ (M, in, out) + (M, 1, out) → (M, B, out)
        return torch.matmul(x, weight.transpose(1, 2)) + bias.unsqueeze(1)

    def _local_reparam(self, x: Tensor, n_samples: int) -> Tensor:
        w_var, b_var = F.softplus(self.weight_rho) ** 2, F.softplus(self.bias_rho) ** 2
        mean = F.linear(x, self.weight_mu, self.bias_mu)  # (B, out) or (M, B, out)
        var = F.linear(x**2, w_var, b_var)
        if x.dim() == 2:  # a shared input: the two matmuls above served all M samples
            mean, var = mean.expand(n_samples, *mean.shape), var.expand(n_samples, *var.shape)
        return mean + var.sqrt() * torch.randn_like(mean)

    def _flipout(self, x: Tensor, n_samples: int) -> Tensor:
        mean = F.linear(x, self.weight_mu, self.bias_mu)  # (B, out) or (M, B, out)
        inputs = x.expand(n_samples, *x.shape) if x.dim() == 2 else x  # (M, B, in)
        delta = F.softplus(self.weight_rho) * torch.randn(
            len(inputs), *self.weight_mu.shape, device=x.device
        )  # (M, out, in)
        signs_in, signs_out = (
            _random_signs(inputs.shape, x),
            _random_signs((*inputs.shape[:-1], self.weight_mu.shape[0]), x),
        )
        perturbation = torch.matmul(inputs * signs_in, delta.transpose(1, 2)) * signs_out
        bias_noise = F.softplus(self.bias_rho) * torch.randn(
            len(inputs), 1, self.bias_mu.shape[0], device=x.device
        )  # (M, 1, out): the bias's draw, shared by the batch
        return mean + perturbation + bias_noise

    def kl_closed_form(self) -> Tensor:
        """KL(q ‖ π) of this layer's weights and bias (a Gaussian prior)."""
        return self.prior.kl(self.weight_mu, F.softplus(self.weight_rho)) + self.prior.kl(
            self.bias_mu, F.softplus(self.bias_rho)
        )

    def kl_monte_carlo(self) -> Tensor:
        """(M,) log q(θ⁽ᵐ⁾) − log π(θ⁽ᵐ⁾) of the weights drawn by the last forward pass."""
        if self._last_sample is None:
            raise RuntimeError("kl_monte_carlo needs a forward pass with estimator='weights' first")
        weight, bias = self._last_sample
        w_std, b_std = F.softplus(self.weight_rho), F.softplus(self.bias_rho)
        return sampled_log_ratio(
            weight, self.weight_mu, w_std, self.prior.log_prob(weight)
        ) + sampled_log_ratio(bias, self.bias_mu, b_std, self.prior.log_prob(bias))

    def posterior_std(self) -> Tensor:
        """softplus(ρ) of every weight and bias, flattened: (out·in + out,)."""
        return F.softplus(torch.cat([self.weight_rho.flatten(), self.bias_rho]))

    def signal_to_noise(self) -> Tensor:
        """|μ| / σ of every weight and bias, flattened (Blundell et al. 2015, § 5.1: the
        weights a pruning by signal-to-noise would remove first have the lowest)."""
        mean = torch.cat([self.weight_mu.flatten(), self.bias_mu])
        return mean.abs() / self.posterior_std()


def _random_signs(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Independent ±1 with probability ½ each, in `like`'s dtype and device."""
    return torch.randint(0, 2, shape, device=like.device).to(like.dtype) * 2 - 1


class BayesianMLP(nn.Module):
    """The MLP of `make_mlp` with every nn.Linear replaced by a BayesLinear."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str,
        prior: Prior = GaussianPrior(),
        rho_init: float = -6.0,
        estimator: str = "weights",
    ):
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(
            BayesLinear(n_in, n_out, prior, rho_init, estimator)
            for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: Tensor, n_samples: int) -> Tensor:
        """x: (B, in) → (M, B, out), one output per posterior sample."""
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h, n_samples)
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h

    def kl(self, method: str) -> Tensor:
        """KL(q ‖ π) over all layers: exact ("closed_form"), or the Monte Carlo mean over the
        M weight samples of the last forward pass ("monte_carlo")."""
        if method == "closed_form":
            return sum(layer.kl_closed_form() for layer in self.layers)
        return sum(layer.kl_monte_carlo() for layer in self.layers).mean()


class NoiseVariance(nn.Module):
    """The σ² of a Gaussian likelihood N(y; f, σ² I), in one of three modes:

    - "fixed": the value given, never changed;
    - "learned": σ² = exp(s) with s a parameter of the objective, trained by gradient with the
      rest (positive by construction), starting from the value given;
    - "optimal": at every training step, the closed-form optimum given that step's residuals
      (objectives.optimal_noise_variance; Rybkin et al. 2021), held fixed in the gradient; the mean
      of those optima over the last training epoch (the optimum over the epoch's residuals)
      serves evaluation and prediction.

    Checkpoints: "fixed" keeps nothing (the value is a hyper-parameter), the others keep s.
    """

    def __init__(self, sigma2: float, mode: str = "fixed"):
        super().__init__()
        self.mode = mode
        log_sigma2 = torch.tensor(math.log(sigma2))
        if mode == "learned":
            self.log_sigma2 = nn.Parameter(log_sigma2)
        else:
            self.register_buffer("log_sigma2", log_sigma2, persistent=mode == "optimal")

    def forward(self) -> Tensor:
        """σ² for evaluation and prediction (a 0-d tensor)."""
        return self.log_sigma2.exp()

    def for_step(self, y: Tensor, f: Tensor) -> Tensor:
        """σ² for a training step with targets y (B, q) and predictions f (..., B, q)."""
        if self.mode == "optimal":
            return optimal_noise_variance(y, f.detach())
        return self()

    def end_epoch(self, sigma2: Tensor) -> None:
        """In mode "optimal", keep the epoch's mean of the per-step optima for evaluation."""
        if self.mode == "optimal":
            self.log_sigma2.copy_(sigma2.detach().log())


def noise_mode(learn_sigma2: bool | str) -> str:
    """The `learn_sigma2` knob (false | true | optimal) as a NoiseVariance mode."""
    return {False: "fixed", True: "learned"}.get(learn_sigma2, "optimal")
