"""MNIST, every inference method, in a store of `+experiment=mnist_methods` runs: per method the
run its validation chose (lowest val/nll among its FINISHED runs), then

- the table on the test set: accuracy, NLL, ECE, seconds per epoch (train and validation);
- the same models on the test set rotated by 0°, 15°, …, 180° (data.mnist.rotated): accuracy,
  NLL and ECE against the angle, one line per method (Ovadia et al. 2019, figure 1), and each
  method's ECE at 60° and beyond beside the MAP network's;
- the AUROC of the predictive entropy for telling the 90°-rotated test digits from the upright
  ones;
- each method's reliability diagram on the upright test set, in one figure.

    python experiments/mnist_methods/shift.py --root ../shared/data --tracking-uri sqlite:///mlflow.db

Prints the tables; writes shift.png and reliability.png to --out (default: this folder).
"""

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from torchmetrics.functional.classification import binary_auroc, multiclass_calibration_error

from vnnlab import plots, tags
from vnnlab.data.mnist import MNISTDataModule, rotated
from vnnlab.models.classification import ECE_BINS
from vnnlab.run.load import load_model
from vnnlab.sweep.compare import to_markdown

ANGLES = list(range(0, 181, 15))
SHIFTED = [angle for angle in ANGLES if angle >= 60]
CHUNK = 1000  # test images per predictive call


def chosen_runs(client: MlflowClient) -> dict[str, Run]:
    """Per inference method, its FINISHED run with the lowest val/nll (a choice on validation)."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "attributes.status = 'FINISHED'")
    best: dict[str, Run] = {}
    for run in runs:
        method, score = run.data.tags.get(tags.INFERENCE), run.data.metrics.get("val/nll")
        if method is None or score is None or tags.PARENT_RUN not in run.data.tags:
            continue
        if method not in best or score < best[method].data.metrics["val/nll"]:
            best[method] = run
    return dict(sorted(best.items()))


def seconds_per_epoch(client: MlflowClient, run: Run) -> float:
    """Wall time between the first and the last epoch's train/loss, per epoch."""
    history = client.get_metric_history(run.info.run_id, "train/loss")
    stamps = sorted(metric.timestamp for metric in history)
    return (stamps[-1] - stamps[0]) / 1000 / max(len(stamps) - 1, 1)


def predictive(model, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return torch.cat([model.predict_proba(chunk) for chunk in x.split(CHUNK)])


def scores(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    nll = -probs.gather(1, labels.unsqueeze(1)).clamp_min(1e-12).log().mean()
    ece = multiclass_calibration_error(probs, labels, probs.shape[1], n_bins=ECE_BINS, norm="l1")
    return {"acc": (probs.argmax(1) == labels).float().mean().item(), "nll": nll.item(),
            "ece": ece.item()}  # fmt: skip


def entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


def shift_figure(curves: dict[str, dict[int, dict[str, float]]]) -> Figure:
    figure = Figure(figsize=(14, 4), layout="constrained")
    for ax, metric in zip(figure.subplots(1, 3), ("acc", "nll", "ece"), strict=True):
        for method, by_angle in curves.items():
            ax.plot(ANGLES, [by_angle[a][metric] for a in ANGLES], marker="o", ms=3, label=method)
        ax.set_xlabel("rotation of the test digits (degrees)")
        ax.set_ylabel({"acc": "accuracy", "nll": "NLL (nats)", "ece": "ECE"}[metric])
        ax.set_xticks(ANGLES[::2])
    figure.axes[0].legend(fontsize="small")
    return figure


def reliability_figure(upright: dict[str, torch.Tensor], labels: torch.Tensor) -> Figure:
    figure = Figure(figsize=(3.2 * len(upright), 4.5), layout="constrained")
    panels = figure.subfigures(1, len(upright), squeeze=False)[0]
    for panel, (method, probs) in zip(panels, upright.items(), strict=True):
        plots.draw_reliability(panel, probs, labels, ECE_BINS)
        panel.suptitle(method)
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="where MNIST/raw is (data.root)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    client = MlflowClient(args.tracking_uri)
    x_test, labels = MNISTDataModule(root=args.root).split("test")
    table, curves, upright = [], {}, {}
    for method, run in chosen_runs(client).items():
        model = load_model(run.info.run_id, args.tracking_uri)
        by_angle = {angle: predictive(model, rotated(x_test, angle)) for angle in ANGLES}
        curves[method] = {angle: scores(p, labels) for angle, p in by_angle.items()}
        upright[method] = by_angle[0]
        is_rotated = torch.cat([torch.zeros(len(labels)), torch.ones(len(labels))]).long()
        both = torch.cat([entropy(by_angle[0]), entropy(by_angle[90])])
        row = {"method": method, "run": run.info.run_name, **curves[method][0],
               "s/epoch": seconds_per_epoch(client, run),
               "AUROC 90° vs 0°": binary_auroc(both, is_rotated).item()}  # fmt: skip
        table.append(row)
        print(row, flush=True)
    shifted = [
        {"method": m, **{f"ECE {a}°": c[a]["ece"] for a in SHIFTED}} for m, c in curves.items()
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join([to_markdown(table), to_markdown(shifted)])
    shift_figure(curves).savefig(args.out / "shift.png", dpi=110)
    reliability_figure(upright, labels).savefig(args.out / "reliability.png", dpi=100)
    print(text)


if __name__ == "__main__":
    main()
