"""The real command line in a subprocess, into a temporary SQLite MLflow store."""

import signal
import subprocess
import sys

import pytest
import torch

from conftest import FAST
from vnnlab.models.bnn import BNNRegressor

BNN_METRICS = {
    "train/loss", "val/loss", "train/elbo", "train/kl", "train/expected_nll", "val/nll",
    "test/mse", "test/rmse", "test/noise_floor", "test/nll", "test/coverage95",
}  # fmt: skip


def test_main_job_records_a_complete_run(cli):
    result = cli.run(*FAST, "model.sigma2=0.02", "model.mc_samples=3")
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = cli.runs()
    assert run.info.run_id in result.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{cli.store}" in result.stdout
    assert run.info.status == "FINISHED"

    params = run.data.params
    assert params["model.sigma2"] == "0.02"
    assert params["model.mc_samples"] == "3"
    assert params["data.function"] == "sine"
    assert params["trainer.max_epochs"] == "2"
    assert run.data.tags["hydra.overrides"].split() == [
        *FAST,
        "model.sigma2=0.02",
        "model.mc_samples=3",
    ]
    assert run.info.run_name.startswith("bnn_regressor-synthetic ")

    metrics = run.data.metrics
    assert BNN_METRICS <= set(metrics)
    assert metrics["test/noise_floor"] == pytest.approx(0.01)
    assert 0.005 < metrics["test/oracle_mse"] < 0.02  # the noise of 100 test points
    assert metrics["test/rmse"] == pytest.approx(metrics["test/mse"] ** 0.5, rel=1e-5)
    assert 0.0 <= metrics["test/coverage95"] <= 1.0
    assert metrics["train/loss"] == pytest.approx(-metrics["train/elbo"])
    history = cli.client().get_metric_history(run.info.run_id, "train/loss")
    assert len(history) == 2  # one value per epoch

    client = cli.client()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "figures", "checkpoints"} <= artifacts
    assert run.data.tags["vnnlab.git.dirty"] in ("true", "false")
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == [
        "figures/fit.png"
    ]
    checkpoint = client.download_artifacts(
        run.info.run_id, "checkpoints/last.ckpt", str(cli.workdir)
    )
    state = torch.load(checkpoint, weights_only=True)  # plain hyper-parameters only
    assert state["hyper_parameters"]["sigma2"] == 0.02
    model = BNNRegressor.load_from_checkpoint(checkpoint, weights_only=True)
    assert model.mc_samples == 3
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(cli.workdir))
    assert "sigma2: 0.02" in open(config).read()


def test_sigterm_ends_the_run_killed(cli):
    cli.client().search_experiments()  # create the store first: a concurrent migration races
    process = cli.popen("trainer.max_epochs=10000", "trainer.enable_progress_bar=false")
    cli.wait_for_an_epoch(process)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    [run] = cli.runs()
    assert run.info.status == "KILLED"


def test_a_diverging_run_stops_at_once_and_ends_failed_with_exit_1(cli):
    result = cli.run(*FAST, "model=mlp_regressor", "model.lr=1e30", "trainer.max_epochs=50")
    assert result.returncode == 1
    assert "NonFiniteLossError: train/loss became" in result.stderr
    [run] = cli.runs()
    assert run.info.status == "FAILED"
    reason = run.data.tags["vnnlab.failure"]
    assert reason.startswith("NonFiniteLossError: train/loss became") and "at step" in reason
    history = cli.client().get_metric_history(run.info.run_id, "val/loss")
    assert len(history) < 5  # stopped within the first epochs, not after 50


def test_a_multirun_reports_a_bad_job_and_runs_the_others(cli):
    result = cli.run("-m", *FAST, "model.sigma2=0.01,-1,0.1")
    assert result.returncode == 2, result.stderr[-3000:]  # the only failure was bad input
    bad_job = "model.sigma2=-1 is not allowed: expected a number > 0"
    assert bad_job in result.stderr
    summary = result.stderr[result.stderr.index("1 of 3 jobs did not finish") :]
    assert "BAD_INPUT" in summary and bad_job in summary
    runs = [r for r in cli.runs() if r.data.tags["vnnlab.sweep.role"] == "child"]
    assert sorted(r.data.params["model.sigma2"] for r in runs) == ["0.01", "0.1"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_multirun_lists_every_failed_job_and_exits_1(cli):
    result = cli.run("-m", *FAST, "model=mlp_regressor", "model.lr=1e30,0.003,1e31")
    assert result.returncode == 1, result.stderr[-3000:]
    summary = result.stderr[result.stderr.index("2 of 3 jobs did not finish") :]
    assert "model.lr=1e+30]" in summary and "model.lr=1e+31]" in summary  # as Hydra prints them
    runs = [r for r in cli.runs() if r.data.tags["vnnlab.sweep.role"] == "child"]
    statuses = sorted((r.data.params["model.lr"], r.info.status) for r in runs)
    assert statuses == [("0.003", "FINISHED"), ("1e+30", "FAILED"), ("1e+31", "FAILED")]


def printed_by_a_fresh_python(code: str) -> list[str]:
    """What `code` prints, word by word, run in a new interpreter (nothing imported yet)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


def test_the_command_line_and_a_sweeps_parent_load_no_torch():
    """What answers --help and a bad override, and what a parallel sweep's parent runs (store,
    parent run, table, figure), loads neither torch nor Lightning: seconds only a job needs.
    Nor does the sweep callback load MLflow before the sweep starts: the workers start first."""
    code = (
        "import sys; from vnnlab import cli, sweep; "
        "print(sorted({'mlflow', 'torch', 'pytorch_lightning'} & set(sys.modules))); "
        "from vnnlab import compare; "
        "print(sorted({'torch', 'pytorch_lightning'} & set(sys.modules)))"
    )
    assert printed_by_a_fresh_python(code) == ["[]", "[]"]


def test_a_job_loads_its_code_once_without_collecting_and_freezes_it():
    """load_job_code imports torch, Lightning and MLflow with no garbage collection on the way,
    freezes the objects they made and leaves the collector on; a second call changes nothing."""
    code = (
        "import gc, sys; from vnnlab import cli; "
        "before = gc.get_stats()[2]['collections']; cli.load_job_code(); "
        "frozen = gc.get_freeze_count(); cli.load_job_code(); "
        "print(gc.get_stats()[2]['collections'] - before, frozen, gc.get_freeze_count() - frozen, "
        "gc.isenabled(), 'vnnlab.train' in sys.modules)"
    )
    full_collections, frozen, frozen_again, enabled, loaded = printed_by_a_fresh_python(code)
    assert full_collections == "0" and int(frozen) > 100_000 and frozen_again == "0"
    assert enabled == "True" and loaded == "True"


def test_help_lists_the_models_data_sets_and_examples(cli):
    result = cli.run("--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model: autoencoder, bnn_classifier, bnn_regressor, linear_autoencoder" in result.stdout
    assert "data: manifold, mnist, synthetic" in result.stdout
    assert "vnnlab-train -m model.lr=1e-3,1e-2" in result.stdout
    assert not cli.store.exists()
