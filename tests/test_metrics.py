"""Test metrics and figures against computations written out by hand."""

import numpy as np
import pytest
import torch
from pytorch_lightning import Trainer
from torch.distributions import Normal

from helpers import task_model
from vnnlab import plots
from vnnlab.data.base import DataInfo
from vnnlab.data.batches import TensorBatches
from vnnlab.data.synthetic import SyntheticRegressionDataModule
from vnnlab.inference.bbb import BayesByBackprop
from vnnlab.models.classification import Classifier
from vnnlab.models.reduction import Autoencoder
from vnnlab.models.regression import Regressor


def hand_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int) -> float:
    """Σ_bins (n_b / N) |accuracy_b − confidence_b|, bins (k/n, (k+1)/n]."""
    confidence, predicted = probs.max(dim=1)
    total = 0.0
    for k in range(n_bins):
        inside = (confidence > k / n_bins) & (confidence <= (k + 1) / n_bins)
        if inside.any():
            accuracy = (predicted[inside] == labels[inside]).float().mean()
            total += inside.float().mean() * abs(accuracy - confidence[inside].mean())
    return float(total)


def evaluated(model, *tensors: torch.Tensor, batch_size: int) -> dict[str, float]:
    """The test metrics Lightning logs for `model` over these tensors, in several batches."""
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, dataloaders=TensorBatches(tensors, batch_size), verbose=False)
    return {k: v.item() for k, v in trainer.callback_metrics.items()}


def test_classification_metrics_cover_the_whole_test_set():
    torch.manual_seed(0)
    model = Classifier(4, 10, 100, hidden=[8])
    x, labels = torch.randn(500, 4), torch.randint(0, 10, (500,))
    metrics = evaluated(model, x, labels, batch_size=64)  # 8 batches, the last one short
    with torch.no_grad():
        probs = torch.softmax(model.inference.net(x), dim=1)
    assert metrics["test/acc"] == pytest.approx((probs.argmax(1) == labels).float().mean().item())
    nll = -torch.log(probs[torch.arange(500), labels]).mean()
    assert metrics["test/nll"] == pytest.approx(nll.item(), rel=1e-5)
    assert metrics["test/loss"] == pytest.approx(nll.item(), rel=1e-5)
    assert metrics["test/ece"] == pytest.approx(hand_ece(probs, labels, 15), abs=1e-5)


def test_regression_metrics_cover_the_whole_test_set():
    torch.manual_seed(0)
    model = Regressor(1, 1, 100, hidden=[4])
    x, y = torch.randn(50, 1), torch.randn(50, 1)
    metrics = evaluated(model, x, y, batch_size=16)
    with torch.no_grad():
        mse = ((y - model.inference.net(x)) ** 2).mean().item()
    assert metrics["test/mse"] == pytest.approx(mse, rel=1e-5)
    assert metrics["test/rmse"] == pytest.approx(mse**0.5, rel=1e-5)
    sigma2 = model.noise().item()  # the MAP network's predictive: N(f(x), σ²)
    nll = (0.5 * ((y - model.inference.net(x).detach()) ** 2) / sigma2
           + 0.5 * torch.log(torch.tensor(2 * torch.pi * sigma2))).mean().item()  # fmt: skip
    assert metrics["test/nll"] == pytest.approx(nll, rel=1e-5)


def test_bnn_validation_and_test_report_the_same_predictive_quantities():
    """val/nll and test/nll are one quantity (the predictive's) on different data, and so are
    mse and coverage95; the ELBO's data term has a name of its own, expected_nll."""
    torch.manual_seed(0)
    model = task_model(
        Regressor, BayesByBackprop, 1, 1, n_train=40, hidden=[8], sigma2=0.2, rho_init=-1.0
    )
    x, y = torch.randn(40, 1), torch.randn(40, 1)
    data = TensorBatches((x, y), 10)
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    torch.manual_seed(5)
    trainer.validate(model, dataloaders=data, verbose=False)
    val = {k.split("/")[1]: v.item() for k, v in trainer.callback_metrics.items()}
    torch.manual_seed(5)
    trainer.test(model, dataloaders=data, verbose=False)
    test = {k.split("/")[1]: v.item() for k, v in trainer.callback_metrics.items()}
    assert set(val) == set(test) == {
        "nll", "mse", "rmse", "coverage95", "sigma2", "loss", "elbo", "expected_nll", "kl",
    }  # fmt: skip
    assert val == pytest.approx(test)  # the same data and draws give the same numbers
    assert val["nll"] < val["expected_nll"]  # Jensen: −log E_q p < E_q −log p


def test_reliability_diagram_bars_are_per_bin_accuracy():
    # confidences 0.95 (bin 14) twice, one right; 0.55 (bin 8) once, right
    probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 1])
    figure = plots.reliability_diagram(probs, labels, n_bins=15)
    accuracy_axis = figure.axes[0]
    heights = sorted(bar.get_height() for bar in accuracy_axis.patches)
    assert heights == pytest.approx([0.5, 1.0])


def test_entropy_figure_splits_correct_and_wrong():
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    figure = plots.entropy_by_correctness(probs, torch.tensor([0, 0, 0]))
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels == ["correct (2)", "wrong (1)"]  # argmax of [0.5, 0.5] is class 0


def test_figures_draw_the_splits_they_are_handed():
    """Each task's figures come from the tensors passed in: the training points of the fit, the
    test examples of the classifier's and the autoencoder's figures."""
    torch.manual_seed(0)
    data = SyntheticRegressionDataModule(n_train=30, n_val=5, n_test=20)
    info, train, test = data.info(), data.split("train"), data.split("test")
    fit = Regressor(1, 1, 100, hidden=[4]).figures(info, train, test)["fit.png"]
    drawn = fit.axes[0].collections[0].get_offsets()  # the scatter of training points
    np.testing.assert_allclose(drawn, torch.cat(train, dim=1).numpy())

    x, labels = torch.randn(25, 4), torch.randint(0, 3, (25,))
    classifier = Classifier(4, 3, 100, hidden=[8])
    figures = classifier.figures(DataInfo(4, 5, "class", 3), (x[:5], labels[:5]), (x, labels))
    legend = [text.get_text() for text in figures["entropy.png"].axes[0].get_legend().get_texts()]
    with torch.no_grad():
        right = (classifier.predict_proba(x).argmax(dim=1) == labels).sum().item()
    assert legend == [f"correct ({right})", f"wrong ({25 - right})"]  # all 25 test examples

    x_test = torch.randn(40, 6)
    autoencoder = Autoencoder(6, latent_dim=2, hidden=[5])
    figures = autoencoder.figures(DataInfo(6, 10), (torch.randn(10, 6),), (x_test,))
    latent = figures["latent.png"].axes[0]
    assert sum(len(points.get_offsets()) for points in latent.collections) == 40


def test_bnn_predictive_is_the_mixture_of_its_posterior_samples():
    model = task_model(
        Regressor,
        BayesByBackprop,
        1,
        1,
        n_train=10,
        hidden=[8],
        sigma2=0.3,
        rho_init=-1.0,
        predict_samples=5,
    )
    x, y = torch.randn(4, 1), torch.randn(4, 1)
    torch.manual_seed(1)
    values = model.evaluate((x, y), "test")
    torch.manual_seed(1)
    f = model.inference.net(x, 5).detach()  # the same five posterior draws, (S, B, 1)
    mean, var = f.mean(dim=0), f.var(dim=0, unbiased=False) + 0.3  # epistemic + σ²
    assert torch.allclose(values["mse"], ((y - mean) ** 2)[:, 0])
    inside = ((y - mean).abs() <= 1.959964 * var.sqrt()).float()[:, 0]
    assert torch.equal(values["coverage95"], inside)
    density = Normal(f, 0.3**0.5).log_prob(y).exp().mean(dim=0)[:, 0]  # (1/S) Σ_s N(y; f_s, σ²)
    assert torch.allclose(values["nll"], -torch.log(density), atol=1e-6)
    expected_nll = -Normal(f, 0.3**0.5).log_prob(y).mean(dim=0)[:, 0]
    assert torch.allclose(values["expected_nll"], expected_nll, atol=1e-6)
    torch.manual_seed(1)
    predicted_mean, predicted_var = model.predict(x)
    assert torch.allclose(predicted_mean, mean) and torch.allclose(predicted_var, var)
