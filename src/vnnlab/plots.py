"""Every figure vnnlab logs: pure functions of tensors that return a matplotlib Figure.

Figures are built with `Figure()` rather than pyplot, so no GUI backend or global state is
involved: safe on headless servers and in parallel jobs.
"""

import torch
from matplotlib.figure import Figure
from torch import Tensor


def regression_fit(
    x_train: Tensor,
    y_train: Tensor,
    grid: Tensor,
    f_true: Tensor,
    mean: Tensor,
    sd: Tensor | None,
    gap: tuple[float, float] | None = None,
) -> Figure:
    """Training points, true f, predictive mean and, when given, the mean ± 2 sd band (1-D x)."""
    figure = Figure(figsize=(7, 4))
    ax = figure.subplots()
    x, m = grid[:, 0].numpy(), mean[:, 0].numpy()
    ax.scatter(x_train[:, 0], y_train[:, 0], s=4, alpha=0.3, color="grey", label="training data")
    ax.plot(x, f_true[:, 0].numpy(), color="black", linestyle="--", label="true f")
    ax.plot(x, m, color="tab:blue", label="predictive mean")
    if sd is not None:
        band = 2 * sd[:, 0].numpy()
        ax.fill_between(x, m - band, m + band, color="tab:blue", alpha=0.25, label="± 2 sd")
    if gap is not None:
        ax.axvspan(*gap, color="tab:orange", alpha=0.1, label="gap (no training data)")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="best", fontsize="small")
    return figure


def reliability_diagram(probs: Tensor, labels: Tensor, n_bins: int) -> Figure:
    """Accuracy against confidence in `n_bins` equal-width bins, with the count per bin drawn
    underneath (log scale) so that sparse bins are visible."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    bins = torch.clamp((confidence * n_bins).long(), max=n_bins - 1)
    counts = torch.bincount(bins, minlength=n_bins).float()
    accuracy = torch.bincount(bins, weights=correct, minlength=n_bins) / counts.clamp_min(1)
    centres = ((torch.arange(n_bins) + 0.5) / n_bins).numpy()
    counts, accuracy = counts.numpy(), accuracy.numpy()

    figure = Figure(figsize=(5, 6))
    ax, ax_counts = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    filled = counts > 0
    ax.bar(centres[filled], accuracy[filled], width=1 / n_bins, edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize="small")
    ax_counts.bar(centres, counts, width=1 / n_bins, color="grey")
    ax_counts.set_yscale("log")
    ax_counts.set_xlabel("confidence")
    ax_counts.set_ylabel("count")
    return figure


def entropy_by_correctness(probs: Tensor, labels: Tensor) -> Figure:
    """Histograms of the predictive entropy H[p(y | x)] for correct and wrong test predictions."""
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=1)
    correct = probs.argmax(dim=1) == labels
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    bins = torch.linspace(0, float(torch.log(torch.tensor(probs.shape[1]))), 31)
    ax.hist(
        entropy[correct],
        bins=bins,
        density=True,
        alpha=0.6,
        label=f"correct ({int(correct.sum())})",
    )
    ax.hist(
        entropy[~correct],
        bins=bins,
        density=True,
        alpha=0.6,
        label=f"wrong ({int((~correct).sum())})",
    )
    ax.set_xlabel("predictive entropy (nats)")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    return figure
