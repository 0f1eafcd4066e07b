"""The YAML files list every knob so `model.x=…` works without "+"; the constructor
signatures stay the truth: every YAML value must equal its signature default. A preset
(bnn_regressor, …) is a task file plus an inference method and a few values."""

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from helpers import composed
from vnnlab import CONFIG_DIR
from vnnlab.data.base import VNNDataModule
from vnnlab.inference.base import InferenceMethod
from vnnlab.models.base import VNNModule
from vnnlab.validate import PASSED_IN, validate

PRESET_DATA = {"bnn_classifier": ["data=mnist"], "mlp_classifier": ["data=mnist"]}
ENVIRONMENT = {"root"}  # read from $VNNLAB_DATA_ROOT, not a constant


def signature_defaults(cls: type) -> dict:
    """The defaults of the class's own signature, which lists every knob (no **kwargs)."""
    parameters = inspect.signature(cls).parameters.values()
    assert all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in parameters), cls
    return {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default
        for p in parameters
        if p.default is not p.empty
    }


def config_node(path: Path) -> dict:
    """A config file's node: its whole content, or its `model` node for a file of the `model`
    group that says `# @package _global_` (the task models and their presets, which also pick
    an inference method)."""
    node = OmegaConf.to_container(OmegaConf.load(path))
    node.pop("defaults", None)
    return node.get("model", node) if path.parent.name == "model" else node


CONFIG_FILES = sorted(Path(CONFIG_DIR).glob("[mdio]*/*.yaml"))
# Files that name a class list its knobs; a preset (bnn_regressor, …) includes a task file and
# sets a few values, checked by validation like any override.
CLASS_FILES = [path for path in CONFIG_FILES if "_target_" in config_node(path)]
PRESETS = [path for path in CONFIG_FILES if path not in CLASS_FILES]


@pytest.mark.parametrize("path", CLASS_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_yaml_lists_exactly_the_signature_defaults(path):
    node = config_node(path)
    defaults = signature_defaults(get_class(node.pop("_target_")))
    for key in ENVIRONMENT & set(node):
        node.pop(key)
        defaults.pop(key)
    if path.parent.name == "optimizer":  # the knobs vnnlab offers of torch's optimiser
        defaults = {key: value for key, value in defaults.items() if key in node}
    derived = PASSED_IN if path.parent.name == "model" else set()
    assert node == {k: v for k, v in defaults.items() if k not in derived}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_preset_composes_and_validates(path):
    validate(composed(f"model={path.stem}", *PRESET_DATA.get(path.stem, [])))


def test_every_model_and_data_has_a_config():
    names = {p.stem for p in CONFIG_FILES}
    assert {"regressor", "classifier", "mlp_regressor", "bnn_regressor", "mlp_classifier",
            "bnn_classifier"} <= names  # fmt: skip
    assert {"synthetic", "mnist"} <= names
    assert {"map", "bbb", "mc_dropout", "ensemble", "laplace", "ivon"} <= names


def leaf_subclasses(base: type) -> set[type]:
    """The concrete classes below `base`: those no other class derives from."""
    children = set(base.__subclasses__())
    if not children:
        return {base}
    return set().union(*(leaf_subclasses(child) for child in children))


def all_subclasses(base: type) -> set[type]:
    children = set(base.__subclasses__())
    return children.union(*(all_subclasses(child) for child in children))


def import_every_module(package: str) -> None:
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
        importlib.import_module(module.name)


@pytest.mark.parametrize(
    ("group", "package", "base", "subclasses"),
    [
        ("model", "vnnlab.models", VNNModule, leaf_subclasses),
        ("data", "vnnlab.data", VNNDataModule, leaf_subclasses),
        ("inference", "vnnlab.inference", InferenceMethod, all_subclasses),
    ],
)
def test_every_class_has_exactly_one_yaml_and_every_yaml_a_class(group, package, base,
                                                                  subclasses):  # fmt: skip
    import_every_module(package)
    classes = {f"{c.__module__}.{c.__qualname__}" for c in subclasses(base)}
    targets = [config_node(path)["_target_"] for path in CLASS_FILES if path.parent.name == group]
    assert sorted(targets) == sorted(classes)  # one YAML per class, no YAML without its class
