"""The interface every inference method implements, and the plain parts they share.

A task module (models.regression.Regressor, models.classification.Classifier) owns the data
contract, the likelihood, the metrics and the figures; it builds one InferenceMethod from the
`inference` config group and asks it four things:

- `build(spec)`: make the network(s) for inputs → `spec.out_features` raw outputs;
- `training_outputs(x) -> (M, B, out)`: the outputs a training step's objective averages over
  (M posterior samples, K ensemble members, or one network);
- `objective(nll) -> {term: (B,)}`: from the likelihood's −log p(y | outputs) per draw (M, B),
  the per-point terms of what the optimiser minimises, "loss" among them;
- `predictive_outputs(x, stage) -> (S, B, out)`: S draws of the predictive, from which the
  task computes every metric, so that a metric means one quantity for every method.

and, where a method needs them: its parameter groups and optimiser (IVON's optimiser is its
posterior), a step of that optimiser, a fit after training (Laplace), per-epoch diagnostics,
figures, and what it keeps in a checkpoint beside its parameters.
"""

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from vnnlab.models.optimizers import make_optimizer


@dataclass(frozen=True)
class NetworkSpec:
    """The network a task asks for: in_features → hidden → out_features raw outputs (for a
    heteroscedastic regressor, a mean and a variance per target), `activation` between layers;
    n_train: the training points N (the ELBO's and IVON's scale)."""

    in_features: int
    hidden: tuple[int, ...]
    out_features: int
    activation: str
    n_train: int


@dataclass(frozen=True)
class PosthocData:
    """What a post-hoc method (Laplace) fits on after training: the whole training split as the
    network sees it (inputs, targets in the network's units), the likelihood ("regression" or
    "classification") and, for regression, σ² in the network's units."""

    x: Tensor
    y: Tensor
    likelihood: str
    noise_var: float | None
    batch_size: int


class InferenceMethod(nn.Module):
    """See the module docstring. Subclasses list their knobs in their signature (the
    `inference` config's keys are exactly its parameters) and implement `build`,
    `training_outputs`, `objective` and `predictive_outputs`."""

    # False: the method cannot serve a heteroscedastic regressor (its predictive has one σ²)
    heteroscedastic: ClassVar[bool] = True
    # True: a regressor with model.noise=auto predicts a variance per point with this method
    prefers_heteroscedastic: ClassVar[bool] = False

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> None:
        """Raise BadInputError for values of this method's knobs that are wrong together."""

    @classmethod
    def default(cls, name: str) -> Any:
        """The signature default of knob `name` (for checks on configs that omit it)."""
        return inspect.signature(cls).parameters[name].default

    @classmethod
    def check_with(cls, model_args: Mapping[str, Any], optimizer_args: Mapping[str, Any]) -> None:
        """Raise BadInputError when this method cannot serve a model or optimiser so configured."""

    def build(self, spec: NetworkSpec) -> None:
        raise NotImplementedError

    def training_outputs(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def objective(self, nll: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def predictive_outputs(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    # --- optimisation: a torch optimiser from the `optimizer` group, stepped as usual ---------

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Parameter groups, each "params" and optionally "lr_scale" (lr × lr_scale)."""
        return [{"params": list(self.parameters())}]

    def make_optimizer(
        self, groups: list[dict[str, Any]], lr: float, optimizer: Mapping[str, Any]
    ) -> torch.optim.Optimizer:
        return make_optimizer(optimizer, groups, lr)

    def optimizer_step(self, optimizer: Any, closure: Callable[[], Any]) -> None:
        """One step of the optimiser; `closure` runs the training step and its backward pass."""
        optimizer.step(closure=closure)

    # --- after training, per epoch, figures, checkpoints --------------------------------------

    def fit_posthoc(self, data: PosthocData) -> None:
        """Called once when training ends, before the test (Laplace fits its curvature here)."""

    def noise_variance(self) -> Tensor | None:
        """A σ² the method fitted itself (in the network's units), replacing the task's; None:
        the task's own."""
        return None

    def start_epoch(self, epoch: int) -> None:
        """Called at the start of every training epoch (0-based), e.g. for a KL warm-up."""

    def epoch_metrics(self, means: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Further train/ metrics, once per epoch, from the epoch means of the logged terms."""
        return {}

    def end_fit(self) -> None:
        """Called when training ends (e.g. a warning that the ELBO was still rising)."""

    def figures(self) -> dict[str, Figure]:
        return {}

    def save_state(self) -> dict[str, Any]:
        """What a checkpoint keeps beside the parameters (tensors and plain values only)."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        pass

    def start_fit(self, optimizer: Any) -> None:
        """Called when training (re)starts, with the optimiser as Lightning restored it."""


def draws_of(network: nn.Module, x: Tensor, n_samples: int) -> Tensor:
    """n_samples passes of a stochastic network (dropout on) in one batched call: x (B, in) is
    broadcast to (S, B, in), so every draw gets its own randomness → (S, B, out)."""
    return network(x.expand(n_samples, *x.shape))
