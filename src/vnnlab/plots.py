"""Every figure of one run's model vnnlab logs: pure functions of tensors that return a
matplotlib Figure. (A sweep's figure, a metric against a swept parameter, is drawn from a table
of runs in compare.py, which a sweep's parent process loads without torch.)

Figures are built with `Figure()` rather than pyplot, so no GUI backend or global state is
involved: safe on headless servers and in parallel jobs.
"""

import torch
from matplotlib import colormaps
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


def signal_to_noise(snr_by_layer: dict[str, Tensor]) -> Figure:
    """The signal-to-noise ratio |μ|/σ of every weight of a Bayesian network, in decibels
    (10 log₁₀ |μ|/σ), as Blundell et al. (2015, fig. 4) draw it before pruning by it: its
    density over all weights (left) and its cumulative distribution per layer (right). Weights
    with a low ratio are noise the posterior could drop; a posterior that never left a narrow
    initialisation has almost none."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    density, cumulative = figure.subplots(1, 2)
    decibels = {name: 10 * snr.clamp_min(1e-12).log10() for name, snr in snr_by_layer.items()}
    every = torch.cat(list(decibels.values())).numpy()
    density.hist(every, bins=60, density=True, color="tab:blue", alpha=0.8)
    density.set_xlabel("signal-to-noise |μ|/σ (dB)")
    density.set_ylabel("density")
    density.set_title(f"all {len(every)} weights and biases")
    for name, values in decibels.items():
        ordered = values.sort().values.numpy()
        share = torch.arange(1, len(ordered) + 1).numpy() / len(ordered)
        cumulative.plot(ordered, share, label=f"{name} ({len(ordered)})")
    cumulative.set_xlabel("signal-to-noise |μ|/σ (dB)")
    cumulative.set_ylabel("share of the layer's weights below")
    cumulative.legend(loc="best", fontsize="small")
    return figure


def reliability_diagram(probs: Tensor, labels: Tensor, n_bins: int) -> Figure:
    """Accuracy against confidence in `n_bins` equal-width bins, with the count per bin drawn
    underneath (log scale) so that sparse bins are visible."""
    figure = Figure(figsize=(5, 6))
    draw_reliability(figure, probs, labels, n_bins)
    return figure


def draw_reliability(figure, probs: Tensor, labels: Tensor, n_bins: int) -> None:
    """reliability_diagram's two panels on `figure` (a Figure or a SubFigure of a study's)."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    bins = torch.clamp((confidence * n_bins).long(), max=n_bins - 1)
    counts = torch.bincount(bins, minlength=n_bins).float()
    accuracy = torch.bincount(bins, weights=correct, minlength=n_bins) / counts.clamp_min(1)
    centres = ((torch.arange(n_bins) + 0.5) / n_bins).numpy()
    counts, accuracy = counts.numpy(), accuracy.numpy()

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


# --- dimension reduction: autoencoders, PCA, VAE ---------------------------------------------

MAX_RECONSTRUCTIONS = 10  # examples shown as images
MAX_CURVE_PANELS = 6  # examples shown as coordinate curves


def _grey_image(ax, values: Tensor, image_shape: tuple[int, int]) -> None:
    """One flattened image (H·W,) drawn grey on [0, 1] (values clipped), without ticks."""
    ax.imshow(values.reshape(image_shape).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def reconstructions(
    originals: Tensor, reconstructed: Tensor, image_shape: tuple[int, int] | None
) -> Figure:
    """Inputs x and their reconstructions x̂, both (B, n). Images: originals on the top row,
    reconstructions under them (up to 10). Otherwise one panel per example (up to 6): the
    coordinates of x (solid) and x̂ (dashed) against their index."""
    if image_shape is None:
        return _reconstructed_curves(originals[:MAX_CURVE_PANELS], reconstructed)
    count = min(len(originals), MAX_RECONSTRUCTIONS)
    figure = Figure(figsize=(1.2 * count, 2.6), layout="constrained")
    axes = figure.subplots(2, count, squeeze=False)  # (2, count)
    for column in range(count):
        _grey_image(axes[0, column], originals[column], image_shape)
        _grey_image(axes[1, column], reconstructed[column], image_shape)
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("reconstruction")
    return figure


def _reconstructed_curves(originals: Tensor, reconstructed: Tensor) -> Figure:
    count = len(originals)
    n_cols = min(count, 3)
    n_rows = -(-count // n_cols)
    figure = Figure(figsize=(3.2 * n_cols, 2.4 * n_rows + 0.4), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False, sharey=True).ravel()
    index = torch.arange(originals.shape[1]).numpy()
    for example, ax in enumerate(axes[:count]):
        ax.plot(index, originals[example].numpy(), color="black", label="input")
        ax.plot(
            index, reconstructed[example].numpy(), "--", color="tab:red", label="reconstruction"
        )
        ax.set_title(f"example {example}", fontsize="small")
    for ax in axes[count:]:
        ax.set_visible(False)
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncol=2)
    figure.supxlabel("input coordinate")
    return figure


def image_grid(
    images: Tensor, image_shape: tuple[int, int], title: str, n_cols: int = 10
) -> Figure:
    """Flattened images (N, H·W), e.g. decoded draws from the VAE prior, as a grey grid."""
    n_cols = min(n_cols, len(images))
    n_rows = -(-len(images) // n_cols)
    figure = Figure(figsize=(1.1 * n_cols, 1.1 * n_rows + 0.5), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
    for image, ax in zip(images, axes, strict=False):
        _grey_image(ax, image, image_shape)
    for ax in axes[len(images) :]:
        ax.set_visible(False)
    figure.suptitle(title)
    return figure


def latent_scatter(points: Tensor, labels: Tensor | None, xlabel: str, ylabel: str) -> Figure:
    """Codes or posterior means (N, 2), one colour per integer label: a legend for up to ten
    labels, a colour bar beyond."""
    figure = Figure(figsize=(6, 5), layout="constrained")
    ax = figure.subplots()
    x, y = points[:, 0].numpy(), points[:, 1].numpy()
    if labels is None:
        ax.scatter(x, y, s=4, alpha=0.5)
    elif len(classes := labels.unique()) <= 10:
        for label in classes.tolist():
            chosen = (labels == label).numpy()
            ax.scatter(x[chosen], y[chosen], s=4, alpha=0.5, label=str(label))
        ax.legend(title="label", fontsize="small", markerscale=3)
    else:
        cloud = ax.scatter(x, y, c=labels.numpy(), s=4, alpha=0.5, cmap="viridis")
        figure.colorbar(cloud, ax=ax, label="label")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return figure


def latent_traversal(
    decoded: Tensor, values: Tensor, image_shape: tuple[int, int] | None
) -> Figure:
    """decoded (L, V, n): row l is the decoder output d(z) as z_l moves over `values` (V,), the
    other coordinates at 0. Images: an L × V grid. Otherwise one panel per row, a curve of the
    coordinates per value, coloured from low to high."""
    n_latents, n_values = decoded.shape[:2]
    if image_shape is None:
        return _traversal_curves(decoded, values)
    figure = Figure(figsize=(1.1 * n_values, 1.1 * n_latents + 0.4), layout="constrained")
    axes = figure.subplots(n_latents, n_values, squeeze=False)  # (L, V)
    for latent in range(n_latents):
        for step in range(n_values):
            _grey_image(axes[latent, step], decoded[latent, step], image_shape)
        axes[latent, 0].set_ylabel(f"z{latent + 1}")
    for step in range(n_values):
        axes[0, step].set_title(f"{values[step].item():.3g}", fontsize="small")
    return figure


def _traversal_curves(decoded: Tensor, values: Tensor) -> Figure:
    n_latents, n_values, n_features = decoded.shape
    figure = Figure(figsize=(6, 2.2 * n_latents + 0.6), layout="constrained")
    axes = figure.subplots(n_latents, 1, squeeze=False, sharex=True)[:, 0]
    index = torch.arange(n_features).numpy()
    colours = colormaps["coolwarm"](torch.linspace(0, 1, n_values).numpy())
    for latent, ax in enumerate(axes):
        for step in range(n_values):
            label = f"{values[step].item():.3g}"
            ax.plot(index, decoded[latent, step].numpy(), color=colours[step], label=label)
        ax.set_ylabel(f"z{latent + 1} varied")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, title="value", loc="outside upper center", ncol=min(n_values, 9))
    axes[-1].set_xlabel("output coordinate")
    return figure
