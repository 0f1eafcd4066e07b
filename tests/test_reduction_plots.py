"""The dimension-reduction figures: each drawn once, checked for what it must show."""

import io

import torch
from matplotlib.colors import to_rgba

from vnnlab import plots
from vnnlab.sweep import compare


def rendered(figure):
    figure.savefig(io.BytesIO(), format="png", dpi=30)  # drawing must not fail either
    return figure


def image_axes(figure):
    return [ax for ax in figure.axes if ax.get_visible() and ax.images]


def test_reconstructions_as_images_show_inputs_over_reconstructions():
    originals, reconstructed = torch.rand(12, 16), torch.rand(12, 16) * 3 - 1
    figure = rendered(plots.reconstructions(originals, reconstructed, (4, 4)))
    axes = image_axes(figure)
    assert len(axes) == 20  # at most 10 examples, two rows
    top, bottom = axes[0].images[0].get_array(), axes[10].images[0].get_array()
    assert torch.allclose(torch.as_tensor(top.data), originals[0].reshape(4, 4))
    assert bottom.min() >= 0 and bottom.max() <= 1  # clipped to the grey scale


def test_reconstructions_as_curves_draw_input_solid_and_reconstruction_dashed():
    figure = rendered(plots.reconstructions(torch.randn(8, 5), torch.randn(8, 5), None))
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert len(visible) == 6
    for ax in visible:
        assert [line.get_linestyle() for line in ax.lines] == ["-", "--"]
        assert len(ax.lines[0].get_xdata()) == 5


def test_image_grid_fills_rows_and_titles_the_figure():
    figure = rendered(plots.image_grid(torch.rand(13, 9), (3, 3), "prior samples", n_cols=5))
    assert len(figure.axes) == 15 and len(image_axes(figure)) == 13
    assert figure.get_suptitle() == "prior samples"


def test_latent_scatter_legend_per_label_or_colour_bar():
    points = torch.randn(60, 2)
    figure = rendered(plots.latent_scatter(points, torch.arange(60) % 3, "z1", "z2"))
    ax = figure.axes[0]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["0", "1", "2"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 60
    many = rendered(plots.latent_scatter(points, torch.arange(60) % 15, "z1", "z2"))
    assert len(many.axes) == 2 and many.axes[0].get_legend() is None  # plot and colour bar
    plain = rendered(plots.latent_scatter(points, None, "u", "v"))
    assert plain.axes[0].get_legend() is None and plain.axes[0].get_xlabel() == "u"


def test_latent_traversal_images_and_curves():
    values = torch.linspace(-2, 2, 5)
    grid = rendered(plots.latent_traversal(torch.rand(3, 5, 16), values, (4, 4)))
    assert len(image_axes(grid)) == 15
    assert [ax.get_ylabel() for ax in grid.axes[::5]] == ["z1", "z2", "z3"]
    curves = rendered(plots.latent_traversal(torch.randn(2, 4, 6), values[:4], None))
    assert len(curves.axes) == 2 and all(len(ax.lines) == 4 for ax in curves.axes)
    first, last = curves.axes[0].lines[0], curves.axes[0].lines[-1]
    assert to_rgba(first.get_color()) != to_rgba(last.get_color())


def test_metric_against_parameter_one_line_per_group():
    table = [
        {"model.sigma2": s2, "model.latent_dim": m, "test/kl": m / s2}
        for s2 in (1.0, 0.01, 0.1)
        for m in (2, 8)
    ]
    table.append({"model.sigma2": 0.5, "model.latent_dim": 2})  # a run without the metric
    figure = compare.metric_against_parameter(table, "model.sigma2", "test/kl", "model.latent_dim")
    ax = rendered(figure).axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["model.latent_dim=2", "model.latent_dim=8"]
    assert list(ax.lines[0].get_xdata()) == [0.01, 0.1, 1.0]  # sorted, the metric-less run left out
    assert list(ax.lines[1].get_ydata()) == [800.0, 80.0, 8.0]
    assert ax.get_xscale() == "log" and ax.lines[0].get_marker() == "o"
    narrow = [{"lr": lr, "loss": lr} for lr in (1.0, 5.0, 10.0)]
    single = compare.metric_against_parameter(narrow, "lr", "loss", None).axes[0]
    assert single.get_xscale() == "linear" and len(single.lines) == 1
    assert single.get_legend() is None
