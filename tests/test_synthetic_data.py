"""The synthetic regression data: known f, known noise, an honest gap."""

import math

import pytest
import torch

from vnnlab.data.synthetic import SyntheticRegressionDataModule


def loaded(**kwargs) -> SyntheticRegressionDataModule:
    datamodule = SyntheticRegressionDataModule(**kwargs)
    datamodule.setup()
    return datamodule


@pytest.mark.parametrize(
    ("function", "reference"),
    [("linear", lambda u: u), ("sine", math.sin), ("cubic", lambda u: u**3)],
)
def test_targets_are_true_function_plus_noise_of_known_variance(function, reference):
    dm = loaded(function=function, input_dim=2, noise_var=0.04, n_train=20_000)
    x, y = dm.splits["train"]
    f = torch.tensor([[reference((a + b).item() / math.sqrt(2))] for a, b in x])
    residual = (y - f)[:, 0]
    assert residual.var().item() == pytest.approx(0.04, rel=0.05)
    assert abs(residual.mean().item()) < 4 * 0.2 / math.sqrt(20_000)
    assert x.min() >= -3 and x.max() <= 3


def test_gap_has_no_training_or_validation_inputs_but_test_inputs():
    dm = loaded(gap=(-1.0, 0.5), n_train=5000, n_val=1000, n_test=5000)
    for split in ("train", "val"):
        x = dm.splits[split][0][:, 0]
        assert not ((x > -1.0) & (x < 0.5)).any()
        assert (x < -2.5).any() and (x > 2.5).any()  # the rest of the range is still covered
    x_test = dm.splits["test"][0][:, 0]
    assert ((x_test > -1.0) & (x_test < 0.5)).float().mean() == pytest.approx(1.5 / 6, abs=0.03)


def test_splits_are_seeded():
    first, second = loaded(seed=3), loaded(seed=3)
    assert torch.equal(first.splits["train"][0], second.splits["train"][0])
    assert not torch.equal(first.splits["train"][0], loaded(seed=4).splits["train"][0])


def test_reference_metrics_are_the_noise_drawn():
    dm = loaded(noise_var=0.04, n_test=5000)  # not the default σ² = 0.01
    x, y = dm.splits["test"]
    oracle_mse = ((y - torch.sin(x)) ** 2).mean().item()  # the default f is sin
    assert dm.reference_metrics() == {"noise_floor": 0.04, "oracle_mse": pytest.approx(oracle_mse)}
    # The noise drawn has variance σ²: the test set's mean squared noise is within a few
    # standard errors (σ²·√(2/n_test)) of the noise floor.
    assert abs(oracle_mse - 0.04) < 4 * 0.04 * math.sqrt(2 / 5000)


def test_batches_cover_the_split_once_per_epoch():
    dm = loaded(n_train=103, batch_size=10)
    loader = dm.train_dataloader()
    assert len(loader) == 11
    x = torch.cat([batch[0] for batch in loader])
    assert sorted(x[:, 0].tolist()) == sorted(dm.splits["train"][0][:, 0].tolist())
    first_epoch = torch.cat([batch[0] for batch in loader])
    assert not torch.equal(x, first_epoch)  # reshuffled each epoch
