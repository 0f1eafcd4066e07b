"""Classification: a categorical likelihood on K logits, fitted by any inference method.

Every method's predictive is S draws of the logits; the predictive probabilities are the mean
of the S softmaxes, `nll` = −log (1/S) Σ_s softmax(logits⁽ˢ⁾)[y], `acc` their accuracy and
`ece` their expected calibration error (torchmetrics, 15 bins).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassCalibrationError

from vnnlab import plots
from vnnlab.data.base import DataInfo
from vnnlab.inference.base import NetworkSpec, PosthocData
from vnnlab.models.layers import Activation
from vnnlab.models.metrics import correct, mixture_nll
from vnnlab.models.objectives import categorical_nll
from vnnlab.models.optimizers import ADAM, DecayFactor, LRSchedule
from vnnlab.models.task import MAP, TaskModule
from vnnlab.schema import Positive, PositiveInt

ECE_BINS = 15
PREDICT_CHUNK = 4096  # rows per forward pass when a figure predicts a whole split


class Classifier(TaskModule):
    """Classifier(in_features=784, out_features=10, n_train=55000, inference={...})."""

    needs_target = "class"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_train: int,
        inference: Mapping[str, Any] = MAP,
        optimizer: Mapping[str, Any] = ADAM,
        hidden: Sequence[PositiveInt] = (400, 400),
        activation: Activation = "relu",
        lr: Positive = 1e-3,
        lr_schedule: LRSchedule = "cosine",
        lr_gamma: DecayFactor = 0.95,
    ):
        spec = NetworkSpec(in_features, tuple(hidden), out_features, activation, n_train)
        super().__init__(inference, spec, lr=lr, lr_schedule=lr_schedule, lr_gamma=lr_gamma,
                         optimizer=optimizer)  # fmt: skip
        self.save_hyperparameters(logger=False)

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, labels = batch
        logits = self.inference.training_outputs(x)  # (M, B, K)
        terms = self.inference.objective(categorical_nll(labels, logits))
        return {name: value.mean() for name, value in terms.items()}

    def predictive_logits(self, x: Tensor) -> Tensor:
        return self.inference.predictive_outputs(x)  # (S, B, K)

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
        values = {"nll": mixture_nll(nll_per_draw), "acc": correct(labels, probs),
                  "ece": (probs, labels)}  # fmt: skip
        return values | self.inference.objective(nll_per_draw)

    def posthoc_data(self, x: Tensor, y: Tensor, batch_size: int) -> PosthocData:
        return PosthocData(x, y, "classification", None, batch_size)

    def task_figures(
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
