"""Task heads: the evaluation metrics and figures of regression and classification, shared by
the deterministic and the Bayesian models so that a metric name means one quantity in both.

Every model of a task describes its predictive by S draws (S = 1 for a deterministic model):
`nll` is −log of the predictive density (1/S) Σ_s p(y | θ⁽ˢ⁾), `mse` the squared error of the
predictive mean, `acc` the accuracy of the predictive probabilities; at val and at test alike.
"""

from collections.abc import Mapping
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassCalibrationError

from vnnlab import plots
from vnnlab.data.base import DataInfo
from vnnlab.errors import bad_value
from vnnlab.models.base import VNNModule
from vnnlab.models.losses import (
    categorical_nll,
    correct,
    coverage,
    gaussian_nll,
    mixture_nll,
    principal_subspace,
    reconstruction_mse,
    squared_error,
)

ECE_BINS = 15
PREDICT_CHUNK = 4096  # rows per forward pass when a figure predicts a whole split
FIGURE_EXAMPLES = 10  # test examples shown beside their reconstructions


class RegressionModule(VNNModule):
    """Subclasses implement `predictive_draws(x) -> (S, B, q)` and set `noise_var`: the
    likelihood's σ², or None for a model without a predictive density (a plain MLP). They call
    `keep_target_scaling` in __init__ and pass their network's outputs through
    `to_target_units`."""

    needs_target = "real"
    noise_var: float | None = None

    def keep_target_scaling(self, out_features: int, standardize_target: bool) -> None:
        """With `standardize_target`, the network predicts (y − m) / s, with m and s the mean
        and sd of each target column over the training split (use_training_targets), and
        `to_target_units` maps its outputs back: the likelihood, σ² and every metric stay in
        the target's units, while the network, its initialisation and a BNN's prior see a
        target of scale 1. Without it, m = 0 and s = 1, kept out of checkpoints."""
        self.standardize_target = standardize_target
        self.register_buffer("target_loc", torch.zeros(out_features), standardize_target)
        self.register_buffer("target_scale", torch.ones(out_features), standardize_target)

    def use_training_targets(self, y: Tensor) -> None:
        if self.standardize_target:
            self.target_loc.copy_(y.mean(dim=0))
            self.target_scale.copy_(y.std(dim=0).clamp_min(torch.finfo(y.dtype).tiny))

    def to_target_units(self, f: Tensor) -> Tensor:
        """The network's outputs (..., q) in the target's units: m + s ⊙ f."""
        return self.target_loc + self.target_scale * f

    def predictive_draws(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Predictive mean (B, q) and variance (B, q): the spread of the S draws (epistemic)
        plus σ² (noise); None for a model without a predictive density."""
        draws = self.predictive_draws(x)
        if self.noise_var is None:
            return draws.mean(dim=0), None
        return draws.mean(dim=0), draws.var(dim=0, unbiased=False) + self.noise_var

    def evaluate(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Any]:
        x, y = batch
        draws = self.predictive_draws(x)  # (S, B, q)
        mean = draws.mean(dim=0)
        values = {"mse": squared_error(y, mean)}
        if self.noise_var is None:
            return values | {"loss": values["mse"]}  # the MLP's loss is its squared error
        var = draws.var(dim=0, unbiased=False) + self.noise_var
        nll_per_draw = gaussian_nll(y, draws, self.noise_var)  # (S, B)
        values |= {"nll": mixture_nll(nll_per_draw), "coverage95": coverage(y, mean, var)}
        return values | self.objective_terms(nll_per_draw)

    def objective_terms(self, nll_per_draw: Tensor) -> dict[str, Tensor]:
        """Per-example terms of the training objective evaluated on held-out data."""
        return {}

    def derived_metrics(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"rmse": values["mse"].sqrt()}

    @torch.no_grad()
    def figures(
        self, info: DataInfo, train: tuple[Tensor, ...], test: tuple[Tensor, ...]
    ) -> dict[str, Figure]:
        if info.in_features != 1 or info.true_function is None or info.input_range is None:
            return {}  # the fit figure needs a 1-D input and a known f
        x_train, y_train = train
        low, high = info.input_range
        margin = 0.1 * (high - low)
        grid = torch.linspace(low - margin, high + margin, 400).unsqueeze(1)  # (400, 1)
        mean, var = self.predict(grid.to(self.device))
        sd = None if var is None else var.sqrt().cpu()
        figure = plots.regression_fit(
            x_train, y_train, grid, info.true_function(grid), mean.cpu(), sd, gap=info.gap
        )
        return {"fit.png": figure}


class ClassificationModule(VNNModule):
    """Subclasses implement `predictive_logits(x) -> (S, B, K)`."""

    needs_target = "class"

    def predictive_logits(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def predict_proba(self, x: Tensor) -> Tensor:
        """(B, K): the mean of the S sampled softmaxes."""
        return self.predictive_logits(x).softmax(dim=-1).mean(dim=0)

    def special_metrics(self, stage: str) -> dict[str, Metric]:
        classes = self.hparams["out_features"]
        return {"ece": MulticlassCalibrationError(classes, n_bins=ECE_BINS, norm="l1")}

    def evaluate(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Any]:
        x, labels = batch
        logits = self.predictive_logits(x)  # (S, B, K)
        probs = logits.softmax(dim=-1).mean(dim=0)
        nll_per_draw = categorical_nll(labels, logits)  # (S, B)
        values = {
            "nll": mixture_nll(nll_per_draw),
            "acc": correct(labels, probs),
            "ece": (probs, labels),
        }
        return values | self.objective_terms(nll_per_draw, values["nll"])

    def objective_terms(self, nll_per_draw: Tensor, nll: Tensor) -> dict[str, Tensor]:
        """Per-example terms of the training objective on held-out data (MLP: loss = nll)."""
        return {"loss": nll}

    @torch.no_grad()
    def figures(
        self, info: DataInfo, train: tuple[Tensor, ...], test: tuple[Tensor, ...]
    ) -> dict[str, Figure]:
        x, labels = test
        probs = torch.cat(
            [self.predict_proba(chunk.to(self.device)).cpu() for chunk in x.split(PREDICT_CHUNK)]
        )
        return {
            "reliability.png": plots.reliability_diagram(probs, labels, ECE_BINS),
            "entropy.png": plots.entropy_by_correctness(probs, labels),
        }


class ReductionModule(VNNModule):
    """Dimension reduction: inputs only, so it trains on every data module (a batch's targets,
    if any, are ignored). Subclasses implement `encode(x) -> (B, m)` (for a VAE, the posterior
    mean) and `decode(z) -> (B, n)` (the reconstruction's mean); `recon_mse` is the mean
    squared error per input element of x̂ = decode(encode(x)), in every model."""

    needs_target = None

    @classmethod
    def check_data(cls, info: DataInfo, args: Mapping[str, Any]) -> None:
        latent_dim = args.get("latent_dim", cls.default("latent_dim"))
        if not latent_dim < info.in_features:
            raise bad_value("model.latent_dim", latent_dim, f"an integer < {info.in_features} "
                            "(the data's input dimension)")  # fmt: skip

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """loss = mean over the batch of ‖x − d(e(x))‖²; recon_mse = the same per element."""
        return {name: value.mean() for name, value in self.evaluate(batch, "train").items()}

    def evaluate(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Any]:
        x = batch[0]
        recon_mse = reconstruction_mse(x, self.reconstruct(x))  # (B,)
        return {"loss": recon_mse * x.shape[-1], "recon_mse": recon_mse}

    def reference_metrics(self, info: DataInfo) -> dict[str, float]:
        """`pca_mse`, when the data knows the population variances λ₁ ≥ … ≥ λₙ of its inputs:
        the expected test reconstruction MSE per element of the population-optimal rank-m PCA
        (x̂ = W Wᵀ x, W the m leading eigenvectors of the covariance), m = this model's
        latent_dim. A model fitted on a finite training set does slightly worse."""
        if info.input_variances is None:
            return {}
        m, n = self.hparams["latent_dim"], info.in_features
        left_out = torch.tensor(info.input_variances[m:], dtype=torch.float64)
        return {"pca_mse": left_out.sum().item() / n}  # (1/n) Σ_{j>m} λ_j

    @torch.no_grad()
    def figures(
        self, info: DataInfo, train: tuple[Tensor, ...], test: tuple[Tensor, ...]
    ) -> dict[str, Figure]:
        x_test, *targets = test
        shown = x_test[:FIGURE_EXAMPLES].to(self.device)
        figures = {
            "reconstructions.png": plots.reconstructions(
                shown.cpu(), self.reconstruct(shown).cpu(), info.image_shape
            )
        }
        latent = torch.cat(
            [self.encode(c.to(self.device)).cpu() for c in x_test.split(PREDICT_CHUNK)]
        )
        labels = targets[0] if info.target == "class" else None
        figures["latent.png"] = latent_figure(latent, labels)
        return figures


def latent_figure(latent: Tensor, labels: Tensor | None) -> Figure:
    """Latent codes (N, m) in 2-D: as they are for m ≤ 2, else their two principal components."""
    if latent.shape[1] == 1:
        return plots.latent_scatter(torch.cat([latent, torch.zeros_like(latent)], 1), labels,
                                    "z₁", "")  # fmt: skip
    if latent.shape[1] == 2:
        return plots.latent_scatter(latent, labels, "z₁", "z₂")
    mean, components, _ = principal_subspace(latent, 2)
    return plots.latent_scatter((latent - mean) @ components, labels, "PC 1 of z", "PC 2 of z")
