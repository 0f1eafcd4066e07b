"""Regression: y = f(x) + ε with a Gaussian likelihood, fitted by any inference method.

The network's outputs are in the units of the standardised target when `standardize_target`
(else the target's own); `to_target_units` maps them back, so σ² and every metric are in the
target's units. Noise:
- homoscedastic: one σ² for every point, fixed (`sigma2`); with `learn_sigma2=true` a parameter
  of the objective started at `sigma2` and learned at lr × `sigma2_lr_scale`; with
  `learn_sigma2=optimal` the objective's closed-form optimum given the step's residuals under
  the current fit, E‖y − f‖²/q (an empirical-Bayes update; layers.NoiseVariance). Which of
  these finds the noise from any start, per method: experiments/learned_sigma2 (Laplace's
  marginal likelihood does; BBB's ELBO counts its posterior's spread as noise);
- heteroscedastic: the network outputs a mean and a variance per target,
  σ²(x) = s² · (softplus(v(x)) + MIN_VARIANCE), s the target's scale (Nix & Weigend 1994; the
  deep ensemble's members, Lakshminarayanan et al. 2017);
- auto: heteroscedastic for a method that prefers it (the ensemble), else homoscedastic.

Every method's predictive is S draws (f⁽ˢ⁾(x), σ²⁽ˢ⁾(x)), a mixture of S Gaussians: mean
(1/S) Σ_s f⁽ˢ⁾; variance = the spread of the f⁽ˢ⁾ (epistemic) + the mean σ²⁽ˢ⁾ (noise);
`nll` = −log (1/S) Σ_s N(y; f⁽ˢ⁾, σ²⁽ˢ⁾); `coverage95` of mean ± 1.96 sd; `mse` of the mean.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from hydra.utils import get_class
from matplotlib.figure import Figure
from torch import Tensor

from vnnlab import plots
from vnnlab.data.base import DataInfo
from vnnlab.errors import bad_value
from vnnlab.inference.base import NetworkSpec, PosthocData
from vnnlab.models.layers import Activation, NoiseVariance, noise_mode
from vnnlab.models.metrics import coverage, mixture_nll, squared_error
from vnnlab.models.objectives import gaussian_nll
from vnnlab.models.optimizers import ADAM, DecayFactor, LRSchedule
from vnnlab.models.task import MAP, TaskModule
from vnnlab.schema import Positive, PositiveInt

Noise = Literal["auto", "homoscedastic", "heteroscedastic"]
MIN_VARIANCE = 1e-6  # a heteroscedastic σ²(x) never reaches 0 (the NLL would diverge)
FIT_GRID = 400  # inputs on which the fit figure draws the predictive


def resolve_noise(noise: str, inference: Mapping[str, Any]) -> str:
    """model.noise=auto as the method prefers; the other values as they are."""
    if noise != "auto":
        return noise
    prefers = get_class(inference["_target_"]).prefers_heteroscedastic
    return "heteroscedastic" if prefers else "homoscedastic"


class Regressor(TaskModule):
    """Regressor(in_features=1, out_features=1, n_train=1000, inference={"_target_": ...}):
    see the module docstring. `inference` and `optimizer` are the config groups' nodes."""

    needs_target = "real"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_train: int,
        inference: Mapping[str, Any] = MAP,
        optimizer: Mapping[str, Any] = ADAM,
        hidden: Sequence[PositiveInt] = (50, 50),
        activation: Activation = "tanh",
        standardize_target: bool = False,
        noise: Noise = "auto",
        sigma2: Positive = 0.01,
        learn_sigma2: bool | Literal["optimal"] = False,
        sigma2_lr_scale: Positive = 1.0,
        lr: Positive = 1e-2,
        lr_schedule: LRSchedule = "cosine",
        lr_gamma: DecayFactor = 0.95,
    ):
        heteroscedastic = resolve_noise(noise, inference) == "heteroscedastic"
        outputs = 2 * out_features if heteroscedastic else out_features
        spec = NetworkSpec(in_features, tuple(hidden), outputs, activation, n_train)
        super().__init__(inference, spec, lr=lr, lr_schedule=lr_schedule, lr_gamma=lr_gamma,
                         optimizer=optimizer)  # fmt: skip
        self.save_hyperparameters(logger=False)
        self.out_features, self.heteroscedastic = out_features, heteroscedastic
        self.noise = NoiseVariance(sigma2, noise_mode(learn_sigma2))
        self.standardize_target = standardize_target
        self.register_buffer("target_loc", torch.zeros(out_features), standardize_target)
        self.register_buffer("target_scale", torch.ones(out_features), standardize_target)

    @classmethod
    def check_inference(
        cls,
        inference: Mapping[str, Any],
        model_args: Mapping[str, Any],
        optimizer_args: Mapping[str, Any],
    ) -> None:
        super().check_inference(inference, model_args, optimizer_args)
        noise = resolve_noise(model_args.get("noise", cls.default("noise")), inference)
        if noise != "heteroscedastic":
            return
        if not get_class(inference["_target_"]).heteroscedastic:
            raise bad_value("model.noise", "heteroscedastic", "homoscedastic or auto with this "
                            "inference method (its predictive has one σ²)")  # fmt: skip
        if model_args.get("learn_sigma2"):
            raise bad_value("model.learn_sigma2", True, "false with a heteroscedastic model "
                            "(the network predicts σ²(x) itself)")  # fmt: skip

    # --- target scaling -----------------------------------------------------------------------

    def use_training_targets(self, y: Tensor) -> None:
        """With `standardize_target`, the network predicts (y − m) / s, m and s the mean and sd
        of each target column over the training split; without, m = 0 and s = 1 (kept out of
        checkpoints)."""
        if self.standardize_target:
            self.target_loc.copy_(y.mean(dim=0))
            self.target_scale.copy_(y.std(dim=0).clamp_min(torch.finfo(y.dtype).tiny))

    def to_target_units(self, f: Tensor) -> Tensor:
        """Network outputs (..., q) in the target's units: m + s ⊙ f."""
        return self.target_loc + self.target_scale * f

    # --- the likelihood -----------------------------------------------------------------------

    def mean_and_variance(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        """Raw outputs (S, B, out) → the likelihood's mean f (S, B, q) and σ² in the target's
        units: (S, B, q) per point (heteroscedastic) or a 0-d tensor."""
        q = self.out_features
        mean = self.to_target_units(outputs[..., :q])
        if self.heteroscedastic:
            return mean, self.target_scale**2 * (F.softplus(outputs[..., q:]) + MIN_VARIANCE)
        fitted = self.inference.noise_variance()  # Laplace's own σ², in the network's units
        if fitted is not None:
            return mean, fitted * self.target_scale**2
        return mean, self.noise()

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, y = batch
        outputs = self.inference.training_outputs(x)  # (M, B, out)
        q = self.out_features
        mean = self.to_target_units(outputs[..., :q])
        if self.heteroscedastic:
            nll = gaussian_nll(y, mean, self.mean_and_variance(outputs)[1])
            terms = self.inference.objective(nll)
        else:
            sigma2 = self.noise.for_step(y, mean)
            terms = self.inference.objective(gaussian_nll(y, mean, sigma2))
            terms["sigma2"] = sigma2.detach().expand_as(terms["loss"])
        return {name: value.mean() for name, value in terms.items()}

    def training_epoch_metrics(self, means: dict[str, Tensor]) -> dict[str, Tensor]:
        if "sigma2" in means:
            self.noise.end_epoch(means["sigma2"])
        return super().training_epoch_metrics(means)

    def own_parameter_groups(self, params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
        """A learned log σ² learns at lr × `sigma2_lr_scale`."""
        return [{"params": params, "lr_scale": self.hparams["sigma2_lr_scale"]}]

    # --- the predictive -----------------------------------------------------------------------

    def predictive(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """S draws of the predictive: means (S, B, q) and variances (S, B, q)."""
        mean, var = self.mean_and_variance(self.inference.predictive_outputs(x))
        return mean, var.expand_as(mean)

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Predictive mean (B, q) and variance (B, q): the spread of the S means (epistemic)
        plus the mean of the S noise variances."""
        means, variances = self.predictive(x)
        return means.mean(dim=0), means.var(dim=0, unbiased=False) + variances.mean(dim=0)

    def evaluate(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Any]:
        x, y = batch
        means, variances = self.predictive(x)  # (S, B, q) each
        mean = means.mean(dim=0)
        var = means.var(dim=0, unbiased=False) + variances.mean(dim=0)
        nll_per_draw = gaussian_nll(y, means, variances)  # (S, B)
        values = {
            "mse": squared_error(y, mean),
            "nll": mixture_nll(nll_per_draw),
            "coverage95": coverage(y, mean, var),
            "sigma2": variances.mean(dim=(0, 2)),  # the predictive's noise variance, per point
        }
        return values | self.inference.objective(nll_per_draw)

    def derived_metrics(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"rmse": values["mse"].sqrt()}

    def posthoc_data(self, x: Tensor, y: Tensor, batch_size: int) -> PosthocData:
        """The targets and σ² in the network's units (standardised with `standardize_target`)."""
        standardised = (y - self.target_loc) / self.target_scale
        sigma2 = (self.noise() / self.target_scale.pow(2).mean()).item()
        return PosthocData(x, standardised, "regression", sigma2, batch_size)

    def task_figures(
        self, info: DataInfo, train: tuple[Tensor, ...], test: tuple[Tensor, ...]
    ) -> dict[str, Figure]:
        if info.in_features != 1 or info.true_function is None or info.input_range is None:
            return {}  # the fit figure needs a 1-D input and a known f
        x_train, y_train = train
        low, high = info.input_range
        margin = 0.1 * (high - low)
        grid = torch.linspace(low - margin, high + margin, FIT_GRID).unsqueeze(1)  # (G, 1)
        mean, var = self.predict(grid.to(self.device))
        figure = plots.regression_fit(x_train, y_train, grid, info.true_function(grid),
                                      mean.cpu(), var.sqrt().cpu(), gap=info.gap)  # fmt: skip
        return {"fit.png": figure}
