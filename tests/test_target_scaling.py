"""model.standardize_target: the network predicts the target standardised on the training
split, and maps its outputs back, so that σ² and every metric stay in the target's units.
Checked by equivariance: on y and on a·y + b (σ² scaled by a²), a regressor trains the same
network, so its test RMSE scales by a and its NLL per point shifts by log a, exactly but for
float rounding; and by an independent computation of the scaling from the training rows."""

import math

import pandas as pd
import pytest
import torch

from helpers import QUICK, composed
from vnnlab.run.load import load_model
from vnnlab.run.training import train

A, B = 50.0, 1000.0  # y' = A·y + B: a measurement in other units, far from 0


@pytest.fixture
def table(tmp_path) -> str:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(300, 2, generator=generator) * 4 - 2
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(300, generator=generator)
    frame = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "y": y, "y_other_units": A * y + B})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return str(path)


def fit(table: str, store, target: str, *overrides: str):
    other = "y_other_units" if target == "y" else "y"
    cfg = composed(*QUICK, "data=tabular", f"data.path={table}", f"data.target={target}",
                   f"data.drop=[{other}]", "model.standardize_target=true",
                   f"tracking.uri=sqlite:///{store}", *overrides)  # fmt: skip
    return train(cfg)


@pytest.mark.parametrize("model", ["bnn_regressor", "mlp_regressor"])
def test_a_regressor_on_standardised_targets_is_equivariant_to_the_targets_units(
    table, store, model
):
    sigma2 = ["model.sigma2=0.01"] if model == "bnn_regressor" else []
    sigma2_other = [f"model.sigma2={0.01 * A**2}"] if model == "bnn_regressor" else []
    y = fit(table, store, "y", f"model={model}", *sigma2)
    other = fit(table, store, "y_other_units", f"model={model}", *sigma2_other)
    assert other.metrics["test/rmse"] == pytest.approx(A * y.metrics["test/rmse"], rel=1e-4)
    if model == "bnn_regressor":
        shifted = y.metrics["test/nll"] + math.log(A)
        assert other.metrics["test/nll"] == pytest.approx(shifted, rel=1e-4)
        assert other.metrics["test/coverage95"] == pytest.approx(y.metrics["test/coverage95"])
    train_targets = y.datamodule.split("train")[1]
    assert torch.allclose(y.model.target_loc, train_targets.mean(dim=0))
    assert torch.allclose(y.model.target_scale, train_targets.std(dim=0))
    reloaded = load_model(y.run_id, y.tracking_uri)  # the checkpoint carries the scaling
    x = y.datamodule.split("test")[0][:5]
    predictions = []
    for model_in_hand in (y.model, reloaded):
        torch.manual_seed(0)  # a BNN's predictive draws, alike
        predictions.append(model_in_hand.predict(x)[0])
    torch.testing.assert_close(*predictions)


def test_without_standardisation_the_model_keeps_no_scaling(store):
    result = train(composed(*QUICK, "model=bnn_regressor", f"tracking.uri=sqlite:///{store}"))
    assert "target_scale" not in result.model.state_dict()  # older checkpoints still load
    assert result.model.to_target_units(torch.ones(3, 1)).tolist() == [[1.0]] * 3
