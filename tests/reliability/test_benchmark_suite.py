"""The benchmark suite's --quick run, through its real command, so that the suite cannot rot.
Its figures are timings of a few batches on a busy test machine: their presence, the FLOP count
and that each verdict follows from its figure and target are checked here, never whether a
target is met (that is for the full run's report)."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from idx_files import write_mnist

pytestmark = pytest.mark.slow  # the suite's own process, which starts more (start-up, sweeps)

SUITE = Path(__file__).parents[2] / "benchmarks" / "suite.py"
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


TARGET = re.compile(r"(≤|≥) ([0-9.]+) ?(×|%|s)")  # as a row states it: "≤ 1.15×", "≥ 3×", "≤ 5%"
VERDICT = {True: "yes", False: "**no**", None: ""}  # the table's "met" column


def target_met(row: dict) -> bool | None:
    """Whether the row's figure meets its target as the row states it; None for a reference
    figure, which has none."""
    if row["target"] == "(reference)":
        return None
    stated = TARGET.fullmatch(row["target"])
    assert stated and stated[3] == row["unit"], row
    limit = float(stated[2]) / 100 if row["unit"] == "%" else float(stated[2])  # % of a fraction
    return row["measured"] <= limit if stated[1] == "≤" else row["measured"] >= limit


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
        assert row["met"] is target_met(row), row
    assert report["machine"]["cores"] == os.cpu_count()  # this machine's, as the suite says

    [framework] = [r for name, r in rows.items() if name.startswith("framework overhead")]
    limit_seconds = vae_training_flops_per_example() * 8 * 128 / report["matmul_flops_per_second"]
    assert framework["details"]["limit_seconds"] == pytest.approx(limit_seconds)  # 8 batches

    table = (out / "suite-quick.md").read_text()
    rate = report["matmul_flops_per_second"]
    assert f"{os.cpu_count()} cores" in table and f"matmul {rate / 1e9:.0f} GFLOP/s" in table
    assert "torch threads" in table
    assert table.count("\n| ") == len(rows) + 1  # the header and one line per comparison
    for name, row in rows.items():  # each line's verdict is the report's
        [line] = [line for line in table.splitlines() if line.startswith(f"| {name} |")]
        assert line.endswith(f"| {row['target']} | {VERDICT[row['met']]} |"), line
