"""`ensemble`: a deep ensemble (Lakshminarayanan et al. 2017), K networks trained at once.

K members, each its own initialisation, trained on the same minibatches in one vectorised pass:
their parameters are stacked along a leading K axis (torch.func.stack_module_state) and one
network is evaluated under torch.vmap over them. The objective is the sum of the members'
losses, so each member's gradient is its own loss's, whatever K. The predictive is the mixture
of the K members (S = K draws, equal weights); a regressor's members predict a mean and a
variance each by default (model.noise=auto), as in the paper. The paper's adversarial training
is left out.
"""

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from vnnlab.inference.base import InferenceMethod, NetworkSpec
from vnnlab.models.layers import make_mlp
from vnnlab.schema import PositiveInt


class Ensemble(InferenceMethod):
    """Ensemble(members=5)."""

    prefers_heteroscedastic: ClassVar[bool] = True

    def __init__(self, members: PositiveInt = 5):
        super().__init__()
        self.members = members

    def build(self, spec: NetworkSpec) -> None:
        networks = [make_mlp(spec.in_features, spec.hidden, spec.out_features, spec.activation)
                    for _ in range(self.members)]  # fmt: skip
        stacked, _ = stack_module_state(networks)  # name → (K, *shape)
        self.names = list(stacked)
        self.stacked = nn.ParameterList(nn.Parameter(stacked[name].detach()) for name in self.names)
        # the members' shape without storage, for functional_call; in a tuple so that it is not
        # registered as a submodule (its meta tensors would enter the state dict)
        self._template = (networks[0].to("meta"),)

    def _all_members(self, x: Tensor) -> Tensor:
        """Every member on x (B, in) → (K, B, out), one vmapped call."""
        parameters = dict(zip(self.names, self.stacked, strict=True))

        def member(params: dict[str, Tensor], inputs: Tensor) -> Tensor:
            return functional_call(self._template[0], params, (inputs,))

        return torch.vmap(member, in_dims=(0, None))(parameters, x)

    def training_outputs(self, x: Tensor) -> Tensor:
        return self._all_members(x)  # (K, B, out)

    def objective(self, nll: Tensor) -> dict[str, Tensor]:
        return {"loss": nll.sum(dim=0)}  # (B,): Σ_k of the members' −log p(y | θ_k)

    def predictive_outputs(self, x: Tensor) -> Tensor:
        return self._all_members(x)  # (K, B, out)
