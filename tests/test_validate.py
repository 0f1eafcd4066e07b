"""Every value a user can get wrong is caught before anything is built, with key and range."""

import pytest
from hydra import compose, initialize_config_dir

from vnnlab.errors import BadInputError
from vnnlab.train import CONFIG_DIR
from vnnlab.validate import validate


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lr=0", "model.lr=0 is not allowed: expected a number > 0"),
        ("model.sigma2=-1", "model.sigma2=-1 is not allowed: expected a number > 0"),
        ("model.mc_samples=0", "model.mc_samples=0 is not allowed: expected an integer ≥ 1"),
        ("model.mc_samples=2.5", "model.mc_samples=2.5"),
        (
            "model.kl=exact",
            "model.kl='exact' is not allowed: expected one of closed_form | monte_carlo",
        ),
        ("model.activation=gelu", "model.activation='gelu'"),
        ("model.hidden=[50,0]", "model.hidden=[50, 0]"),
        ("model.momentum=1.5", "expected a number in [0, 1)"),
        ("data.batch_size=0", "data.batch_size=0"),
        ("data.function=exp", "one of linear | sine | cubic"),
        (
            "data.gap=[2.0,1.0]",
            "data.gap=[2.0, 1.0] is not allowed: expected [a, b] with -3.0 < a < b < 3.0",
        ),
        ("data.x_high=-5", "data.x_high=-5"),
        ("seed=-1", "seed=-1"),
        (
            "+trainer.no_such_arg=1",
            "trainer.no_such_arg=1 is not allowed: expected a pytorch_lightning.Trainer",
        ),
    ],
)
def test_out_of_range_values_are_named(override, message):
    with pytest.raises(BadInputError) as caught:
        validate(composed(override))
    assert message in str(caught.value)
    assert "\\n" not in str(caught.value)


def test_nesterov_needs_sgd_with_momentum():
    with pytest.raises(BadInputError, match="model.nesterov"):
        validate(composed("model.nesterov=true", "model.optimizer=sgd"))
    validate(composed("model.nesterov=true", "model.optimizer=sgd", "model.momentum=0.9"))


def test_monte_carlo_kl_needs_sampled_weights():
    with pytest.raises(BadInputError, match="model.kl"):
        validate(composed("model.kl=monte_carlo", "model.estimator=local_reparam"))


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=mlp_regressor", "data.gap=[-1.0,1.0]"],
        ["model=bnn_classifier", "data=mnist"],
        ["model.kl=monte_carlo", "model.mc_samples=10", "model.estimator=weights"],
    ],
)
def test_valid_configs_pass(overrides):
    validate(composed(*overrides))
