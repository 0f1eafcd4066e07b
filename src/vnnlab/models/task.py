"""What the two supervised tasks share: an inference method chosen by config (vnnlab.inference)
that fits the network and draws the predictive, wired into Lightning's loop.

A task (models.regression, models.classification) says what a network's raw outputs mean
(its likelihood) and turns the method's S predictive draws into metrics and figures; the
method says how the parameters are fitted and how the draws are made. Neither knows the other's
internals, so a new method is one class in vnnlab/inference/ and one YAML in conf/inference/.
"""

from collections.abc import Callable, Mapping
from typing import Any

import torch
from hydra.utils import get_class
from matplotlib.figure import Figure
from torch import Tensor

from vnnlab.data.base import DataInfo
from vnnlab.errors import bad_value
from vnnlab.inference.base import InferenceMethod, NetworkSpec, PosthocData
from vnnlab.models.base import VNNModule

MAP: dict[str, Any] = {"_target_": "vnnlab.inference.map.MAP"}


def make_method(config: Mapping[str, Any]) -> InferenceMethod:
    """The inference method a config node names: `_target_` and its knobs."""
    knobs = {key: value for key, value in config.items() if key != "_target_"}
    return get_class(config["_target_"])(**knobs)


class TaskModule(VNNModule):
    """A supervised model: `self.inference` fits it. Subclasses implement `training_terms`
    (the method's training outputs through the task's likelihood into the method's objective),
    `evaluate` (the method's predictive draws into the task's metrics), `posthoc_data` and
    `task_figures`."""

    def __init__(self, inference: Mapping[str, Any], spec: NetworkSpec, **optimisation: Any):
        super().__init__(**optimisation)
        self.inference = make_method(inference)
        self.inference.build(spec)

    @classmethod
    def check_inference(
        cls,
        inference: Mapping[str, Any],
        model_args: Mapping[str, Any],
        optimizer_args: Mapping[str, Any],
    ) -> None:
        """Raise BadInputError when the chosen method cannot serve this model."""
        method = get_class(inference["_target_"])
        if not issubclass(method, InferenceMethod):
            raise bad_value("inference._target_", inference["_target_"], "an InferenceMethod")
        method.check_with(model_args, optimizer_args)

    # --- what the method needs from Lightning -------------------------------------------------

    def parameter_groups(self) -> list[dict[str, Any]]:
        own = [p for name, p in self.named_parameters() if not name.startswith("inference.")]
        return [*self.inference.parameter_groups(), *self.own_parameter_groups(own)]

    def own_parameter_groups(self, params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
        """Groups of the task's own parameters (a learned σ²)."""
        return [{"params": params}]

    def make_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        return self.inference.make_optimizer(groups, self.lr, self.optimizer_config)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Callable[[], Any]
    ) -> None:
        self.inference.optimizer_step(optimizer, optimizer_closure)

    def on_train_start(self) -> None:
        self.inference.start_fit(self.trainer.optimizers[0])

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.inference.start_epoch(self.current_epoch)

    def training_epoch_metrics(self, means: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.inference.epoch_metrics(means)

    def on_train_end(self) -> None:
        self.inference.end_fit()

    def fit_posthoc(self, train: tuple[Tensor, ...], batch_size: int) -> None:
        """After training: what the method fits on the training split (Laplace)."""
        x, y = train
        self.inference.fit_posthoc(self.posthoc_data(x.to(self.device), y.to(self.device),
                                                     batch_size))  # fmt: skip

    def posthoc_data(self, x: Tensor, y: Tensor, batch_size: int) -> PosthocData:
        raise NotImplementedError

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["inference"] = self.inference.save_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.inference.load_state(checkpoint.get("inference", {}))

    def method_figures(self) -> dict[str, Figure]:
        return self.inference.figures()

    def task_figures(
        self, info: DataInfo, train: tuple[Tensor, ...], test: tuple[Tensor, ...]
    ) -> dict[str, Figure]:
        return {}

    @torch.no_grad()
    def figures(
        self, info: DataInfo, train: tuple[Tensor, ...], test: tuple[Tensor, ...]
    ) -> dict[str, Figure]:
        return self.task_figures(info, train, test) | self.method_figures()
