"""Network building blocks shared by every model: the plain MLP and its Bayesian twin."""

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vnnlab.models.losses import gaussian_kl, sampled_log_ratio

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity}
Activation = Literal["relu", "tanh", "identity"]
Estimator = Literal["weights", "local_reparam"]


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


class BayesLinear(nn.Module):
    """Linear layer with a mean-field Gaussian posterior q(W, b) = N(μ, diag softplus(ρ)²).

    `forward` draws M samples in one batched pass. Two estimators of the same expectation:
    - "weights": θ⁽ᵐ⁾ = μ + softplus(ρ) ⊙ ξ⁽ᵐ⁾ (Blundell et al. 2015), one weight set per sample;
    - "local_reparam": sample the pre-activations a ~ N(x μᵀ, x² std²ᵀ) directly (Kingma,
      Salimans & Welling 2015): no weight sampling, shared matmuls, lower gradient variance.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        prior_std: float = 1.0,
        rho_init: float = -6.0,
        estimator: str = "weights",
    ):
        super().__init__()
        self.prior_std = prior_std
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

    def kl_closed_form(self) -> Tensor:
        """KL(q ‖ π) of this layer's weights and bias."""
        return gaussian_kl(
            self.weight_mu, F.softplus(self.weight_rho), self.prior_std
        ) + gaussian_kl(self.bias_mu, F.softplus(self.bias_rho), self.prior_std)

    def kl_monte_carlo(self) -> Tensor:
        """(M,) log q(θ⁽ᵐ⁾) − log π(θ⁽ᵐ⁾) of the weights drawn by the last forward pass."""
        if self._last_sample is None:
            raise RuntimeError("kl_monte_carlo needs a forward pass with estimator='weights' first")
        weight, bias = self._last_sample
        return sampled_log_ratio(
            weight, self.weight_mu, F.softplus(self.weight_rho), self.prior_std
        ) + sampled_log_ratio(bias, self.bias_mu, F.softplus(self.bias_rho), self.prior_std)


class BayesianMLP(nn.Module):
    """The MLP of `make_mlp` with every nn.Linear replaced by a BayesLinear."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str,
        prior_std: float = 1.0,
        rho_init: float = -6.0,
        estimator: str = "weights",
    ):
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(
            BayesLinear(n_in, n_out, prior_std, rho_init, estimator)
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
