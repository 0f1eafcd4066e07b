"""`map`: one network, its weights the maximum a posteriori estimate.

Minimises the likelihood's −log p(y | f_θ(x)) per point; `optimizer.weight_decay` λ adds λ‖θ‖²/2
to it, the −log density of a Gaussian prior on θ (up to a constant, in the optimiser's
per-point units). The predictive is the one network: S = 1 draw.
"""

from torch import Tensor, nn

from vnnlab.inference.base import InferenceMethod, NetworkSpec
from vnnlab.models.layers import make_mlp


class MAP(InferenceMethod):
    """MAP(): no knobs of its own (the weight decay is the optimiser's)."""

    def __init__(self):
        super().__init__()

    def build(self, spec: NetworkSpec) -> None:
        self.net: nn.Module = make_mlp(spec.in_features, spec.hidden, spec.out_features,
                                       spec.activation)  # fmt: skip

    def training_outputs(self, x: Tensor) -> Tensor:
        return self.net(x).unsqueeze(0)  # (1, B, out)

    def objective(self, nll: Tensor) -> dict[str, Tensor]:
        return {"loss": nll.mean(dim=0)}  # (B,): S = 1 at training and prediction alike

    def predictive_outputs(self, x: Tensor) -> Tensor:
        return self.net(x).unsqueeze(0)  # (1, B, out)
