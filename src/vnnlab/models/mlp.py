"""Deterministic MLPs: f_θ fitted by minimising ‖Y − f(X)‖² or the cross-entropy."""

from collections.abc import Sequence

from torch import Tensor

from vnnlab.models.base import DecayFactor, LRSchedule, Momentum, Optimizer
from vnnlab.models.layers import Activation, make_mlp
from vnnlab.models.losses import categorical_nll, correct, squared_error
from vnnlab.models.tasks import ClassificationModule, RegressionModule
from vnnlab.schema import Positive, PositiveInt


class MLPRegressor(RegressionModule):
    """f_θ: ℝⁿ → ℝ^q, loss = mean over the batch of ‖y − f_θ(x)‖²; its predictive is f_θ(x)
    alone (one draw, no density, so no nll or coverage). `standardize_target`: the network
    predicts the standardised target (RegressionModule.keep_target_scaling)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[PositiveInt] = (50, 50),
        activation: Activation = "tanh",
        standardize_target: bool = False,
        lr: Positive = 3e-3, optimizer: Optimizer = "adam", momentum: Momentum = 0.0,
        nesterov: bool = False, lr_schedule: LRSchedule = "cosine", lr_gamma: DecayFactor = 0.95,
    ):  # fmt: skip
        super().__init__(lr, optimizer, momentum, nesterov, lr_schedule, lr_gamma)
        self.save_hyperparameters(logger=False)
        self.net = make_mlp(in_features, hidden, out_features, activation)
        self.keep_target_scaling(out_features, standardize_target)

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, y = batch
        mse = squared_error(y, self.to_target_units(self.net(x))).mean()
        return {"loss": mse, "mse": mse}

    def predictive_draws(self, x: Tensor) -> Tensor:
        return self.to_target_units(self.net(x)).unsqueeze(0)  # (1, B, q)


class MLPClassifier(ClassificationModule):
    """Softmax MLP trained by cross-entropy (the categorical negative log-likelihood)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[PositiveInt] = (400, 400),
        activation: Activation = "relu",
        lr: Positive = 1e-3, optimizer: Optimizer = "adam", momentum: Momentum = 0.0,
        nesterov: bool = False, lr_schedule: LRSchedule = "cosine", lr_gamma: DecayFactor = 0.95,
    ):  # fmt: skip
        super().__init__(lr, optimizer, momentum, nesterov, lr_schedule, lr_gamma)
        self.save_hyperparameters(logger=False)
        self.net = make_mlp(in_features, hidden, out_features, activation)

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, labels = batch
        logits = self.net(x)
        nll = categorical_nll(labels, logits).mean()
        acc = correct(labels, logits).mean()
        return {"loss": nll, "nll": nll, "acc": acc}

    def predictive_logits(self, x: Tensor) -> Tensor:
        return self.net(x).unsqueeze(0)  # (1, B, K)
