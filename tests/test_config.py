"""The YAML files list every knob so `model.x=…` works without "+"; the constructor
signatures stay the truth: every YAML value must equal its signature default."""

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from vnnlab import CONFIG_DIR
from vnnlab.data.base import VNNDataModule
from vnnlab.models.base import VNNModule

DATA_DERIVED = {"in_features", "out_features", "n_train"}  # train() passes these from the data
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


CONFIG_FILES = sorted(Path(CONFIG_DIR).glob("[md]*/*.yaml"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_yaml_lists_exactly_the_signature_defaults(path):
    node = OmegaConf.to_container(OmegaConf.load(path))
    defaults = signature_defaults(get_class(node.pop("_target_")))
    for key in ENVIRONMENT & set(node):
        node.pop(key)
        defaults.pop(key)
    derived = DATA_DERIVED if path.parent.name == "model" else set()
    assert node == {k: v for k, v in defaults.items() if k not in derived}


def test_every_model_and_data_has_a_config():
    names = {p.stem for p in CONFIG_FILES}
    assert {"mlp_regressor", "bnn_regressor", "mlp_classifier", "bnn_classifier"} <= names
    assert {"synthetic", "mnist"} <= names


def leaf_subclasses(base: type) -> set[type]:
    """The concrete classes below `base`: those no other class derives from."""
    children = set(base.__subclasses__())
    if not children:
        return {base}
    return set().union(*(leaf_subclasses(child) for child in children))


def import_every_module(package: str) -> None:
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
        importlib.import_module(module.name)


@pytest.mark.parametrize(
    ("group", "package", "base"),
    [("model", "vnnlab.models", VNNModule), ("data", "vnnlab.data", VNNDataModule)],
)
def test_every_class_has_exactly_one_yaml_and_every_yaml_a_class(group, package, base):
    import_every_module(package)
    classes = {f"{c.__module__}.{c.__qualname__}" for c in leaf_subclasses(base)}
    targets = [
        OmegaConf.load(path)["_target_"]
        for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))
    ]
    assert sorted(targets) == sorted(classes)  # one YAML per class, no YAML without its class
