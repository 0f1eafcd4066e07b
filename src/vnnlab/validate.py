"""Check a composed config before anything is built or tracked: bad input is one clear line
(key, value, allowed range) and exit code 2, with no MLflow run left behind."""

import inspect
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, ListConfig, OmegaConf

from vnnlab.data.synthetic import FUNCTIONS
from vnnlab.errors import BadInputError
from vnnlab.models.base import LR_SCHEDULES, OPTIMIZERS
from vnnlab.models.bnn import KL_METHODS
from vnnlab.models.layers import ACTIVATIONS, ESTIMATORS


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_int(value: Any) -> bool:
    return _is_int(value, 1)


def positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def probability_like(value: Any) -> bool:
    return _is_number(value) and 0 <= value < 1


def one_of(choices: Any) -> tuple[Callable[[Any], bool], str]:
    return (lambda value: value in choices), "one of " + " | ".join(choices)


def layer_sizes(value: Any) -> bool:
    return isinstance(value, list | tuple | ListConfig) and all(positive_int(v) for v in value)


# key → (check, allowed values as the user reads them). Keys absent from a config are skipped.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: _is_int(v, 0), "an integer ≥ 0"),
    "model.lr": (positive, "a number > 0"),
    "model.sigma2": (positive, "a number > 0"),
    "model.prior_std": (positive, "a number > 0"),
    "model.rho_init": (_is_number, "a number"),
    "model.mc_samples": (positive_int, "an integer ≥ 1"),
    "model.predict_samples": (positive_int, "an integer ≥ 1"),
    "model.latent_dim": (positive_int, "an integer ≥ 1"),
    "model.hidden": (layer_sizes, "a list of integers ≥ 1, e.g. [50,50]"),
    "model.activation": one_of(tuple(ACTIVATIONS)),
    "model.estimator": one_of(ESTIMATORS),
    "model.kl": one_of(KL_METHODS),
    "model.optimizer": one_of(OPTIMIZERS),
    "model.momentum": (probability_like, "a number in [0, 1)"),
    "model.lr_schedule": one_of(LR_SCHEDULES),
    "model.lr_gamma": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "data.batch_size": (positive_int, "an integer ≥ 1"),
    "data.function": one_of(tuple(FUNCTIONS)),
    "data.input_dim": (positive_int, "an integer ≥ 1"),
    "data.noise_var": (lambda v: _is_number(v) and v >= 0, "a number ≥ 0"),
    "data.n_train": (positive_int, "an integer ≥ 1"),
    "data.n_val": (positive_int, "an integer ≥ 1"),
    "data.n_test": (positive_int, "an integer ≥ 1"),
}


def fail(key: str, value: Any, allowed: str) -> BadInputError:
    return BadInputError(f"{key}={value!r} is not allowed: expected {allowed}")


def validate(cfg: DictConfig) -> None:
    """Raise BadInputError for the first value out of range."""
    for key, (check, allowed) in RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not check(value):
            raise fail(key, value, allowed)
    _check_combinations(cfg)
    _check_trainer_keys(cfg)


def _check_combinations(cfg: DictConfig) -> None:
    model, data = cfg.model, cfg.data
    if model.get("kl") == "monte_carlo" and model.get("estimator") == "local_reparam":
        raise fail("model.kl", "monte_carlo", "closed_form with model.estimator=local_reparam "
                   "(the Monte Carlo KL needs sampled weights)")  # fmt: skip
    if model.get("nesterov") and not (model.get("optimizer") == "sgd" and model.get("momentum")):
        raise fail("model.nesterov", True, "false unless optimizer=sgd and momentum > 0")
    if data.get("x_low") is not None and not data.x_low < data.x_high:
        raise fail("data.x_high", data.x_high, f"a number > data.x_low={data.x_low}")
    if data.get("gap") is not None:
        gap = list(data.gap)
        if not (len(gap) == 2 and data.x_low < gap[0] < gap[1] < data.x_high):
            raise fail("data.gap", gap, f"[a, b] with {data.x_low} < a < b < {data.x_high}")


def _check_trainer_keys(cfg: DictConfig) -> None:
    allowed = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self", "logger"}
    for key in cfg.trainer:
        if key not in allowed:
            raise fail(f"trainer.{key}", cfg.trainer[key], "a pytorch_lightning.Trainer argument")
