"""The optimiser and its learning-rate schedule, from the `optimizer` config group and the
model's `lr`, `lr_schedule`, `lr_gamma`.

An `optimizer` config names a torch optimiser class and its knobs, learning rate excepted
(`{"_target_": "torch.optim.SGD", "momentum": 0.9, "weight_decay": 1e-4}`): the learning rate
is the model's, the one sweep axis every model shares (`model.lr`).
"""

import inspect
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
from hydra.utils import get_class

from vnnlab.schema import Range

LRSchedule = Literal["none", "cosine", "exponential"]
DecayFactor = Annotated[float, Range(low=0, high=1, low_open=True)]  # (0, 1]
ADAM: dict[str, Any] = {"_target_": "torch.optim.Adam"}  # torch's defaults for the rest


def make_optimizer(
    config: Mapping[str, Any], groups: list[dict[str, Any]], lr: float
) -> torch.optim.Optimizer:
    """The optimiser `config` names over parameter groups (each "params" and optionally
    "lr_scale": that group learns at lr × lr_scale); empty groups are left out."""
    knobs = {key: value for key, value in config.items() if key != "_target_"}
    optimizer_class = get_class(config["_target_"])
    groups = [
        {"params": group["params"], "lr": lr * group.get("lr_scale", 1.0)}
        for group in groups
        if group["params"]
    ]
    if "fused" in _parameters(optimizer_class) and knobs.get("fused") is None:
        # fused: one kernel updates every parameter; a third off each CPU step of
        # 784-400-400-10 with Adam (measured on the MNIST data path)
        device = groups[0]["params"][0].device.type if groups else "cpu"
        knobs["fused"] = device in ("cpu", "cuda")
    return optimizer_class(groups, lr=lr, **knobs)


def make_scheduler(
    optimizer: torch.optim.Optimizer, name: str, gamma: float, total_steps: int
) -> dict[str, Any] | None:
    """Lightning's scheduler config for `name`: cosine decays to 0 over the fit's `total_steps`
    optimiser steps; exponential multiplies lr by γ after every epoch; none: constant."""
    if name == "cosine":
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        return {"scheduler": cosine, "interval": "step"}
    if name == "exponential":
        decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
        return {"scheduler": decay, "interval": "epoch"}
    return None


def _parameters(cls: type) -> set[str]:
    return set(inspect.signature(cls).parameters)
