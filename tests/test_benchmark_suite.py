"""The benchmark suite's --quick run, through its real command, so that the suite cannot rot.
Its figures are timings of a few batches on a busy test machine: only their presence and
the FLOP count are checked here, never a target (those are for the full run's report)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from idx_files import write_mnist

SUITE = Path(__file__).parents[1] / "benchmarks" / "suite.py"
COMPARISONS = ("data path", "framework overhead", "tracking: VAE", "tracking: default BNN",
               "VAE epoch: plain loop on per-item",
               "hardware limit", "MC cost: weights", "MC cost: local_reparam",
               "start-up: command", "start-up: vnnlab-train --help", "sweep: overhead")  # fmt: skip


def vae_training_flops_per_example() -> int:
    """784-400-(20, 20) encoder, 20-400-784 decoder: a matrix product of n_in × n_out costs
    2·n_in·n_out per example forward, as much for the weight gradient, and as much again for
    the input gradient, except into the first layer (the images need no gradient)."""
    layers = [(784, 400), (400, 20), (400, 20), (20, 400), (400, 784)]
    forward = sum(2 * n_in * n_out for n_in, n_out in layers)
    return forward + forward + (forward - 2 * 784 * 400)


def test_quick_suite_runs_every_comparison_and_writes_its_table(tmp_path: Path):
    write_mnist(tmp_path / "data", n_train=1500, n_test=200)
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, str(SUITE), "--quick", "--root", str(tmp_path / "data"),
         "--n-val", "300", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((out / "suite-quick.json").read_text())
    rows = {row["comparison"]: row for row in report["rows"]}
    for comparison in COMPARISONS:
        assert any(name.startswith(comparison) for name in rows), comparison
    for row in rows.values():
        assert math.isfinite(row["measured"]), row
        assert row["met"] in (True, False, None)
    assert report["machine"]["cores"] >= 1 and report["matmul_flops_per_second"] > 0

    [framework] = [r for name, r in rows.items() if name.startswith("framework overhead")]
    limit_seconds = vae_training_flops_per_example() * 8 * 128 / report["matmul_flops_per_second"]
    assert framework["details"]["limit_seconds"] == pytest.approx(limit_seconds)  # 8 batches

    table = (out / "suite-quick.md").read_text()
    assert "torch threads" in table and "GFLOP/s" in table
    assert table.count("\n| ") == len(rows) + 1  # the header and one line per comparison
