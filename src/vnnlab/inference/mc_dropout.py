"""`mc_dropout`: Monte Carlo dropout (Gal & Ghahramani 2016).

The network is trained with dropout (rate p before every hidden layer's successor, and
`input_dropout` on the inputs) and weight decay λ (`optimizer.weight_decay`); together they are
variational inference with a Bernoulli-mixture q over the weights. Dropout stays on at
prediction: the predictive is S = `predict_samples` passes with independent masks, made in one
batched call (the input broadcast to (S, B, in), each draw its own masks).
"""

from torch import Tensor, nn
from torch.nn import functional as F

from vnnlab.inference.base import InferenceMethod, NetworkSpec, draws_of
from vnnlab.models.layers import ACTIVATIONS
from vnnlab.schema import PositiveInt, Probability


class AlwaysDropout(nn.Module):
    """Dropout in training and evaluation alike: at prediction it is the posterior's sampler."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=True) if self.p > 0 else x


def dropout_mlp(spec: NetworkSpec, p: float, input_p: float) -> nn.Sequential:
    """in → hidden → out like layers.make_mlp, with AlwaysDropout before every linear layer
    (rate `input_p` before the first, p before the others)."""
    sizes = [spec.in_features, *spec.hidden, spec.out_features]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [AlwaysDropout(input_p if i == 0 else p), nn.Linear(n_in, n_out)]
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[spec.activation]())
    return nn.Sequential(*layers)


class MCDropout(InferenceMethod):
    """MCDropout(dropout=0.05, input_dropout=0.0, predict_samples=100)."""

    def __init__(
        self,
        dropout: Probability = 0.05,
        input_dropout: Probability = 0.0,
        predict_samples: PositiveInt = 100,
    ):
        super().__init__()
        self.dropout, self.input_dropout = dropout, input_dropout
        self.predict_samples = predict_samples

    def build(self, spec: NetworkSpec) -> None:
        self.net = dropout_mlp(spec, self.dropout, self.input_dropout)

    def training_outputs(self, x: Tensor) -> Tensor:
        return self.net(x).unsqueeze(0)  # (1, B, out): one mask per example

    def objective(self, nll: Tensor) -> dict[str, Tensor]:
        return {"loss": nll.mean(dim=0)}  # (B,)

    def predictive_outputs(self, x: Tensor) -> Tensor:
        return draws_of(self.net, x, self.predict_samples)  # (S, B, out)
