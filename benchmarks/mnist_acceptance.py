"""Acceptance figures for MNIST classification (issue: MNIST), measured on the real data.

Trains `mlp_classifier` and `bnn_classifier` (784-400-400-10, their defaults) through the real
`train()` path, one MLflow run each, and reports test accuracy, ECE (15 bins) and NLL.

    python benchmarks/mnist_acceptance.py --root ../shared/data [--epochs 10]
"""

import argparse
import json
from pathlib import Path

from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from vnnlab import CONFIG_DIR
from vnnlab.run.train import train

MODELS = ("mlp_classifier", "bnn_classifier")


def train_and_read(store: str, model: str, root: Path, epochs: int, extra: list[str]) -> dict:
    overrides = [
        f"model={model}",
        "data=mnist",
        f"data.root={root.resolve()}",
        f"trainer.max_epochs={epochs}",
        *extra,
        "trainer.enable_progress_bar=false",
        f"tracking.uri={store}",
        "tracking.experiment=mnist-acceptance",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run = train(cfg)
    metrics = MlflowClient(store).get_run(run.run_id).data.metrics
    return {"run_id": run.run_id} | {k: metrics[f"test/{k}"] for k in ("acc", "ece", "nll")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both models")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{(args.out / 'mlflow.db').resolve()}"
    report = {"epochs": args.epochs, "overrides": args.overrides}
    for model in MODELS:
        report[model] = train_and_read(store, model, args.root, args.epochs, args.overrides)
        print(model, report[model], flush=True)
    (args.out / "mnist_acceptance.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
