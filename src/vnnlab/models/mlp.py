"""Deterministic MLPs: f_θ fitted by minimising ‖Y − f(X)‖² or the cross-entropy."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vnnlab.models.layers import make_mlp
from vnnlab.models.tasks import ClassificationModule, RegressionModule


class MLPRegressor(RegressionModule):
    """f_θ: ℝⁿ → ℝ^q, loss = mean over the batch of ‖y − f_θ(x)‖²."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (50, 50),
        activation: str = "tanh",
        lr: float = 3e-3,
        **optim,
    ):
        super().__init__(lr=lr, **optim)
        self.save_hyperparameters(logger=False)
        self.net = make_mlp(in_features, hidden, out_features, activation)

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Tensor]:
        x, y = batch
        mse = ((y - self.net(x)) ** 2).sum(dim=-1).mean()
        return {"loss": mse, "mse": mse}

    def predict(self, x: Tensor) -> tuple[Tensor, None]:
        return self.net(x), None


class MLPClassifier(ClassificationModule):
    """Softmax MLP trained by cross-entropy."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (400, 400),
        activation: str = "relu",
        **optim,
    ):
        super().__init__(**optim)
        self.save_hyperparameters(logger=False)
        self.net = make_mlp(in_features, hidden, out_features, activation)

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Tensor]:
        x, labels = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "nll": loss, "acc": acc}

    def predict_proba(self, x: Tensor) -> Tensor:
        return torch.softmax(self.net(x), dim=-1)
