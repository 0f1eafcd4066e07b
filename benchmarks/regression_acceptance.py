"""Acceptance figures for Bayesian regression (issue: foundation), measured, not asserted.

1. fit: the main job (`vnnlab-train`, BNN on sine data) for several seeds; test MSE against
   the noise floor σ²_true and the 95% coverage of the predictive interval;
2. gap: `+experiment=gap_uncertainty` (no training inputs in (-1, 1)) for several seeds; the
   mean predictive sd inside the gap against the mean sd where training data are dense,
   computed from the checkpoint each run logged to MLflow;
3. cost: one optimiser step at M=10 against M=1, timed side by side (interleaved repeats).

    python benchmarks/regression_acceptance.py [--seeds 3] [--out benchmarks/results]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from vnnlab import CONFIG_DIR
from vnnlab.models.bnn import BNNRegressor
from vnnlab.run.train import train

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
GAP = (-1.0, 1.0)  # as in experiments/gap_uncertainty/config.yaml


def run(store: str, overrides: list[str]) -> tuple[str, dict[str, float]]:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"tracking.uri={store}", *QUIET, *overrides])
    run_id = train(cfg).run_id
    return run_id, MlflowClient(store).get_run(run_id).data.metrics


def fit_figures(store: str, seed: int) -> dict:
    # 20k test points: the test set's own noise MSE is then within ~1% of σ²_true
    run_id, m = run(store, [f"seed={seed}", f"data.seed={seed}", "data.n_test=20000"])
    return {
        "seed": seed,
        "run_id": run_id,
        "test_mse": m["test/mse"],
        "noise_floor": m["test/noise_floor"],
        "oracle_mse": m["test/oracle_mse"],
        "mse_over_floor": m["test/mse"] / m["test/noise_floor"],
        "coverage95": m["test/coverage95"],
    }


def gap_figures(store: str, seed: int, workdir: Path) -> dict:
    run_id, m = run(store, ["+experiment=gap_uncertainty", f"seed={seed}", f"data.seed={seed}"])
    client = MlflowClient(store)
    path = client.download_artifacts(run_id, "checkpoints/last.ckpt", str(workdir))
    model = BNNRegressor.load_from_checkpoint(path, weights_only=True).eval()
    inside = torch.linspace(GAP[0] + 0.1, GAP[1] - 0.1, 200)
    dense = torch.cat(
        [torch.linspace(-2.9, GAP[0] - 0.3, 100), torch.linspace(GAP[1] + 0.3, 2.9, 100)]
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        sd_inside = model.predict(inside.unsqueeze(1))[1].sqrt().mean().item()
        sd_dense = model.predict(dense.unsqueeze(1))[1].sqrt().mean().item()
    return {
        "seed": seed,
        "run_id": run_id,
        "sd_in_gap": sd_inside,
        "sd_dense": sd_dense,
        "ratio": sd_inside / sd_dense,
    }


def step_seconds(model: BNNRegressor, batch, optimizer) -> float:
    start = time.perf_counter()
    loss = model.training_terms(batch)["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def cost_figures(in_features: int, hidden: list[int], batch_size: int, estimator: str) -> dict:
    """Median seconds per optimiser step at M=1 and M=10, interleaved so load hits both."""
    torch.manual_seed(0)
    x, y = torch.randn(batch_size, in_features), torch.randn(batch_size, 1)
    models = {
        m: BNNRegressor(in_features, 1, 10_000, hidden=hidden, mc_samples=m, estimator=estimator)
        for m in (1, 10)
    }
    optimizers = {m: torch.optim.Adam(model.parameters(), 1e-3) for m, model in models.items()}
    times: dict[int, list[float]] = {1: [], 10: []}
    for repeat in range(230):
        for m in (1, 10):
            seconds = step_seconds(models[m], (x, y), optimizers[m])
            if repeat >= 30:  # warm-up
                times[m].append(seconds)
    one, ten = statistics.median(times[1]), statistics.median(times[10])
    net = "-".join(map(str, [in_features, *hidden, 1]))
    return {"net": net, "batch": batch_size, "estimator": estimator,
            "ms_M1": 1000 * one, "ms_M10": 1000 * ten, "ratio": ten / one}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{(args.out / 'mlflow.db').resolve()}"
    seeds = range(args.seeds)
    report = {
        "torch_threads": torch.get_num_threads(),
        "fit": [fit_figures(store, seed) for seed in seeds],
        "gap": [gap_figures(store, seed, args.out) for seed in seeds],
        "cost": [
            cost_figures(in_features, hidden, batch, estimator)
            for in_features, hidden, batch in ((1, [50, 50], 50), (784, [400, 400], 128))
            for estimator in ("weights", "local_reparam")
        ],
    }
    (args.out / "regression_acceptance.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
