"""Bayesian neural networks trained by Bayes by Backprop (Blundell et al. 2015).

q_η(θ) = N(μ, diag softplus(ρ)²), prior π = N(0, s² I) or the scale mixture
π N(0, σ₁²) + (1 − π) N(0, σ₂²) per weight; minimise
F̂(η) = (1/M) Σ_m [log q_η(θ⁽ᵐ⁾) − log π(θ⁽ᵐ⁾) − log ℓ(Y | θ⁽ᵐ⁾)] with θ⁽ᵐ⁾ = μ + softplus(ρ) ⊙ ξ⁽ᵐ⁾
redrawn at every step. All M samples go through the network in one batched pass.

Logged terms, per training point (F̂/N, see losses.negative_elbo_per_point): `loss` = −`elbo`
= `expected_nll` + `kl`. At val and test the same terms come from the S = `predict_samples`
draws that also give the predictive metrics (`nll`, `mse`, `acc`, ... of models.tasks).

Whether the posterior learns (train/ per epoch): `kl_share` (KL against the data term),
`posterior_sd_layer<i>` (median softplus(ρ) of layer i); after the fit, a histogram of the
signal-to-noise |μ|/σ of every weight (figures/signal_to_noise.png) and a warning on stderr
when the ELBO was still rising over the last epochs.

Why the regressor's defaults: on its default job (1-50-50-1, 1000 points, 50 epochs, M = 1)
the weight-sampling estimator's ρ-gradient is mostly noise (each minibatch shares one weight
draw), so Adam moved the ρ's about as far as a random walk: the posterior stayed at its
initial sd and the KL at 13× the data term. The local reparameterisation, the ρ's at 5× a
learning rate of 0.01 and a wider start (ρ₀ = −3) take the ELBO/N from −10.9 to −0.54 in the
same 1000 steps; 10× fell into a poor optimum on 1 seed of 5
(experiments/gap_uncertainty/README.md has the numbers).

Why the classifier's (MNIST, 784-400-400-10, 55 000 images; experiments/bnn_mnist_prior): with
the ρ's at lr the ELBO was still rising after 20 epochs (+0.07 nats per point over the last 3)
with KL/N at 14.8 against a data term of 0.1: a point estimate with some noise. At 10 × lr the
ρ's get where the ELBO wants them, and it prunes: most weights go back to the prior, whose
scale then decides the fit. N(0, 0.1²) gave a far better ELBO than N(0, 1) (−0.61 against
−6.5 after 5 epochs; −0.41 after 20, converged), and the mixture's narrow component holds
most weights at its σ₂. The ELBO's optimum classifies worse than the point estimate (test
accuracy 96.5% against 98.3%): the mean-field posterior's known under-fitting.
"""

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import torch
from matplotlib.figure import Figure
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from vnnlab import plots
from vnnlab.data.base import DataInfo
from vnnlab.errors import bad_value
from vnnlab.models.base import DecayFactor, LRSchedule, Momentum, Optimizer
from vnnlab.models.layers import (
    Activation,
    BayesianMLP,
    Estimator,
    GaussianPrior,
    NoiseVariance,
    Prior,
    ScaleMixturePrior,
    noise_mode,
)
from vnnlab.models.losses import categorical_nll, gaussian_nll, kl_share, negative_elbo_per_point
from vnnlab.models.tasks import ClassificationModule, RegressionModule
from vnnlab.schema import Positive, PositiveInt, Range

KLMethod = Literal["closed_form", "monte_carlo"]
PriorName = Literal["gaussian", "scale_mixture"]
MixtureWeight = Annotated[float, Range(low=0, high=1, low_open=True, high_open=True)]  # (0, 1)

# The end-of-fit check: the ELBO's gain over the last CONVERGENCE_WINDOW of the epochs (at least
# CONVERGENCE_MIN_EPOCHS), by a least-squares line through the per-epoch train/elbo. A warning
# when that gain exceeds ELBO_TOLERANCE nats per training point and twice its standard error
# (an epoch's ELBO is itself a Monte Carlo estimate: a noisy tail alone does not warn).
CONVERGENCE_WINDOW = 0.1
CONVERGENCE_MIN_EPOCHS = 3
ELBO_TOLERANCE = 0.01


def recent_gain(values: Sequence[float]) -> tuple[float, float, int] | None:
    """Of a per-epoch series, the rise over its last k epochs (CONVERGENCE_WINDOW of them, at
    least CONVERGENCE_MIN_EPOCHS) by a least-squares line, that rise's standard error, and k;
    None when the series is shorter than k."""
    k = max(CONVERGENCE_MIN_EPOCHS, math.ceil(CONVERGENCE_WINDOW * len(values)))
    if len(values) < k:
        return None
    y = torch.tensor(values[-k:], dtype=torch.float64)
    t = torch.arange(k, dtype=torch.float64)
    t = t - t.mean()
    slope = (t * (y - y.mean())).sum() / (t**2).sum()
    residuals = y - y.mean() - slope * t
    slope_se = (residuals.pow(2).sum() / max(k - 2, 1) / (t**2).sum()).sqrt()
    return (slope * (k - 1)).item(), (slope_se * (k - 1)).item(), k


def make_prior(prior: str, prior_std: float, prior_pi: float, prior_sigma1: float,
               prior_sigma2: float) -> Prior:  # fmt: skip
    if prior == "scale_mixture":
        return ScaleMixturePrior(prior_pi, prior_sigma1, prior_sigma2)
    return GaussianPrior(prior_std)


class BayesByBackprop:
    """The variational part shared by both BNNs; mixed in before a task module."""

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> None:
        super().check_args(args)
        prior, kl, estimator = (args.get(k, cls.default(k)) for k in ("prior", "kl", "estimator"))
        if prior == "scale_mixture":  # its KL: Monte Carlo on sampled weights only
            wrong = {"model.estimator": (estimator, "weights"), "model.kl": (kl, "monte_carlo")}
            wrong = {key: pair for key, pair in wrong.items() if pair[0] != pair[1]}
            fix = " ".join(f"{key}={needed}" for key, (_, needed) in wrong.items())
            if wrong:  # the first wrong key, with every override the prior needs
                key, (value, needed) = next(iter(wrong.items()))
                allowed = f"{needed} with model.prior=scale_mixture (a KL without closed form, "
                raise bad_value(key, value, f"{allowed}estimated on sampled weights): add {fix}")
        if kl == "monte_carlo" and estimator == "local_reparam":
            raise bad_value("model.kl", "monte_carlo", "closed_form with model.estimator="
                            "local_reparam (the Monte Carlo KL needs sampled weights), or add "
                            "model.estimator=weights")  # fmt: skip

    def _build_network(
        self,
        in_features: int,
        out_features: int,
        n_train: int,
        hidden: Sequence[int],
        activation: str,
        prior: Prior,
        rho_init: float,
        estimator: str,
        mc_samples: int,
        kl: str,
        predict_samples: int,
    ) -> None:
        self.net = BayesianMLP(
            in_features, hidden, out_features, activation, prior, rho_init, estimator
        )
        self.n_train = n_train
        self.mc_samples = mc_samples
        self.kl_method = kl
        self.predict_samples = predict_samples
        self.elbo_history: list[float] = []  # train/elbo per epoch, for the end-of-fit check

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The posterior's ρ's learn at lr × `rho_lr_scale`, a learned log σ² at lr ×
        `sigma2_lr_scale`, the means μ at lr. Adam moves a parameter by about its learning
        rate per step at most, and a ρ's gradient is mostly Monte Carlo noise: at lr alone the
        ρ's of the default job stayed where they started."""
        scales = {"_rho": self.hparams["rho_lr_scale"]}
        if self.hparams.get("learn_sigma2"):
            scales["log_sigma2"] = self.hparams["sigma2_lr_scale"]
        return self.groups_by_name(scales)

    def _elbo_terms(self, nll_per_draw: Tensor) -> dict[str, Tensor]:
        """nll_per_draw: (M, B) −log ℓ(yᵢ | θ⁽ᵐ⁾) of the draws just made → (B,) terms."""
        return negative_elbo_per_point(nll_per_draw, self.net.kl(self.kl_method), self.n_train)

    def _training_terms(self, nll_per_draw: Tensor) -> dict[str, Tensor]:
        return {name: value.mean() for name, value in self._elbo_terms(nll_per_draw).items()}

    # --- diagnostics ------------------------------------------------------------------------

    def training_epoch_metrics(self, means: dict[str, Tensor]) -> dict[str, Tensor]:
        self.elbo_history.append(means["elbo"].item())
        metrics = {"kl_share": kl_share(means["kl"], means["expected_nll"])}
        with torch.no_grad():
            for i, layer in enumerate(self.net.layers, start=1):
                metrics[f"posterior_sd_layer{i}"] = layer.posterior_std().median()
        return metrics

    def on_train_end(self) -> None:
        gain = recent_gain(self.elbo_history)
        if gain is None:
            return
        rise, standard_error, epochs = gain
        if rise > ELBO_TOLERANCE and rise > 2 * standard_error:
            _warn(
                f"the ELBO was still rising when training stopped: "
                f"+{rise:.3g} nats per training point over the last {epochs} of "
                f"{len(self.elbo_history)} epochs (tolerance {ELBO_TOLERANCE}); train longer "
                "(trainer.max_epochs) or faster (model.lr, model.rho_lr_scale)"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["elbo_history"] = list(self.elbo_history)  # a resumed fit checks all epochs

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.elbo_history = list(checkpoint.get("elbo_history", []))

    @torch.no_grad()
    def figures(
        self, info: DataInfo, train: tuple[Tensor, ...], test: tuple[Tensor, ...]
    ) -> dict[str, Figure]:
        snr = {f"layer {i}": layer.signal_to_noise().cpu()
               for i, layer in enumerate(self.net.layers, start=1)}  # fmt: skip
        figures = super().figures(info, train, test)
        return figures | {"signal_to_noise.png": plots.signal_to_noise(snr)}


class BNNRegressor(BayesByBackprop, RegressionModule):
    """Gaussian likelihood y = f_θ(x) + ε, ε ~ N(0, σ² I); σ² = `sigma2` fixed, or, with
    `learn_sigma2`, a parameter of the ELBO started at `sigma2` and learned at lr ×
    `sigma2_lr_scale` (layers.NoiseVariance); logged as train/sigma2. Its optimum given q is
    E_q‖y − f_θ(x)‖²/q, the epistemic spread included, so it settles above the noise.

    The ELBO is not concave in (q, σ²) together: from a σ² well above the noise, or learned
    faster than the network fits, the KL prunes the network first and σ² takes the misfit for
    noise. Measured on the default job (noise 0.01): from σ² = 0.01, σ² 0.019 and test MSE
    0.012; from 0.1, σ² 0.079 and test MSE 0.057; from 0.01 at sigma2_lr_scale=10, σ² 0.077.
    The VAE's closed-form σ² (learn_sigma2=optimal) is that trap from any start (the first
    steps' residuals are large), so the BNN does not offer it.

    Predictive (S = `predict_samples` draws): mean (1/S) Σ_s f_θ⁽ˢ⁾(x); variance = the spread of
    the f_θ⁽ˢ⁾(x) (epistemic) + σ² (noise); `nll` = −log (1/S) Σ_s N(y; f_θ⁽ˢ⁾(x), σ²).
    With `standardize_target`, f_θ is m + s ⊙ (the network's output), the network and its
    prior N(0, prior_std²) on a target of scale 1 (RegressionModule.keep_target_scaling);
    σ² stays in the target's units.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_train: int,
        hidden: Sequence[PositiveInt] = (50, 50),
        activation: Activation = "tanh",
        standardize_target: bool = False,
        sigma2: Positive = 0.01,
        learn_sigma2: bool = False,
        sigma2_lr_scale: Positive = 1.0,
        prior: PriorName = "gaussian", prior_std: Positive = 1.0, prior_pi: MixtureWeight = 0.5,
        prior_sigma1: Positive = 1.0, prior_sigma2: Positive = 0.0025,
        rho_init: float = -3.0,
        rho_lr_scale: Positive = 5.0,
        estimator: Estimator = "local_reparam",
        mc_samples: PositiveInt = 1,
        kl: KLMethod = "closed_form",
        predict_samples: PositiveInt = 100,
        lr: Positive = 1e-2, optimizer: Optimizer = "adam", momentum: Momentum = 0.0,
        nesterov: bool = False, lr_schedule: LRSchedule = "cosine", lr_gamma: DecayFactor = 0.95,
    ):  # fmt: skip
        super().__init__(lr, optimizer, momentum, nesterov, lr_schedule, lr_gamma)
        self.save_hyperparameters(logger=False)
        self.noise = NoiseVariance(sigma2, noise_mode(learn_sigma2))
        self.keep_target_scaling(out_features, standardize_target)
        self._build_network(
            in_features, out_features, n_train, hidden, activation,
            make_prior(prior, prior_std, prior_pi, prior_sigma1, prior_sigma2),
            rho_init, estimator, mc_samples, kl, predict_samples,
        )  # fmt: skip

    @property
    def noise_var(self) -> Tensor:  # the σ² every predictive metric uses
        return self.noise()

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, y = batch
        f = self.to_target_units(self.net(x, self.mc_samples))  # (M, B, q)
        sigma2 = self.noise.for_step(y, f)
        return self._training_terms(gaussian_nll(y, f, sigma2)) | {"sigma2": sigma2.detach()}

    def training_epoch_metrics(self, means: dict[str, Tensor]) -> dict[str, Tensor]:
        self.noise.end_epoch(means["sigma2"])
        return super().training_epoch_metrics(means)

    def predictive_draws(self, x: Tensor) -> Tensor:
        return self.to_target_units(self.net(x, self.predict_samples))  # (S, B, q)

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
        prior: PriorName = "gaussian", prior_std: Positive = 0.1, prior_pi: MixtureWeight = 0.5,
        prior_sigma1: Positive = 1.0, prior_sigma2: Positive = 0.0025,
        rho_init: float = -6.0,
        rho_lr_scale: Positive = 10.0,
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
            make_prior(prior, prior_std, prior_pi, prior_sigma1, prior_sigma2),
            rho_init, estimator, mc_samples, kl, predict_samples,
        )  # fmt: skip

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, labels = batch
        logits = self.net(x, self.mc_samples)  # (M, B, K)
        return self._training_terms(categorical_nll(labels, logits))

    def predictive_logits(self, x: Tensor) -> Tensor:
        return self.net(x, self.predict_samples)  # (S, B, K)

    def objective_terms(self, nll_per_draw: Tensor, nll: Tensor) -> dict[str, Tensor]:
        return self._elbo_terms(nll_per_draw)


@rank_zero_only  # one line, not one per process of a multi-process fit
def _warn(message: str) -> None:
    print(f"vnnlab: warning: {message}", file=sys.stderr, flush=True)
