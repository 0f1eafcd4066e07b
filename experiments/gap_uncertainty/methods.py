"""Uncertainty away from the data, for every inference method: each method trained on the gap
data (`+experiment=gap_uncertainty inference=<method>`, one store in a temporary folder), then
its predictive sd where training inputs are dense, in the gap, and beyond the training range,
as JSON on stdout (with the seconds each run took) and one figure, a panel per method:

    python experiments/gap_uncertainty/methods.py [--out methods.png] [override ...]

Regions (grids of 200 points, x_low = −3, x_high = 3, gap (−1, 1) in the study's config):
dense = [x_low + 0.1, gap_a − 0.3] ∪ [gap_b + 0.3, x_high − 0.1]; gap = [gap_a + 0.1,
gap_b − 0.1]; beyond = [x_low − 1.5, x_low − 0.5] ∪ [x_high + 0.5, x_high + 1.5]. A method
that knows where it has seen no data has both ratios (sd in the region over sd where dense)
well above 1; σ, the noise's sd, is the floor of every sd here (0.1 at noise_var 0.01).
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from matplotlib.figure import Figure

from vnnlab import CONFIG_DIR
from vnnlab.run.training import train

# label → the overrides that choose the method (Foong et al. 2019 contrast mean-field VI and
# MC dropout with a full-covariance Laplace: the last two rows)
METHODS = {
    "map": ["inference=map"],
    "bbb": ["inference=bbb"],
    "mc_dropout": ["inference=mc_dropout"],
    "ensemble": ["inference=ensemble"],
    "ivon": ["inference=ivon"],
    "laplace (last layer, kron)": ["inference=laplace"],
    "laplace (all weights, full)": [
        "inference=laplace",
        "inference.subset_of_weights=all",
        "inference.hessian_structure=full",
    ],
}


def regions(cfg) -> dict[str, torch.Tensor]:
    (a, b), low, high = cfg.data.gap, cfg.data.x_low, cfg.data.x_high

    def span(start: float, end: float, n: int = 100) -> torch.Tensor:
        return torch.linspace(start, end, n)

    return {
        "dense": torch.cat([span(low + 0.1, a - 0.3), span(b + 0.3, high - 0.1)]),
        "gap": span(a + 0.1, b - 0.1, 200),
        "beyond": torch.cat([span(low - 1.5, low - 0.5), span(high + 0.5, high + 1.5)]),
    }


def predictive_sd(model, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return model.predict(x.unsqueeze(1))[1].sqrt().squeeze(1)


def measure(label: str, overrides: list[str], folder: Path) -> tuple[dict, dict]:
    """One method's run: its sd per region and ratios (JSON), and what its panel draws."""
    store = f"sqlite:///{folder / 'mlflow.db'}"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        fixed = [f"tracking.uri={store}", "+experiment=gap_uncertainty",
                 "trainer.enable_progress_bar=false"]  # fmt: skip
        cfg = compose("config", overrides=[*fixed, *overrides])
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    model = result.model.eval()
    sd = {name: predictive_sd(model, x).mean().item() for name, x in regions(cfg).items()}
    report = {
        "method": label,
        "overrides": overrides,
        "seconds": round(seconds, 1),
        "sd": sd,
        "gap_over_dense": sd["gap"] / sd["dense"],
        "beyond_over_dense": sd["beyond"] / sd["dense"],
        "test_nll": result.metrics.get("test/nll"),
        "test_mse": result.metrics.get("test/mse"),
    }
    grid = torch.linspace(cfg.data.x_low - 1.5, cfg.data.x_high + 1.5, 400)
    torch.manual_seed(0)
    with torch.no_grad():
        mean, var = model.predict(grid.unsqueeze(1))
    x_train, y_train = result.datamodule.split("train")
    panel = {"grid": grid, "mean": mean[:, 0], "sd": var[:, 0].sqrt(), "x": x_train[:, 0],
             "y": y_train[:, 0], "f": result.datamodule.true_function(grid.unsqueeze(1))[:, 0],
             "gap": tuple(cfg.data.gap)}  # fmt: skip
    return report, panel


def figure(panels: dict[str, dict]) -> Figure:
    """A panel per method: training data, true f, predictive mean ± 2 sd, the gap shaded."""
    columns = 4
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(4 * columns, 3 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, (label, p) in zip(axes, panels.items(), strict=False):
        ax.scatter(p["x"], p["y"], s=2, alpha=0.3, color="grey")
        ax.plot(p["grid"], p["f"], color="black", linestyle="--", linewidth=1)
        ax.plot(p["grid"], p["mean"], color="tab:blue")
        band = 2 * p["sd"]
        ax.fill_between(p["grid"], p["mean"] - band, p["mean"] + band, color="tab:blue", alpha=0.25)
        ax.axvspan(*p["gap"], color="tab:orange", alpha=0.1)
        ax.set_title(label, fontsize="medium")
        ax.set_ylim(-3, 3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("methods.png"))
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("overrides", nargs="*", help="added to every method's run (seed=1 …)")
    args = parser.parse_args()
    out = args.out.resolve()
    folder = Path(tempfile.mkdtemp(prefix="vnnlab-gap-methods-"))
    os.chdir(folder)  # Hydra-less runs: their checkpoints go to the temporary folder
    reports, panels = [], {}
    for label in args.methods:
        report, panels[label] = measure(label, METHODS[label] + args.overrides, folder)
        reports.append(report)
        print(json.dumps(report), flush=True)
    figure(panels).savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
