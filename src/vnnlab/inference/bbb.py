"""`bbb`: Bayes by Backprop (Blundell et al. 2015), mean-field variational inference.

q_η(θ) = N(μ, diag softplus(ρ)²), prior π = N(0, s² I) or the scale mixture
π N(0, σ₁²) + (1 − π) N(0, σ₂²) per weight; minimise
F̂(η) = (1/M) Σ_m [β (log q_η(θ⁽ᵐ⁾) − log π(θ⁽ᵐ⁾)) − log ℓ(Y | θ⁽ᵐ⁾)]
with θ⁽ᵐ⁾ = μ + softplus(ρ) ⊙ ξ⁽ᵐ⁾ redrawn at every step; all M samples go through the network
in one batched pass. β = `kl_weight` tempers the posterior (β = 1: the ELBO; β < 1 a "cold"
posterior that trusts the data more); `kl_warmup_epochs` = W ramps it as β·min(1, e/W) over the
first W epochs e = 0, 1, … (the network first fits the data, then pays for its distance to the
prior).

Logged terms, per training point (objectives.negative_elbo_per_point): `elbo` is always the true
bound (β = 1) = −(`expected_nll` + `kl`); `loss` = `expected_nll` + β_e·`kl` is what the
optimiser minimises; `kl_weight` = β_e per epoch. At val and test the same terms come from the
S = `predict_samples` draws that also give the predictive metrics.

Whether the posterior learns (train/ per epoch): `kl_share` (KL against the data term),
`posterior_sd_layer<i>` (median softplus(ρ) of layer i); after the fit, a histogram of the
signal-to-noise |μ|/σ of every weight (figures/signal_to_noise.png) and a warning on stderr
when the ELBO was still rising over the last epochs.

Why the defaults (the regression job; the classifier preset's are in conf/model/
bnn_classifier.yaml with its reasons): on the default job (1-50-50-1, 1000 points, 50 epochs,
M = 1) the weight-sampling estimator's ρ-gradient is mostly noise (each minibatch shares one
weight draw), so Adam moved the ρ's about as far as a random walk: the posterior stayed at its
initial sd. The local reparameterisation, the ρ's at 5× the learning rate and a wider start
(ρ₀ = −3) let the ELBO converge in the same steps (experiments/gap_uncertainty/README.md).
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
from vnnlab.errors import bad_value
from vnnlab.inference.base import InferenceMethod, NetworkSpec
from vnnlab.models.layers import (
    BayesianMLP,
    Estimator,
    GaussianPrior,
    Prior,
    ScaleMixturePrior,
)
from vnnlab.models.metrics import kl_share
from vnnlab.models.objectives import negative_elbo_per_point, warmed_kl_weight
from vnnlab.schema import NonNegative, NonNegativeInt, Positive, PositiveInt, Range

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


class BayesByBackprop(InferenceMethod):
    """See the module docstring. Estimators of the data term's gradient: "weights" (one weight
    draw per sample), "local_reparam" (pre-activations sampled, Kingma et al. 2015) and
    "flipout" (one weight perturbation per sample, decorrelated across the batch by random
    signs, Wen et al. 2018); models.layers.BayesLinear."""

    def __init__(
        self,
        prior: PriorName = "gaussian",
        prior_std: Positive = 1.0,
        prior_pi: MixtureWeight = 0.5,
        prior_sigma1: Positive = 1.0,
        prior_sigma2: Positive = 0.0025,
        rho_init: float = -3.0,
        rho_lr_scale: Positive = 5.0,
        estimator: Estimator = "local_reparam",
        mc_samples: PositiveInt = 1,
        kl: KLMethod = "closed_form",
        kl_weight: NonNegative = 1.0,
        kl_warmup_epochs: NonNegativeInt = 0,
        predict_samples: PositiveInt = 100,
    ):
        super().__init__()
        self.prior = make_prior(prior, prior_std, prior_pi, prior_sigma1, prior_sigma2)
        self.rho_init, self.rho_lr_scale, self.estimator = rho_init, rho_lr_scale, estimator
        self.mc_samples, self.kl_method, self.predict_samples = mc_samples, kl, predict_samples
        self.kl_weight, self.kl_warmup_epochs = kl_weight, kl_warmup_epochs
        self.kl_weight_now = warmed_kl_weight(kl_weight, kl_warmup_epochs, 0)
        self.elbo_history: list[float] = []  # train/elbo per epoch, for the end-of-fit check

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> None:
        prior, kl, estimator = (args.get(k, cls.default(k)) for k in ("prior", "kl", "estimator"))
        if prior == "scale_mixture":  # its KL: Monte Carlo on sampled weights only
            wrong = {"inference.estimator": (estimator, "weights"),
                     "inference.kl": (kl, "monte_carlo")}  # fmt: skip
            wrong = {key: pair for key, pair in wrong.items() if pair[0] != pair[1]}
            fix = " ".join(f"{key}={needed}" for key, (_, needed) in wrong.items())
            if wrong:  # the first wrong key, with every override the prior needs
                key, (value, needed) = next(iter(wrong.items()))
                allowed = f"{needed} with inference.prior=scale_mixture (a KL without closed "
                raise bad_value(key, value, f"{allowed}form, estimated on sampled weights): "
                                f"add {fix}")  # fmt: skip
        if kl == "monte_carlo" and estimator != "weights":
            raise bad_value("inference.kl", "monte_carlo", f"closed_form with inference."
                            f"estimator={estimator} (the Monte Carlo KL needs sampled weights), "
                            "or add inference.estimator=weights")  # fmt: skip

    @classmethod
    def check_with(cls, model_args: Mapping[str, Any], optimizer_args: Mapping[str, Any]) -> None:
        decay = optimizer_args.get("weight_decay", 0.0)
        if decay:  # the KL already pulls the weights to the prior
            allowed = "0 with inference=bbb (its prior is inference.prior_std; weight decay "
            raise bad_value("optimizer.weight_decay", decay, f"{allowed}would count it twice)")

    def build(self, spec: NetworkSpec) -> None:
        self.net = BayesianMLP(spec.in_features, spec.hidden, spec.out_features,
                               spec.activation, self.prior, self.rho_init,
                               self.estimator)  # fmt: skip
        self.n_train = spec.n_train

    def training_outputs(self, x: Tensor) -> Tensor:
        return self.net(x, self.mc_samples)  # (M, B, out)

    def predictive_outputs(self, x: Tensor) -> Tensor:
        return self.net(x, self.predict_samples)  # (S, B, out)

    def objective(self, nll: Tensor) -> dict[str, Tensor]:
        """nll: (M, B) −log ℓ(yᵢ | θ⁽ᵐ⁾) of the draws just made → (B,) terms."""
        terms = negative_elbo_per_point(nll, self.net.kl(self.kl_method), self.n_train)
        terms["loss"] = terms["expected_nll"] + self.kl_weight_now * terms["kl"]
        return terms

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The ρ's learn at lr × `rho_lr_scale`, the means μ at lr. Adam moves a parameter by
        about its learning rate per step at most, and a ρ's gradient is mostly Monte Carlo
        noise: at lr alone the ρ's of the default job stayed where they started."""
        named = list(self.named_parameters())
        rho = [p for name, p in named if name.endswith("_rho")]
        rest = [p for name, p in named if not name.endswith("_rho")]
        return [{"params": rest}, {"params": rho, "lr_scale": self.rho_lr_scale}]

    # --- the warm-up and the diagnostics ------------------------------------------------------

    def start_epoch(self, epoch: int) -> None:
        self.kl_weight_now = warmed_kl_weight(self.kl_weight, self.kl_warmup_epochs, epoch)

    def epoch_metrics(self, means: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self.elbo_history.append(means["elbo"].item())
        metrics = {"kl_share": kl_share(means["kl"], means["expected_nll"]),
                   "kl_weight": torch.tensor(self.kl_weight_now)}  # fmt: skip
        with torch.no_grad():
            for i, layer in enumerate(self.net.layers, start=1):
                metrics[f"posterior_sd_layer{i}"] = layer.posterior_std().median()
        return metrics

    def end_fit(self) -> None:
        gain = recent_gain(self.elbo_history)
        if gain is None:
            return
        rise, standard_error, epochs = gain
        if rise > ELBO_TOLERANCE and rise > 2 * standard_error:
            _warn(
                f"the ELBO was still rising when training stopped: "
                f"+{rise:.3g} nats per training point over the last {epochs} of "
                f"{len(self.elbo_history)} epochs (tolerance {ELBO_TOLERANCE}); train longer "
                "(trainer.max_epochs) or faster (model.lr, inference.rho_lr_scale)"
            )

    def save_state(self) -> dict[str, Any]:
        # the history: a resumed fit checks all epochs; β now: a reloaded model's loss
        return {"elbo_history": list(self.elbo_history), "kl_weight_now": self.kl_weight_now}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.elbo_history = list(state.get("elbo_history", []))
        self.kl_weight_now = state.get("kl_weight_now", self.kl_weight_now)

    @torch.no_grad()
    def figures(self) -> dict[str, Figure]:
        snr = {f"layer {i}": layer.signal_to_noise().cpu()
               for i, layer in enumerate(self.net.layers, start=1)}  # fmt: skip
        return {"signal_to_noise.png": plots.signal_to_noise(snr)}


@rank_zero_only  # one line, not one per process of a multi-process fit
def _warn(message: str) -> None:
    print(f"vnnlab: warning: {message}", file=sys.stderr, flush=True)
