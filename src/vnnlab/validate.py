"""Check a composed config before anything is built or tracked: bad input is one clear line
(key, value, allowed range) and exit code 2, with no MLflow run left behind.

Types and ranges come from where each knob is declared: the annotated signature of the class a
config group names (`sigma2: Positive = 0.01`, see vnnlab.schema), Lightning's own `Trainer`
signature, and a few ranges vnnlab adds to Trainer arguments. Values that are wrong together
are checked by the class itself (`check_args`).
"""

import importlib.util
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from vnnlab.errors import BadInputError, bad_value
from vnnlab.schema import NonNegative, NonNegativeInt, Positive, PositiveInt, Range

# Arguments train() passes from the data (DataInfo.model_dims) and from the other config groups
# (vnnlab.run.build) rather than from the model's own node.
DATA_DERIVED = frozenset({"in_features", "out_features", "n_train"})
PASSED_IN = DATA_DERIVED | {"inference", "optimizer"}

# Ranges vnnlab adds to Lightning's Trainer types (Lightning itself accepts, e.g., -5 epochs).
TRAINER_RANGES: dict[str, Any] = {
    "max_epochs": PositiveInt,
    "max_steps": typing.Annotated[int, Range(low=-1)],  # −1: no limit
    "check_val_every_n_epoch": PositiveInt | None,
    "log_every_n_steps": PositiveInt,
    "num_sanity_val_steps": typing.Annotated[int, Range(low=-1)],  # −1: the whole val set
    "gradient_clip_val": NonNegative | None,
    "accumulate_grad_batches": PositiveInt,
    "devices": PositiveInt | str | list[NonNegativeInt],
    "enable_progress_bar": bool | typing.Literal["auto"],  # auto: a bar on a terminal only
    **{
        f"limit_{stage}_batches": NonNegativeInt | typing.Annotated[float, Range(0, 1)] | None
        for stage in ("train", "val", "test", "predict")
    },
}
# Ranges vnnlab adds to the torch optimisers' types (the learning rate is model.lr).
OPTIMIZER_RANGES: dict[str, Any] = {
    "momentum": typing.Annotated[float, Range(low=0, high=1, high_open=True)],
    "dampening": typing.Annotated[float, Range(low=0, high=1)],
    "weight_decay": NonNegative,
    "eps": Positive,
    "betas": list[typing.Annotated[float, Range(low=0, high=1, high_open=True)]],
}
NOT_OPTIMIZER_KNOBS = ("params", "lr")
TOP_LEVEL = {"seed": NonNegativeInt, "checkpoint.every_n_epochs": PositiveInt, "resume": str | None,
             "tracking.system_metrics_every_s": Positive | None}  # fmt: skip


def validate(cfg: DictConfig) -> None:
    """Raise BadInputError for the first value that is not allowed."""
    for key, annotation in TOP_LEVEL.items():
        check_value(key, OmegaConf.select(cfg, key), annotation)
    check_system_metrics(OmegaConf.select(cfg, "tracking.system_metrics_every_s"))
    for group in ("model", "data"):
        check_group(group, cfg[group])
    check_optimizer(cfg.optimizer)
    if "inference" in cfg:
        check_group("inference", cfg.inference)
        check_inference(cfg)
    check_trainer(cfg.trainer)


def check_system_metrics(every_s: float | None) -> None:
    """MLflow samples system metrics with psutil, an optional dependency."""
    if every_s is not None and importlib.util.find_spec("psutil") is None:
        allowed = 'null, as psutil is not installed (pip install "vnnlab[system]")'
        raise bad_value("tracking.system_metrics_every_s", every_s, allowed)


def check_group(group: str, node: DictConfig) -> None:
    """Every key of a `_target_` node against the annotated signature of its class."""
    target = node.get("_target_")
    try:
        cls = get_class(target)
    except Exception as error:  # Hydra wraps import failures in several types
        raise bad_value(f"{group}._target_", target, "an importable class") from error
    args = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "_target_"}
    hints = signature_hints(cls)
    if group == "model":
        hints = {k: v for k, v in hints.items() if k not in PASSED_IN}
    for key, value in args.items():
        if key not in hints:
            allowed = ", ".join(hints)
            raise bad_value(f"{group}.{key}", value, f"a key of {cls.__name__}: {allowed}")
        check_value(f"{group}.{key}", value, hints[key])
    cls.check_args(args)


def check_inference(cfg: DictConfig) -> None:
    """An inference method only for a model that takes one, and one that can serve it."""
    model_class = get_class(cfg.model._target_)
    inference = OmegaConf.to_container(cfg.inference, resolve=True)
    name = str(inference["_target_"]).split(".")[-2]  # its module: the config's name
    if "inference" not in inspect.signature(model_class).parameters:
        allowed = f"none with model={model_class.__name__} (it is fitted its own way; the "
        raise bad_value("inference", name, f"{allowed}regressor and classifier take one)")
    model_args = OmegaConf.to_container(cfg.model, resolve=True)
    optimizer_args = OmegaConf.to_container(cfg.optimizer, resolve=True)
    model_class.check_inference(inference, model_args, optimizer_args)


def check_optimizer(node: DictConfig) -> None:
    """The optimiser's knobs against its class's signature, then torch's own checks on a
    throw-away parameter (e.g. SGD's nesterov without momentum), as bad input."""
    target = node.get("_target_")
    try:
        cls = get_class(target)
    except Exception as error:
        raise bad_value("optimizer._target_", target, "an importable optimiser") from error
    args = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "_target_"}
    hints = {k: v for k, v in signature_hints(cls).items() if k not in NOT_OPTIMIZER_KNOBS}
    for key, value in args.items():
        if key not in hints:
            allowed = ", ".join(hints)
            raise bad_value(f"optimizer.{key}", value, f"a key of {cls.__name__}: {allowed}")
        check_value(f"optimizer.{key}", value, OPTIMIZER_RANGES.get(key, hints[key]))
    if args.get("nesterov") and not (args.get("momentum") and not args.get("dampening")):
        raise bad_value("optimizer.nesterov", True, "false unless optimizer.momentum > 0 and "
                        "optimizer.dampening = 0")  # fmt: skip
    try:
        cls([torch.zeros(1, requires_grad=True)], lr=1.0, **args)
    except (ValueError, RuntimeError) as error:
        raise BadInputError(f"optimizer: {error}") from None


def check_trainer(node: DictConfig) -> None:
    hints = trainer_hints()
    for key, value in OmegaConf.to_container(node, resolve=True).items():
        if key not in hints:
            raise bad_value(f"trainer.{key}", value, "a pytorch_lightning.Trainer argument")
        check_value(f"trainer.{key}", value, TRAINER_RANGES.get(key, hints[key]))


@cache
def trainer_hints() -> dict[str, Any]:
    hints = typing.get_type_hints(pl.Trainer.__init__)
    hints.pop("return", None)
    hints.pop("logger", None)  # vnnlab's: the run's MLflow logger
    return hints


def signature_hints(cls: type) -> dict[str, Any]:
    """Annotations of cls.__init__'s parameters: exactly the keys the class accepts (every
    vnnlab class lists its knobs in its own signature, with no **kwargs)."""
    annotations = typing.get_type_hints(cls.__init__, include_extras=True)
    parameters = inspect.signature(cls.__init__).parameters.values()
    named = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return {name: annotations.get(name, Any) for name in named[1:]}  # after self


def check_value(key: str, value: Any, annotation: Any) -> None:
    if not allows(annotation, value):
        raise bad_value(key, value, describe(annotation))


def allows(annotation: Any, value: Any) -> bool:
    """Whether a plain config value (number, string, bool, None, list) fits the annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    if origin is typing.Annotated:
        ranges = [a for a in args[1:] if isinstance(a, Range)]
        return allows(args[0], value) and all(r.allows(value) for r in ranges)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(allows(member, value) for member in args)
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or annotation in (list, tuple):
        item = args[0] if args else Any
        return isinstance(value, list | tuple) and all(allows(item, v) for v in value)
    if origin in (dict, Mapping) or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation vnnlab cannot read: Lightning or the class will judge


def describe(annotation: Any) -> str:
    """The allowed values as a user reads them: "a number > 0", "one of relu | tanh"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        ranges = " and ".join(r.describe() for r in args[1:] if isinstance(r, Range))
        return f"{describe(args[0])} {ranges}".strip()
    if origin is typing.Literal:
        return "one of " + " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        members = [describe(m) for m in args if m is not type(None)]
        none = " or null" if type(None) in args else ""
        return " or ".join(dict.fromkeys(members)) + none
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if annotation in names:
        return names[annotation]
    if origin in (list, tuple, Sequence, typing.Sequence):
        item = describe(args[0]) if args else "values"
        plural = item.replace("an integer", "integers").replace("a number", "numbers")
        return f"a list of {plural}, e.g. [50,50]"
    return getattr(annotation, "__name__", str(annotation))
