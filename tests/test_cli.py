"""`vnnlab-train` as its console script runs it (`vnnlab.commands.train.main`), in this process,
into the test's own SQLite store: what a run records, exit codes, failed and bad jobs of a
multirun, --help. Signals and real processes are in tests/reliability/ (the slow tier)."""

import signal
import subprocess
import sys

import pytest
import torch

from helpers import FAST, InProcessCommand, printed_by_a_fresh_python
from vnnlab import tags
from vnnlab.models.regression import Regressor
from vnnlab.tracking.run import git_tags

BNN_METRICS = {
    "train/loss", "val/loss", "train/elbo", "train/kl", "train/expected_nll", "val/nll",
    "test/mse", "test/rmse", "test/noise_floor", "test/nll", "test/coverage95",
}  # fmt: skip


def test_main_job_records_a_complete_run(command):
    result = command.run(
        *FAST, "model.sigma2=0.02", "inference.mc_samples=3", "data.noise_var=0.03"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = command.runs()
    assert f"run {run.info.run_id} FINISHED" in result.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{command.store}" in result.stdout
    assert run.info.status == "FINISHED"

    params = run.data.params
    assert params["model.sigma2"] == "0.02"
    assert params["inference.mc_samples"] == "3"
    assert params["data.function"] == "sine"
    assert params["trainer.max_epochs"] == "2"
    overrides = [*FAST, "model.sigma2=0.02", "inference.mc_samples=3", "data.noise_var=0.03"]
    assert run.data.tags[tags.OVERRIDES].split() == overrides
    assert run.info.run_name == "regressor-bbb-synthetic " + " ".join(overrides)
    assert run.data.tags[tags.MODEL] == "regressor" and run.data.tags[tags.DATA] == "synthetic"
    assert run.data.tags[tags.INFERENCE] == "bbb"

    metrics = run.data.metrics
    assert BNN_METRICS <= set(metrics)
    assert metrics["test/noise_floor"] == pytest.approx(0.03)  # the data's σ², not the model's
    assert 0.015 < metrics["test/oracle_mse"] < 0.06  # the noise drawn for 100 test points
    assert metrics["test/rmse"] == pytest.approx(metrics["test/mse"] ** 0.5, rel=1e-5)
    assert metrics["train/loss"] == pytest.approx(-metrics["train/elbo"])
    history = command.client().get_metric_history(run.info.run_id, "train/loss")
    assert len(history) == 2  # one value per epoch

    client = command.client()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "figures", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == [
        "figures/fit.png",
        "figures/signal_to_noise.png",
    ]
    checkpoint = client.download_artifacts(
        run.info.run_id, "checkpoints/last.ckpt", str(command.workdir)
    )
    state = torch.load(checkpoint, weights_only=True)  # plain hyper-parameters only
    assert state["hyper_parameters"]["sigma2"] == 0.02
    model = Regressor.load_from_checkpoint(checkpoint, weights_only=True)
    assert model.inference.mc_samples == 3
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(command.workdir))
    assert "sigma2: 0.02" in open(config).read()


def test_the_git_tags_say_whether_the_tree_had_uncommitted_changes(tmp_path):
    """A run's provenance: the commit of the code that ran and whether its working tree had
    changes (a repository made here, clean, then changed; then a folder outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path / "repo"), *args], check=True,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip

    (tmp_path / "repo").mkdir()
    git("init", "-q")
    (tmp_path / "repo" / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    clean = git_tags(tmp_path / "repo")
    assert clean == {tags.GIT_COMMIT: git("rev-parse", "HEAD"), tags.GIT_DIRTY: "false"}
    (tmp_path / "repo" / "code.py").write_text("x = 2\n")
    assert git_tags(tmp_path / "repo")[tags.GIT_DIRTY] == "true"
    assert git_tags(tmp_path) == {}  # not a repository


def test_a_diverging_run_stops_at_once_and_ends_failed_with_exit_1(command):
    result = command.run(*FAST, "model=mlp_regressor", "model.lr=1e30", "trainer.max_epochs=50")
    assert result.returncode == 1
    assert "NonFiniteLossError: train/loss became" in result.stderr
    [run] = command.runs()
    assert run.info.status == "FAILED"
    reason = run.data.tags[tags.FAILURE]
    assert reason.startswith("NonFiniteLossError: train/loss became") and "at step" in reason
    history = command.client().get_metric_history(run.info.run_id, "val/loss")
    assert len(history) < 5  # stopped within the first epochs, not after 50


def test_resume_continues_the_same_run_with_every_epoch_once(command):
    assert command.run(*FAST, "model=mlp_regressor").returncode == 0
    [run] = command.runs()
    refused = command.run(f"resume={run.info.run_id}", "model.lr=0.1")
    assert refused.returncode == 2 and "model.lr=0.1 cannot be combined with resume=" in (
        refused.stderr
    )
    longer = command.run(f"resume={run.info.run_id}", "trainer.max_epochs=3")
    assert longer.returncode == 0, longer.stderr[-3000:]
    [after] = command.runs()  # the same run, no new one
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.data.params["trainer.max_epochs"] == "2"  # MLflow never changes a param
    assert after.data.tags[tags.RESUMED_WITH] == "trainer.max_epochs=3"
    steps = [m.step for m in command.client().get_metric_history(run.info.run_id, "train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == 3  # epochs 1, 2 once, then 3


def test_a_multirun_reports_a_bad_job_and_runs_the_others(command):
    sigterm_before = signal.getsignal(signal.SIGTERM)
    result = command.run("-m", *FAST, "model.sigma2=0.01,-1,0.1")
    assert signal.getsignal(signal.SIGTERM) is sigterm_before  # the parent's handler is undone
    assert result.returncode == 2, result.stderr[-3000:]  # the only failure was bad input
    bad_job = "model.sigma2=-1 is not allowed: expected a number > 0"
    assert bad_job in result.stderr
    summary = result.stderr[result.stderr.index("1 of 3 jobs did not finish") :]
    assert "BAD_INPUT" in summary and bad_job in summary
    runs = command.runs()
    children = [r for r in runs if r.data.tags[tags.SWEEP_ROLE] == tags.CHILD]
    assert sorted(r.data.params["model.sigma2"] for r in children) == ["0.01", "0.1"]
    assert all(r.info.status == "FINISHED" for r in children)
    [parent] = [r for r in runs if r.data.tags[tags.SWEEP_ROLE] == tags.PARENT]
    assert parent.info.status == "FAILED"
    assert parent.data.tags[tags.FAILURE] == "1 of 3 jobs did not finish"


def test_a_multirun_lists_every_failed_job_and_exits_1(command):
    result = command.run("-m", *FAST, "model=mlp_regressor", "model.lr=1e30,0.003,1e31")
    assert result.returncode == 1, result.stderr[-3000:]
    summary = result.stderr[result.stderr.index("2 of 3 jobs did not finish") :]
    assert "model.lr=1e+30]" in summary and "model.lr=1e+31]" in summary  # as Hydra prints them
    runs = [r for r in command.runs() if r.data.tags[tags.SWEEP_ROLE] == tags.CHILD]
    statuses = sorted((r.data.params["model.lr"], r.info.status) for r in runs)
    assert statuses == [("0.003", "FINISHED"), ("1e+30", "FAILED"), ("1e+31", "FAILED")]


def test_a_multirun_refuses_jobs_on_several_processes(command):
    """Lightning would start each job's extra processes by running the whole multirun again."""
    ddp = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    result = command.run("-m", *FAST, *ddp, "model.lr=0.001,0.01")
    assert result.returncode == 2, result.stderr[-3000:]
    refusal = "trainer.strategy='ddp' is not allowed: expected one run at a time, not in a multirun"
    assert result.stderr.count(refusal) >= 2  # each job, and the sweep's summary
    children = [r for r in command.runs() if r.data.tags[tags.SWEEP_ROLE] == tags.CHILD]
    assert children == []


def test_a_multirun_refuses_to_resume_runs(command):
    result = command.run("-m", "resume=abc,def")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "resume='abc' is not allowed: expected one run at a time, not in a multirun" in (
        result.stderr
    )
    assert [r for r in command.runs() if r.data.tags[tags.SWEEP_ROLE] == tags.CHILD] == []


def test_the_command_line_and_a_sweeps_parent_load_no_torch():
    """What answers --help and a bad override, and what a parallel sweep's parent runs (store,
    parent run, table, figure), load neither torch nor Lightning: seconds only a job needs.
    The command itself loads no MLflow either: a single run imports it with the job's code."""
    code = (
        "import sys; import vnnlab.commands.train, vnnlab.sweep.hydra_callback; "
        "print(sorted({'mlflow', 'torch', 'pytorch_lightning'} & set(sys.modules))); "
        "import vnnlab.sweep.compare, vnnlab.tracking.store, vnnlab.tracking.run; "
        "print(sorted({'torch', 'pytorch_lightning'} & set(sys.modules)))"
    )
    assert printed_by_a_fresh_python(code) == ["[]", "[]"]


@pytest.mark.parametrize("module", ["vnnlab", "vnnlab.train"])
def test_python_dash_m_runs_the_command(tmp_path, module):
    result = subprocess.run([sys.executable, "-m", module, "model=pca", "--cfg", "job"],
                            cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "_target_: vnnlab.models.reduction.PCA" in result.stdout


def test_help_lists_the_models_data_sets_and_examples(tmp_path, capfd, monkeypatch):
    command = InProcessCommand(tmp_path / "empty", capfd, monkeypatch)
    result = command.run("--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model: autoencoder, bnn_classifier, bnn_regressor, classifier, linear_autoencoder" in (
        result.stdout
    )
    assert "inference: bbb, ensemble, ivon, laplace, map, mc_dropout" in result.stdout
    assert "optimizer: adam, adamw, sgd" in result.stdout
    assert "data: manifold, mnist, synthetic" in result.stdout
    assert "vnnlab-train -m model.lr=1e-3,1e-2" in result.stdout
    assert not command.store.exists()
