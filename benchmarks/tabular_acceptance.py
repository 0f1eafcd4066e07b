"""Acceptance figures for data=tabular and vnnlab-predict, on generated tables whose truth is known.

1. reduction: rows x = W z + ε in ℝ^20, z ~ N(0, diag(9, 4, 1)), W with orthonormal columns,
   ε ~ N(0, 0.1 I). vnnlab standardises each column, so PCA's expected test recon_mse for m
   components is the mean of the eigenvalues beyond the m-th of the standardised covariance
   D^(-1/2) C D^(-1/2), C = W diag(9, 4, 1) Wᵀ + 0.1 I, D = diag(C). Targets: PCA within 5% of
   it, the linear autoencoder within 2% of PCA, for every m.
2. regression: y = sin(x₁) + x₂²/2 − x₃ + ε, x uniform on [−2, 2]³, ε ~ N(0, 0.04); a BNN with
   σ² = 0.04. Targets: test MSE within 10% of 0.04, coverage95 in [0.90, 0.99]; vnnlab-predict
   on a fresh table from the same generator: the share of targets inside the 95% intervals.

    python benchmarks/tabular_acceptance.py [--parts reduction regression] [--epochs 100]
    python benchmarks/tabular_acceptance.py --write-table low_rank.csv   # the table alone
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vnnlab.api import run
from vnnlab.run.predict import predict

RESULTS = Path(__file__).parent / "results" / "tabular_acceptance.json"
QUIET = ["trainer.enable_progress_bar=false"]
VARIANCES, NOISE, N_FEATURES = np.array([9.0, 4.0, 1.0]), 0.1, 20
REGRESSION_NOISE = 0.04


def low_rank_table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows, and the standardised covariance's eigenvalues (descending)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(N_FEATURES, len(VARIANCES))))
    z = rng.normal(size=(n, len(VARIANCES))) * np.sqrt(VARIANCES)
    x = z @ basis.T + rng.normal(scale=np.sqrt(NOISE), size=(n, N_FEATURES))
    covariance = basis @ np.diag(VARIANCES) @ basis.T + NOISE * np.eye(N_FEATURES)
    scale = 1 / np.sqrt(np.diag(covariance))
    eigenvalues = np.linalg.eigvalsh(covariance * np.outer(scale, scale))[::-1]
    return pd.DataFrame(x, columns=[f"x{j}" for j in range(N_FEATURES)]), eigenvalues


def regression_table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 3))
    f = np.sin(x[:, 0]) + x[:, 1] ** 2 / 2 - x[:, 2]
    y = f + rng.normal(scale=np.sqrt(REGRESSION_NOISE), size=n)
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "y": y})


def train(folder: Path, overrides: list[str]) -> dict:
    start = time.perf_counter()
    result = run([*overrides, *QUIET, f"tracking.uri=sqlite:///{folder / 'mlflow.db'}"])
    metrics = {k: v for k, v in result.metrics.items() if k.startswith("test/")}
    return {"run_id": result.run_id, "seconds": round(time.perf_counter() - start, 1), **metrics}


def reduction(folder: Path) -> dict:
    table, eigenvalues = low_rank_table(20_000, seed=1)  # 3000 test rows: m = 1's SE ≈ 2%
    path = folder / "low_rank.csv"
    table.to_csv(path, index=False)
    rows = []
    for m in (1, 2, 3, 5):
        expected = float(eigenvalues[m:].sum() / N_FEATURES)
        data = ["data=tabular", f"data.path={path}", f"model.latent_dim={m}"]
        pca = train(folder, ["model=pca", *data])
        linear = train(
            folder,
            ["model=linear_autoencoder", *data, "data.batch_size=256", "trainer.max_epochs=30"],
        )
        rows.append({
            "m": m, "expected_pca_mse": expected, "pca": pca["test/recon_mse"],
            "pca_over_expected": pca["test/recon_mse"] / expected,
            "linear_ae": linear["test/recon_mse"],
            "linear_ae_over_pca": linear["test/recon_mse"] / pca["test/recon_mse"],
            "principal_angle_deg": linear.get("test/principal_angle"),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows}


def regression(folder: Path, epochs: int) -> dict:
    train_path, fresh_path = folder / "train.csv", folder / "fresh.csv"
    regression_table(3000, seed=1).to_csv(train_path, index=False)
    regression_table(2000, seed=2).to_csv(fresh_path, index=False)
    overrides = ["model=bnn_regressor", "data=tabular", f"data.path={train_path}",
                 "data.target=y", f"model.sigma2={REGRESSION_NOISE}",
                 f"trainer.max_epochs={epochs}"]  # fmt: skip
    result = train(folder, overrides)
    predicted = predict(result["run_id"], str(fresh_path), f"sqlite:///{folder / 'mlflow.db'}")
    inside = (predicted["y"] >= predicted["y_lower95"]) & (predicted["y"] <= predicted["y_upper95"])
    return {
        **result,
        "mse_over_noise": result["test/mse"] / REGRESSION_NOISE,
        "fresh_rows": len(predicted),
        "fresh_interval_coverage": float(inside.mean()),
        "fresh_mse_over_noise": float(((predicted["y"] - predicted["y_mean"]) ** 2).mean())
        / REGRESSION_NOISE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["reduction", "regression"])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--write-table", type=Path, metavar="CSV",
                        help="only write the low-rank table (20 000 rows) to CSV")  # fmt: skip
    args = parser.parse_args()
    if args.write_table:
        low_rank_table(20_000, seed=1)[0].to_csv(args.write_table, index=False)
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="vnnlab-tabular-") as scratch:
        folder = Path(scratch)
        if "reduction" in args.parts:
            results["reduction"] = reduction(folder)
        if "regression" in args.parts:
            results["regression"] = regression(folder, args.epochs)
            print(json.dumps(results["regression"]), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
