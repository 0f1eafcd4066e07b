"""The README's and the tutorial's figures, regenerated from real runs by one command:

    python docs/make_figures.py --root ../shared/data        # about 10 minutes on 2 cores
    python docs/make_figures.py --root ../shared/data --only vae_latent

Each figure is the artifact its run logged (the runs go to a temporary store), copied into
docs/figures/: the BNN's predictive band over a gap in the training inputs, the reliability
diagrams of an MLP and a BNN on MNIST side by side, a 2-D VAE latent space of MNIST, and a
sweep's comparison figure (test NLL against σ², one line per M)."""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

FIGURES = Path(__file__).parent / "figures"
QUIET = ["trainer.enable_progress_bar=false"]
SWEEP = ["model.sigma2=0.001,0.01,0.1", "inference.mc_samples=1,8", "trainer.max_epochs=60"]
FIGURE_NAMES = ("regression_gap", "reliability_mlp_bnn", "vae_latent", "sweep_comparison")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("VNNLAB_DATA_ROOT", "data"),
                        help="MNIST in torchvision's layout (<root>/MNIST/raw)")  # fmt: skip
    # after 20 epochs the MLP is over-confident (ECE 0.010) and the BNN, its ELBO converged,
    # under-confident (ECE 0.042)
    parser.add_argument("--classifier-epochs", type=int, default=20)
    parser.add_argument("--vae-epochs", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=FIGURE_NAMES, default=list(FIGURE_NAMES))
    return parser.parse_args()


def vnnlab_train(folder: Path, *overrides: str) -> tuple[str, dict[str, float]]:
    """One run in `folder` (its own ./mlflow.db), as `vnnlab-train` would make it: its id and
    the last value of each metric."""
    from vnnlab.api import run  # after argparse: --help stays instant

    previous = Path.cwd()
    os.chdir(folder)
    try:
        result = run([*overrides, *QUIET])
    finally:
        os.chdir(previous)
    return result.run_id, result.metrics


def artifact(folder: Path, run_id: str, path: str) -> Path:
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    return Path(client.download_artifacts(run_id, path, str(folder)))


def side_by_side(images: dict[str, Path], target: Path) -> None:
    """The PNGs next to each other, each titled, as one small PNG."""
    figure = Figure(figsize=(4 * len(images), 3.6))
    FigureCanvasAgg(figure)
    for ax, (title, path) in zip(figure.subplots(1, len(images)), images.items(), strict=True):
        ax.imshow(matplotlib.image.imread(path))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(target, dpi=100)


def regression_gap(folder: Path) -> None:
    run_id, _ = vnnlab_train(folder, "+experiment=gap_uncertainty")
    shutil.copy(artifact(folder, run_id, "figures/fit.png"), FIGURES / "regression_gap.png")


def reliability(folder: Path, root: str, epochs: int) -> None:
    mnist = ["data=mnist", f"data.root={root}", f"trainer.max_epochs={epochs}"]
    images = {}
    for model in ("mlp_classifier", "bnn_classifier"):
        run_id, metrics = vnnlab_train(folder, f"model={model}", *mnist)
        downloaded = artifact(folder, run_id, "figures/reliability.png")
        title = f"{model}: accuracy {metrics['test/acc']:.2%}, ECE {metrics['test/ece']:.4f}"
        images[title] = downloaded.rename(folder / f"{model}.png")  # the next run's has its name
    side_by_side(images, FIGURES / "reliability_mlp_bnn.png")


def vae_latent(folder: Path, root: str, epochs: int) -> None:
    vae = ["model=vae", "model.likelihood=bernoulli", "model.latent_dim=2"]
    run_id, _ = vnnlab_train(folder, *vae, "data=mnist", f"data.root={root}",
                          f"trainer.max_epochs={epochs}")  # fmt: skip
    shutil.copy(artifact(folder, run_id, "figures/latent.png"), FIGURES / "vae_latent.png")


def sweep_comparison(folder: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "vnnlab", "-m", *SWEEP, *QUIET]
    subprocess.run(command, cwd=folder, check=True, env=environment, capture_output=True)
    from vnnlab.commands import compare  # vnnlab-compare; after argparse: --help stays instant

    store = f"sqlite:///{folder / 'mlflow.db'}"
    compare.main(["--metric", "test/nll", "--x", "model.sigma2", "--group", "inference.mc_samples",
                  "--out", str(folder), "--tracking-uri", store])  # fmt: skip
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    [parent] = client.search_runs(experiments, "tags.`vnnlab.sweep.role` = 'parent'")
    shutil.copy(
        artifact(folder, parent.info.run_id, "comparison.png"), FIGURES / "sweep_comparison.png"
    )


def main() -> None:
    args = parse_args()
    root = str(Path(args.root).resolve())
    FIGURES.mkdir(exist_ok=True)
    steps = {
        "regression_gap": regression_gap,
        "reliability_mlp_bnn": lambda f: reliability(f, root, args.classifier_epochs),
        "vae_latent": lambda f: vae_latent(f, root, args.vae_epochs),
        "sweep_comparison": sweep_comparison,
    }
    for name in args.only:
        with tempfile.TemporaryDirectory(prefix="vnnlab-figures-") as folder:
            steps[name](Path(folder))
        print(f"wrote {FIGURES / name}.png", flush=True)


if __name__ == "__main__":
    main()
