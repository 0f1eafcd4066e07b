"""Every value a user can get wrong is caught before anything is built, with key and range.

Types and ranges come from the annotated signatures (vnnlab.schema) and Lightning's Trainer."""

import typing

import pytest
from hydra import compose, initialize_config_dir

from vnnlab import CONFIG_DIR
from vnnlab.errors import BadInputError
from vnnlab.models.layers import ACTIVATIONS, Activation
from vnnlab.schema import Range
from vnnlab.validate import allows, describe, validate


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lr=0", "model.lr=0 is not allowed: expected a number > 0"),
        ("model.lr=fast", "model.lr='fast' is not allowed: expected a number > 0"),
        ("model.sigma2=-1", "model.sigma2=-1 is not allowed: expected a number > 0"),
        ("model.sigma2=nan", "model.sigma2=nan is not allowed"),
        (
            "inference.mc_samples=0",
            "inference.mc_samples=0 is not allowed: expected an integer ≥ 1",
        ),
        (
            "inference.mc_samples=2.5",
            "inference.mc_samples=2.5 is not allowed: expected an integer ≥ 1",
        ),
        ("inference.mc_samples=true", "inference.mc_samples=True is not allowed"),
        (
            "inference.kl=exact",
            "inference.kl='exact' is not allowed: expected one of closed_form | monte_carlo",
        ),  # fmt: skip
        ("model.activation=gelu", "model.activation='gelu' is not allowed: expected one of relu"),
        (
            "model.hidden=[50,0]",
            "model.hidden=[50, 0] is not allowed: expected a list of integers ≥ 1",
        ),  # fmt: skip
        ("model.hidden=50", "model.hidden=50 is not allowed: expected a list of"),
        (
            "optimizer=sgd optimizer.momentum=1.5",
            "optimizer.momentum=1.5 is not allowed: expected a number in [0, 1)",
        ),
        ("model.lr_gamma=0", "model.lr_gamma=0 is not allowed: expected a number in (0, 1]"),
        (
            "optimizer=sgd optimizer.nesterov=maybe",
            "optimizer.nesterov='maybe' is not allowed: expected true or false",
        ),
        ("inference.prior_std=-2", "inference.prior_std=-2 is not allowed: expected a number > 0"),
        ("inference=ensemble inference.members=0", "inference.members=0 is not allowed"),
        (
            "inference=mc_dropout inference.dropout=1",
            "inference.dropout=1 is not allowed: expected a number in [0, 1)",
        ),
        (
            "optimizer.weight_decay=-1",
            "optimizer.weight_decay=-1 is not allowed: expected a number ≥ 0",
        ),
        (
            "inference=laplace model.noise=heteroscedastic",
            "inference='laplace' is not allowed: expected model.noise=homoscedastic",
        ),
        ("inference=mc_dropout model.noise=heteroscedastic inference.dropout=0.1", None),
        (
            "inference=map model.noise=heteroscedastic model.learn_sigma2=true",
            "model.learn_sigma2=True is not allowed",
        ),
        (
            "model=vae inference=laplace",
            "inference='laplace' is not allowed: expected none with model=VAE",
        ),
        ("model.noise=loud", "model.noise='loud' is not allowed: expected one of auto"),
        ("data.batch_size=0", "data.batch_size=0 is not allowed: expected an integer ≥ 1"),
        ("data.function=exp", "data.function='exp' is not allowed: expected one of linear | sine"),
        ("data.x_low=abc", "data.x_low='abc' is not allowed: expected a number"),
        ("data.noise_var=-0.1", "data.noise_var=-0.1 is not allowed: expected a number ≥ 0"),
        ("data.n_train=0", "data.n_train=0 is not allowed: expected an integer ≥ 1"),
        (
            "data.gap=[2.0,1.0]",
            "data.gap=[2.0, 1.0] is not allowed: expected [a, b] with -3.0 < a < b < 3.0",
        ),  # fmt: skip
        ("data.x_high=-5", "data.x_high=-5 is not allowed: expected a number > data.x_low=-3.0"),
        ("seed=-1", "seed=-1 is not allowed: expected an integer ≥ 0"),
        ("trainer.max_epochs=-5", "trainer.max_epochs=-5 is not allowed: expected an integer ≥ 1"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 is not allowed"),
        ("trainer.max_steps=-7", "trainer.max_steps=-7 is not allowed: expected an integer ≥ -1"),
        ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5 is not allowed"),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 is not allowed"),
        ("trainer.enable_progress_bar=sometimes", "trainer.enable_progress_bar='sometimes'"),
        ("trainer.precision=8", "trainer.precision=8 is not allowed: expected one of 64 | 32"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 is not allowed"),
        ("checkpoint.every_n_epochs=0", "checkpoint.every_n_epochs=0 is not allowed"),
        (
            "+trainer.no_such_arg=1",
            "trainer.no_such_arg=1 is not allowed: expected a pytorch_lightning.Trainer argument",
        ),  # fmt: skip
        (
            "+model.no_such_key=1",
            "model.no_such_key=1 is not allowed: expected a key of Regressor: hidden, activation",
        ),  # fmt: skip
        ("+model.in_features=3", "model.in_features=3 is not allowed"),  # the data decides it
        ("model._target_=vnnlab.models.nothing.Here", "model._target_='vnnlab.models.nothing"),
    ],
)
def test_out_of_range_values_are_named(override, message):
    if message is None:  # allowed: nothing raised
        validate(composed(*override.split()))
        return
    with pytest.raises(BadInputError) as caught:
        validate(composed(*override.split()))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_nesterov_needs_sgd_with_momentum():
    with pytest.raises(BadInputError, match="optimizer.nesterov"):
        validate(composed("optimizer.nesterov=true", "optimizer=sgd"))
    validate(composed("optimizer.nesterov=true", "optimizer=sgd", "optimizer.momentum=0.9"))


def test_monte_carlo_kl_needs_sampled_weights():
    with pytest.raises(BadInputError, match="inference.kl") as caught:
        validate(composed("inference.kl=monte_carlo", "inference.estimator=local_reparam"))
    assert "add inference.estimator=weights" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["inference.prior=scale_mixture"],  # the regressor's defaults: local_reparam, closed_form
         "inference.estimator='local_reparam' is not allowed: expected weights with "
         "inference.prior=scale_mixture (a KL without closed form, estimated on sampled weights): "
         "add inference.estimator=weights inference.kl=monte_carlo"),
        (["inference.prior=scale_mixture", "inference.estimator=weights"],
         "inference.kl='closed_form' is not allowed: expected monte_carlo with "
         "inference.prior=scale_mixture (a KL without closed form, estimated on sampled weights): "
         "add inference.kl=monte_carlo"),
        (["model=bnn_classifier", "data=mnist", "inference.prior=scale_mixture"],
         "inference.kl='closed_form' is not allowed: expected monte_carlo"),
        (["model=vae", "model.likelihood=bernoulli", "model.learn_sigma2=true"],
         "model.learn_sigma2=True is not allowed: expected false with model.likelihood=bernoulli"),
        (["model.learn_sigma2=maybe"],
         "model.learn_sigma2='maybe' is not allowed: expected true or false or one of optimal"),
        (["inference.prior_pi=1"],
         "inference.prior_pi=1 is not allowed: expected a number in (0, 1)"),
        (["inference.rho_lr_scale=0"],
         "inference.rho_lr_scale=0 is not allowed: expected a number > 0"),
    ],
)  # fmt: skip
def test_the_scale_mixture_and_learned_sigma2_are_refused_where_they_cannot_work(
    overrides, message
):
    with pytest.raises(BadInputError) as caught:
        validate(composed(*overrides))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [
            "inference.prior=scale_mixture",
            "inference.estimator=weights",
            "inference.kl=monte_carlo",
        ],
        [
            "model=bnn_classifier",
            "data=mnist",
            "inference.prior=scale_mixture",
            "inference.kl=monte_carlo",
        ],
        ["model.learn_sigma2=true", "model.sigma2=0.001"],
        ["model=vae", "model.learn_sigma2=optimal"],
        ["model=vae", "model.learn_sigma2=true"],
    ],
)
def test_the_new_options_pass_where_they_work(overrides):
    validate(composed(*overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=mlp_regressor", "data.gap=[-1.0,1.0]"],
        ["model=bnn_classifier", "data=mnist"],
        ["inference.kl=monte_carlo", "inference.mc_samples=10", "inference.estimator=weights"],
        ["model.lr=1", "model.lr_gamma=1", "trainer.max_steps=-1", "trainer.precision=16-mixed"],
        ["trainer.limit_train_batches=0.5", "trainer.limit_val_batches=3", "trainer.devices=auto"],
    ],
)
def test_valid_configs_pass(overrides):
    validate(composed(*overrides))


def test_range_and_type_reading_by_hand():
    half_open = typing.Annotated[float, Range(low=0, high=1, high_open=True)]
    assert allows(half_open, 0) and allows(half_open, 0.5) and not allows(half_open, 1.0)
    assert not allows(half_open, "0.5") and not allows(half_open, True)
    assert describe(half_open) == "a number in [0, 1)"
    assert allows(int | None, None) and not allows(int, None) and not allows(int, 1.0)
    assert describe(typing.Literal["a", "b"]) == "one of a | b"


def test_the_activation_type_lists_exactly_the_activations_built():
    assert set(typing.get_args(Activation)) == set(ACTIVATIONS)
