"""The figure and table of `vae_binarized_mnist` from a store holding its runs: per run, the
validation log-likelihood (k' = 100) against epochs and the test log-likelihood (k = 5000) at
the end, beside Burda et al.'s (2016, Table 1) one-stochastic-layer rows.

    python experiments/vae_binarized_mnist/plot.py --tracking-uri sqlite:///mlflow.db
"""

import argparse
from pathlib import Path

from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from vnnlab.sweep.compare import to_markdown

# −log p(x) on the test set, k = 5000 (Burda et al. 2016, Table 1, one stochastic layer,
# 784-200-200-50, 3280 passes): objective and k of training → nats
BURDA = {("elbo", 1): 86.76, ("elbo", 5): 86.47, ("elbo", 50): 86.35,
         ("iwae", 5): 85.54, ("iwae", 50): 84.78}  # fmt: skip


def label(run: Run) -> tuple[str, int]:
    return run.data.params["model.objective"], int(run.data.params["model.mc_samples"])


def study_runs(client: MlflowClient) -> list[Run]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "attributes.status = 'FINISHED'")
    return [run for run in runs if run.data.params.get("data.binarize") == "dynamic"]


def table(client: MlflowClient, runs: list[Run]) -> list[dict]:
    rows = []
    for run in runs:
        metrics, (objective, k) = run.data.metrics, label(run)
        epochs = len(client.get_metric_history(run.info.run_id, "train/elbo"))
        rows.append({"objective": objective, "k": k, "epochs": epochs,
                     "test −log p(x), k = 5000": -metrics["test/log_likelihood"],
                     "test −ELBO": -metrics["test/elbo"],
                     "train −ELBO (last epoch)": -metrics["train/elbo"],
                     "active units": metrics.get("test/active_units"),
                     "minutes": (run.info.end_time - run.info.start_time) / 60000,
                     "Burda et al.": BURDA.get((objective, k))})  # fmt: skip
    return sorted(rows, key=lambda row: (row["objective"], row["k"]))


def figure(client: MlflowClient, runs: list[Run]) -> Figure:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for run in sorted(runs, key=label):
        objective, k = label(run)
        history = client.get_metric_history(run.info.run_id, "val/log_likelihood")
        ends = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/elbo"))
        epoch_of = {step: epoch for epoch, step in enumerate(ends, start=1)}  # logged by step
        points = sorted((epoch_of.get(m.step, m.step), -m.value) for m in history)
        epochs = len(ends)
        name = "VAE (ELBO)" if objective == "elbo" else "IWAE"
        line = ax.plot([s for s, _ in points], [v for _, v in points], marker="o", ms=3,
                       label=f"{name}, k = {k}: validation, k' = 100")[0]  # fmt: skip
        ax.scatter([epochs], [-run.data.metrics["test/log_likelihood"]], marker="*", s=120,
                   color=line.get_color(), label=f"{name}, k = {k}: test, k = 5000")  # fmt: skip
        if (objective, k) in BURDA:
            ax.axhline(BURDA[objective, k], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("−log p(x) (nats; dotted: Burda et al. after 3280 passes)")
    ax.legend(fontsize="small")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("comparison.png"))
    args = parser.parse_args()
    client = MlflowClient(args.tracking_uri)
    runs = study_runs(client)
    print(to_markdown(table(client, runs)))
    figure(client, runs).savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
