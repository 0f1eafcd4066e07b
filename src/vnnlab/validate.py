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
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from vnnlab.errors import bad_value
from vnnlab.schema import NonNegative, NonNegativeInt, Positive, PositiveInt, Range

# Arguments train() passes from the data (DataInfo.model_dims) rather than from the config.
DATA_DERIVED = frozenset({"in_features", "out_features", "n_train"})

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
TOP_LEVEL = {"seed": NonNegativeInt, "checkpoint.every_n_epochs": PositiveInt, "resume": str | None,
             "tracking.system_metrics_every_s": Positive | None}  # fmt: skip


def validate(cfg: DictConfig) -> None:
    """Raise BadInputError for the first value that is not allowed."""
    for key, annotation in TOP_LEVEL.items():
        check_value(key, OmegaConf.select(cfg, key), annotation)
    check_system_metrics(OmegaConf.select(cfg, "tracking.system_metrics_every_s"))
    for group in ("model", "data"):
        check_group(group, cfg[group])
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
        hints = {k: v for k, v in hints.items() if k not in DATA_DERIVED}
    for key, value in args.items():
        if key not in hints:
            allowed = ", ".join(hints)
            raise bad_value(f"{group}.{key}", value, f"a key of {cls.__name__}: {allowed}")
        check_value(f"{group}.{key}", value, hints[key])
    cls.check_args(args)


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
