"""Whether a BNN's posterior learns, as every BNN run reports it: the ρ's own learning rate,
the KL's share and the posterior sd per layer each epoch, the signal-to-noise figure, and a
warning when the ELBO was still rising at the end."""

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from helpers import task_model
from vnnlab import plots
from vnnlab.data.synthetic import SyntheticRegressionDataModule
from vnnlab.inference.bbb import ELBO_TOLERANCE, BayesByBackprop, recent_gain
from vnnlab.models.classification import Classifier
from vnnlab.models.regression import Regressor


def fit(model: pl.LightningModule, epochs: int) -> pl.Trainer:
    data = SyntheticRegressionDataModule(n_train=100, n_val=20, n_test=20, batch_size=25)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=data)
    return trainer


def test_rho_and_a_learned_sigma2_have_their_own_learning_rates():
    model = task_model(Regressor, BayesByBackprop, 1, 1, 100, lr=0.01, rho_lr_scale=5.0,
                       learn_sigma2=True, sigma2_lr_scale=2.0, lr_schedule="none")  # fmt: skip
    trainer = fit(model, epochs=1)
    groups = trainer.optimizers[0].param_groups
    names = {id(p): name for name, p in model.named_parameters()}
    by_lr = {group["lr"]: sorted(names[id(p)] for p in group["params"]) for group in groups}
    assert set(by_lr) == {0.01, 0.05, 0.02}
    assert all(name.endswith("_mu") for name in by_lr[0.01])
    assert by_lr[0.05] == sorted(n for n in names.values() if n.endswith("_rho"))
    assert by_lr[0.02] == ["noise.log_sigma2"]
    assert len(names) == sum(len(g["params"]) for g in groups)  # each parameter exactly once


def test_every_epoch_logs_the_kl_share_and_the_posterior_sd_of_each_layer():
    model = task_model(Regressor, BayesByBackprop, 1, 1, 100, hidden=[8, 4])
    torch.manual_seed(0)
    with torch.no_grad():  # spread out, so that a median is told apart from a mean
        for name, parameter in model.named_parameters():
            if name.endswith("_rho"):
                parameter.uniform_(-6, 0)
    trainer = fit(model, epochs=2)
    logged = trainer.callback_metrics
    kl, nll = logged["train/kl"], logged["train/expected_nll"]
    assert logged["train/kl_share"].item() == pytest.approx((kl / (kl + nll.abs())).item())
    # the sd as the epoch's last step found it: one Adam step (≤ 5 × lr = 0.05 in ρ) before
    # the end, so within 5% of the final one
    for i, layer in enumerate(model.inference.net.layers, start=1):
        every = torch.cat([layer.weight_rho.flatten(), layer.bias_rho]).detach()
        expected = F.softplus(every).median().item()
        assert logged[f"train/posterior_sd_layer{i}"].item() == pytest.approx(expected, rel=0.05)
    assert "train/posterior_sd_layer4" not in logged  # three layers
    assert len(model.inference.elbo_history) == 2
    assert model.inference.elbo_history[-1] == pytest.approx(logged["train/elbo"].item())


def test_recent_gain_is_the_rise_of_a_least_squares_line_over_the_last_tenth():
    rising = [0.5 * epoch for epoch in range(50)]  # +0.5 a step: the last 5 epochs rise by 2
    gain, standard_error, epochs = recent_gain(rising)
    assert (gain, epochs) == (pytest.approx(2.0), 5)
    assert standard_error == pytest.approx(0, abs=1e-9)
    assert recent_gain([1.0, 2.0]) is None  # too short to tell
    assert recent_gain(list(range(100)))[2] == 10


def warning_for(history: list[float], capsys) -> str:
    model = task_model(Regressor, BayesByBackprop, 1, 1, 100)
    model.inference.elbo_history = history
    model.on_train_end()
    return capsys.readouterr().err


def test_a_run_whose_elbo_was_still_rising_ends_with_one_warning_line(capsys):
    still_rising = [-10 + 0.1 * epoch for epoch in range(50)]
    message = warning_for(still_rising, capsys)
    assert message.startswith("vnnlab: warning: the ELBO was still rising")
    assert "+0.4 nats per training point over the last 5 of 50 epochs" in message
    assert message.count("\n") == 1


def test_a_converged_or_noisy_run_ends_without_a_warning(capsys):
    torch.manual_seed(0)
    flat = [-1.0] * 50
    assert warning_for(flat, capsys) == ""
    slow = [-1.0 + 0.1 * ELBO_TOLERANCE * epoch / 50 for epoch in range(50)]  # below tolerance
    assert warning_for(slow, capsys) == ""
    noisy = (-1.0 + 0.05 * torch.randn(50)).tolist()  # Monte Carlo noise, no trend
    noisy[-1] = noisy[-2] + 0.02
    assert warning_for(noisy, capsys) == ""


def test_the_elbo_history_travels_with_a_checkpoint():
    model, reloaded = (
        task_model(Classifier, BayesByBackprop, 4, 3, 100),
        task_model(Classifier, BayesByBackprop, 4, 3, 100),
    )
    model.inference.elbo_history = [-3.0, -2.0]
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    reloaded.on_load_checkpoint(checkpoint)
    assert reloaded.inference.elbo_history == [-3.0, -2.0]


def test_the_signal_to_noise_figure_and_the_model_draws_it():
    model = task_model(Regressor, BayesByBackprop, 1, 1, 100, hidden=[6])
    snr = {f"layer {i}": layer.signal_to_noise().detach()
           for i, layer in enumerate(model.inference.net.layers, start=1)}  # fmt: skip
    layer = model.inference.net.layers[0]
    expected = layer.weight_mu.abs() / F.softplus(layer.weight_rho)
    assert torch.allclose(snr["layer 1"][: expected.numel()], expected.flatten().detach())
    figure = plots.signal_to_noise(snr)
    density, cumulative = figure.axes
    assert "dB" in density.get_xlabel() and len(cumulative.get_lines()) == 2
    data = SyntheticRegressionDataModule(n_train=50, n_val=10, n_test=10)
    drawn = model.figures(data.info(), data.split("train"), data.split("test"))
    assert set(drawn) == {"fit.png", "signal_to_noise.png"}
