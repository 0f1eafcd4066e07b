"""Bayesian neural networks trained by Bayes by Backprop (Blundell et al. 2015).

q_η(θ) = N(μ, diag softplus(ρ)²), prior π = N(0, s² I); minimise
F̂(η) = (1/M) Σ_m [log q_η(θ⁽ᵐ⁾) − log π(θ⁽ᵐ⁾) − log ℓ(Y | θ⁽ᵐ⁾)] with θ⁽ᵐ⁾ = μ + softplus(ρ) ⊙ ξ⁽ᵐ⁾
redrawn at every step. All M samples go through the network in one batched pass.

Logged terms, per training point (F̂/N, see losses.negative_elbo_per_point): `loss` = −`elbo`
= `expected_nll` + `kl`. At val and test the same terms come from the S = `predict_samples`
draws that also give the predictive metrics (`nll`, `mse`, `acc`, ... of models.tasks).
"""

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from torch import Tensor

from vnnlab.errors import bad_value
from vnnlab.models.base import DecayFactor, LRSchedule, Momentum, Optimizer
from vnnlab.models.layers import Activation, BayesianMLP, Estimator
from vnnlab.models.losses import categorical_nll, gaussian_nll, negative_elbo_per_point
from vnnlab.models.tasks import ClassificationModule, RegressionModule
from vnnlab.schema import Positive, PositiveInt

KLMethod = Literal["closed_form", "monte_carlo"]


class BayesByBackprop:
    """The variational part shared by both BNNs; mixed in before a task module."""

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> None:
        super().check_args(args)
        if args.get("kl") == "monte_carlo" and args.get("estimator") == "local_reparam":
            raise bad_value("model.kl", "monte_carlo", "closed_form with model.estimator="
                            "local_reparam (the Monte Carlo KL needs sampled weights)")  # fmt: skip

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

    def _elbo_terms(self, nll_per_draw: Tensor) -> dict[str, Tensor]:
        """nll_per_draw: (M, B) −log ℓ(yᵢ | θ⁽ᵐ⁾) of the draws just made → (B,) terms."""
        return negative_elbo_per_point(nll_per_draw, self.net.kl(self.kl_method), self.n_train)

    def _training_terms(self, nll_per_draw: Tensor) -> dict[str, Tensor]:
        return {name: value.mean() for name, value in self._elbo_terms(nll_per_draw).items()}


class BNNRegressor(BayesByBackprop, RegressionModule):
    """Gaussian likelihood y = f_θ(x) + ε, ε ~ N(0, σ² I) with σ² = `sigma2` fixed.

    Predictive (S = `predict_samples` draws): mean (1/S) Σ_s f_θ⁽ˢ⁾(x); variance = the spread of
    the f_θ⁽ˢ⁾(x) (epistemic) + σ² (noise); `nll` = −log (1/S) Σ_s N(y; f_θ⁽ˢ⁾(x), σ²).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_train: int,
        hidden: Sequence[PositiveInt] = (50, 50),
        activation: Activation = "tanh",
        sigma2: Positive = 0.01,
        prior_std: Positive = 1.0,
        rho_init: float = -6.0,
        estimator: Estimator = "weights",
        mc_samples: PositiveInt = 1,
        kl: KLMethod = "closed_form",
        predict_samples: PositiveInt = 100,
        lr: Positive = 3e-3, optimizer: Optimizer = "adam", momentum: Momentum = 0.0,
        nesterov: bool = False, lr_schedule: LRSchedule = "cosine", lr_gamma: DecayFactor = 0.95,
    ):  # fmt: skip
        super().__init__(lr, optimizer, momentum, nesterov, lr_schedule, lr_gamma)
        self.save_hyperparameters(logger=False)
        self.noise_var = sigma2
        self._build_network(
            in_features, out_features, n_train, hidden, activation,
            prior_std, rho_init, estimator, mc_samples, kl, predict_samples,
        )  # fmt: skip

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, y = batch
        f = self.net(x, self.mc_samples)  # (M, B, q)
        return self._training_terms(gaussian_nll(y, f, self.noise_var))

    def predictive_draws(self, x: Tensor) -> Tensor:
        return self.net(x, self.predict_samples)  # (S, B, q)

    def objective_terms(self, nll_per_draw: Tensor) -> dict[str, Tensor]:
        return self._elbo_terms(nll_per_draw)


class BNNClassifier(BayesByBackprop, ClassificationModule):
    """Categorical likelihood; the predictive is the mean of the S sampled softmaxes."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_train: int,
        hidden: Sequence[PositiveInt] = (400, 400),
        activation: Activation = "relu",
        prior_std: Positive = 1.0,
        rho_init: float = -6.0,
        estimator: Estimator = "weights",
        mc_samples: PositiveInt = 1,
        kl: KLMethod = "closed_form",
        predict_samples: PositiveInt = 20,
        lr: Positive = 1e-3, optimizer: Optimizer = "adam", momentum: Momentum = 0.0,
        nesterov: bool = False, lr_schedule: LRSchedule = "cosine", lr_gamma: DecayFactor = 0.95,
    ):  # fmt: skip
        super().__init__(lr, optimizer, momentum, nesterov, lr_schedule, lr_gamma)
        self.save_hyperparameters(logger=False)
        self._build_network(
            in_features, out_features, n_train, hidden, activation,
            prior_std, rho_init, estimator, mc_samples, kl, predict_samples,
        )  # fmt: skip

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, labels = batch
        logits = self.net(x, self.mc_samples)  # (M, B, K)
        return self._training_terms(categorical_nll(labels, logits))

    def predictive_logits(self, x: Tensor) -> Tensor:
        return self.net(x, self.predict_samples)  # (S, B, K)

    def objective_terms(self, nll_per_draw: Tensor, nll: Tensor) -> dict[str, Tensor]:
        return self._elbo_terms(nll_per_draw)
