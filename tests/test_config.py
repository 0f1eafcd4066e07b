"""The YAML files list every knob so `model.x=…` works without "+"; the constructor
signatures stay the truth: every YAML value must equal its signature default."""

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from vnnlab.train import CONFIG_DIR

DATA_DERIVED = {"in_features", "out_features", "n_train"}  # train() passes these from the data
ENVIRONMENT = {"root"}  # read from $VNNLAB_DATA_ROOT, not a constant


def signature_defaults(cls: type) -> dict:
    """Defaults of cls.__init__ and of every __init__ its **kwargs reach along the MRO."""
    defaults = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass.__module__.split(".")[0] != "vnnlab":
            continue
        for name, p in inspect.signature(init).parameters.items():
            if p.default is not inspect.Parameter.empty:
                defaults[name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return defaults


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
