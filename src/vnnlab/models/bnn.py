"""Bayesian neural networks trained by Bayes by Backprop (Blundell et al. 2015).

q_η(θ) = N(μ, diag softplus(ρ)²), prior π = N(0, s² I); minimise
F̂(η) = (1/M) Σ_m [log q_η(θ⁽ᵐ⁾) − log π(θ⁽ᵐ⁾) − log ℓ(Y | θ⁽ᵐ⁾)] with θ⁽ᵐ⁾ = μ + softplus(ρ) ⊙ ξ⁽ᵐ⁾
redrawn at every step. All M samples go through the network in one batched pass.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from vnnlab.models.layers import BayesianMLP
from vnnlab.models.losses import categorical_nll, gaussian_nll, mixture_nll, negative_elbo_per_point
from vnnlab.models.tasks import ClassificationModule, RegressionModule

KL_METHODS = ("closed_form", "monte_carlo")


class BayesByBackprop:
    """The variational part shared by both BNNs; mixed in before a task module."""

    def _build_network(
        self,
        in_features: int,
        out_features: int,
        n_train: int,
        hidden: Sequence[int],
        activation: str,
        prior_std: float,
        rho_init: float,
        estimator: str,
        mc_samples: int,
        kl: str,
        predict_samples: int,
    ) -> None:
        self.net = BayesianMLP(
            in_features, hidden, out_features, activation, prior_std, rho_init, estimator
        )
        self.n_train = n_train
        self.mc_samples = mc_samples
        self.kl_method = kl
        self.predict_samples = predict_samples

    def _elbo_terms(self, nll: Tensor) -> dict[str, Tensor]:
        """nll: (M, B) −log ℓ(yᵢ | θ⁽ᵐ⁾) of the samples just drawn."""
        return negative_elbo_per_point(nll, self.net.kl(self.kl_method), self.n_train)


class BNNRegressor(BayesByBackprop, RegressionModule):
    """Gaussian likelihood y = f_θ(x) + ε, ε ~ N(0, σ² I) with σ² = `sigma2` fixed.

    Predictive (S = `predict_samples` draws): mean (1/S) Σ_s f_θ⁽ˢ⁾(x); variance = the spread of
    the f_θ⁽ˢ⁾(x) (epistemic) + σ² (noise); `test/nll` = −log (1/S) Σ_s N(y; f_θ⁽ˢ⁾(x), σ²).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_train: int,
        hidden: Sequence[int] = (50, 50),
        activation: str = "tanh",
        sigma2: float = 0.01,
        prior_std: float = 1.0,
        rho_init: float = -6.0,
        estimator: str = "weights",
        mc_samples: int = 1,
        kl: str = "closed_form",
        predict_samples: int = 100,
        lr: float = 3e-3,
        **optim,
    ):
        super().__init__(lr=lr, **optim)
        self.save_hyperparameters(logger=False)
        self.sigma2 = sigma2
        self._build_network(
            in_features, out_features, n_train, hidden, activation,
            prior_std, rho_init, estimator, mc_samples, kl, predict_samples,
        )  # fmt: skip

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Tensor]:
        x, y = batch
        f = self.net(x, self.mc_samples)  # (M, B, q)
        terms = self._elbo_terms(gaussian_nll(y, f, self.sigma2))
        terms["mse"] = ((y - f) ** 2).sum(dim=-1).mean()
        return terms

    def _predictive(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """S draws f_θ⁽ˢ⁾(x) (S, B, q), their mean and the predictive variance (B, q)."""
        f = self.net(x, self.predict_samples)
        return f, f.mean(dim=0), f.var(dim=0, unbiased=False) + self.sigma2

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _, mean, var = self._predictive(x)
        return mean, var

    def predict_batch(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, y = batch
        f, mean, var = self._predictive(x)
        nll = mixture_nll(gaussian_nll(y, f, self.sigma2))
        return {"y": y, "mean": mean, "var": var, "nll": nll}


class BNNClassifier(BayesByBackprop, ClassificationModule):
    """Categorical likelihood; the predictive is the mean of the S sampled softmaxes."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_train: int,
        hidden: Sequence[int] = (400, 400),
        activation: str = "relu",
        prior_std: float = 1.0,
        rho_init: float = -6.0,
        estimator: str = "weights",
        mc_samples: int = 1,
        kl: str = "closed_form",
        predict_samples: int = 20,
        **optim,
    ):
        super().__init__(**optim)
        self.save_hyperparameters(logger=False)
        self._build_network(
            in_features, out_features, n_train, hidden, activation,
            prior_std, rho_init, estimator, mc_samples, kl, predict_samples,
        )  # fmt: skip

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Tensor]:
        x, labels = batch
        logits = self.net(x, self.mc_samples)  # (M, B, K)
        terms = self._elbo_terms(categorical_nll(labels, logits))
        terms["acc"] = (logits.softmax(dim=-1).mean(dim=0).argmax(dim=-1) == labels).float().mean()
        return terms

    def predict_proba(self, x: Tensor) -> Tensor:
        return torch.softmax(self.net(x, self.predict_samples), dim=-1).mean(dim=0)
