"""vnnlab-predict as a real process, reading a run from a real `mlflow server` (the slow tier;
the table and the command in this process are tested in tests/test_tabular.py)."""

import subprocess

import pandas as pd
import pytest

from helpers import QUICK

pytestmark = pytest.mark.slow


def test_predict_reads_a_run_from_a_tracking_server(cli, csv, mlflow_server):
    overrides = ["model=mlp_regressor", "data=tabular", f"data.path={csv}", "data.target=y",
                 "data.drop=[kind]", f"tracking.uri={mlflow_server}"]  # fmt: skip
    trained = cli.run(*QUICK, *overrides)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_id = trained.stdout.split("vnnlab: run ")[1].split()[0]
    result = subprocess.run(
        ["vnnlab-predict", f"run_id={run_id}", f"data.path={csv}", "output=out.csv",
         f"tracking.uri={mlflow_server}"], cwd=cli.workdir, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    output = pd.read_csv(cli.workdir / "out.csv")
    assert len(output) == 400 and "y_mean" in output and "y_sd" in output  # the MAP: N(f(x), σ²)
