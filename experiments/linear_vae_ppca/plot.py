"""The linear VAE beside probabilistic PCA's closed form, over the latent size q: the sibling of
`reduction_latent_size`'s PCA / linear-autoencoder figure. Lines: σ²_ML(q) (the mean of the
discarded eigenvalues) and pPCA's largest mean log-likelihood, from the spectrum of MNIST's
training split; points: what the runs with σ² learned in a store reached (train/sigma2 and
train/elbo at their last epoch).

    python experiments/linear_vae_ppca/plot.py --root ../shared/data --tracking-uri sqlite:///mlflow.db
"""

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from vnnlab.data.mnist import MNISTDataModule
from vnnlab.models.objectives import ppca_max_log_likelihood, ppca_noise_variance
from vnnlab.models.subspaces import principal_subspace

MAX_Q = 60


def spectrum(root: str) -> torch.Tensor:
    """The eigenvalues of the training split's covariance, as the runs' data module has it."""
    data = MNISTDataModule(root=root)
    x_train, _ = data.split("train")  # (N, 784) grey values in [0, 1]
    return principal_subspace(x_train, 1)[2].double()


def learned_runs(tracking_uri: str) -> list[dict[str, float]]:
    """Every FINISHED linear_vae run with σ² learned: q, σ², ELBO (train, last epoch)."""
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "attributes.status = 'FINISHED'")
    points = []
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        if (
            params.get("model._target_", "").endswith("LinearVAE")
            and params.get("model.learn_sigma2") == "True"
        ):
            points.append({"q": int(params["model.latent_dim"]), "sigma2": metrics["train/sigma2"],
                           "elbo": metrics["train/elbo"]})  # fmt: skip
    return sorted(points, key=lambda point: point["q"])


def figure(variances: torch.Tensor, points: list[dict[str, float]]) -> Figure:
    qs = list(range(1, MAX_Q + 1))
    sigma2 = [ppca_noise_variance(variances, q).item() for q in qs]
    best = [
        ppca_max_log_likelihood(variances, q, s).item() for q, s in zip(qs, sigma2, strict=True)
    ]
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(qs, sigma2, color="black", label="σ²_ML, pPCA's closed form")
    left.scatter([p["q"] for p in points], [p["sigma2"] for p in points], color="tab:red",
                 zorder=3, label="linear VAE, learned σ²")  # fmt: skip
    left.set_yscale("log")
    left.set_xlabel("latent size q")
    left.set_ylabel("σ² (noise variance per pixel)")
    right.plot(qs, best, color="black", label="pPCA's maximum log-likelihood")
    right.scatter([p["q"] for p in points], [p["elbo"] for p in points], color="tab:red",
                  zorder=3, label="linear VAE, ELBO (train)")  # fmt: skip
    right.set_xlabel("latent size q")
    right.set_ylabel("nats per image")
    for ax in (left, right):
        ax.legend(fontsize="small")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="where MNIST/raw is (data.root)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("comparison.png"))
    args = parser.parse_args()
    points = learned_runs(args.tracking_uri)
    figure(spectrum(args.root), points).savefig(args.out, dpi=110)
    for point in points:
        print(point)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
