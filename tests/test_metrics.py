"""Test metrics and figures against computations written out by hand."""

import pytest
import torch
from torch.distributions import Normal

from vnnlab import plots
from vnnlab.models.bnn import BNNRegressor
from vnnlab.models.mlp import MLPClassifier, MLPRegressor


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


def test_classification_metrics():
    torch.manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 10), dim=1)
    labels = torch.randint(0, 10, (500,))
    metrics = MLPClassifier(4, 10).test_metrics({"labels": labels, "probs": probs})
    assert metrics["acc"] == pytest.approx((probs.argmax(1) == labels).float().mean().item())
    nll = -torch.log(probs[torch.arange(500), labels]).mean()
    assert metrics["nll"] == pytest.approx(nll.item(), rel=1e-5)
    assert metrics["ece"] == pytest.approx(hand_ece(probs, labels, 15), abs=1e-5)


def test_regression_metrics():
    y = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    mean = torch.tensor([[1.5], [2.0], [2.0], [4.0]])
    metrics = MLPRegressor(1, 1).test_metrics({"y": y, "mean": mean})
    assert metrics["mse"] == pytest.approx((0.25 + 0 + 1 + 0) / 4)
    assert metrics["rmse"] == pytest.approx(((0.25 + 1) / 4) ** 0.5)
    assert "coverage95" not in metrics  # a deterministic model has no predictive interval


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


def test_bnn_predictive_is_the_mixture_of_its_posterior_samples():
    model = BNNRegressor(1, 1, n_train=10, hidden=[8], sigma2=0.3, rho_init=-1.0, predict_samples=5)
    x, y = torch.randn(4, 1), torch.randn(4, 1)
    torch.manual_seed(1)
    predictions = model.predict_batch((x, y))
    torch.manual_seed(1)
    f = model.net(x, 5).detach()  # the same five posterior draws, (S, B, 1)
    assert torch.allclose(predictions["mean"], f.mean(dim=0))
    assert torch.allclose(predictions["var"], f.var(dim=0, unbiased=False) + 0.3)  # epistemic + σ²
    density = Normal(f, 0.3**0.5).log_prob(y).exp().mean(dim=0)[:, 0]  # (1/S) Σ_s N(y; f_s, σ²)
    assert torch.allclose(predictions["nll"], -torch.log(density), atol=1e-6)
