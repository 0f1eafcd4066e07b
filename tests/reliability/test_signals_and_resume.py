"""Stopping a real `vnnlab-train` mid-epoch with SIGINT, SIGTERM or SIGKILL, then
`resume=<run_id>`: the same run ends FINISHED with the test metrics of a run never stopped
(same seed), and its metric history holds every epoch exactly once.

All runs share one store, so "no new run" and "nothing left RUNNING" are checked across them.
"""

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import CLI

pytestmark = pytest.mark.slow

# 6 epochs of 80 BNN steps (about 0.5 s each on one core): long enough to be stopped mid-epoch
RUN = ["model=bnn_regressor", "data.n_train=4000", "data.n_val=200", "data.n_test=200",
       "trainer.max_epochs=6", "inference.mc_samples=2"]  # fmt: skip
STOP_AFTER = "epoch 2/6"  # stderr line (not a terminal: one line per epoch)
EXIT_CODES = {signal.SIGINT: 128 + signal.SIGINT, signal.SIGTERM: 128 + signal.SIGTERM,
              signal.SIGKILL: -signal.SIGKILL}  # fmt: skip
STATUS_WHEN_STOPPED = {signal.SIGINT: "KILLED", signal.SIGTERM: "KILLED",
                       signal.SIGKILL: "RUNNING"}  # SIGKILL: no chance to say anything  # fmt: skip


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> CLI:
    return CLI(tmp_path_factory.mktemp("resume"))


@pytest.fixture(scope="module")
def uninterrupted(cli):
    result = cli.run(*RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = cli.runs()
    return run


def stop_mid_epoch(cli: CLI, signum: int, *overrides: str) -> subprocess.Popen:
    """Start a run, wait until an epoch line is printed, then signal it a moment later."""
    process = cli.popen(*RUN, *overrides)
    assert process.stderr is not None
    for line in process.stderr:
        if STOP_AFTER in line:
            break
    else:
        pytest.fail(f"no '{STOP_AFTER}' line; exit {process.wait()}")
    time.sleep(0.2)  # into the next epoch
    process.send_signal(signum)
    process.communicate(timeout=120)
    return process


def the_new_run(cli: CLI, known: set[str]):
    [run] = [r for r in cli.runs() if r.info.run_id not in known]
    return run


def steps(cli: CLI, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in cli.client().get_metric_history(run_id, key))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])  # fmt: skip
def test_a_run_stopped_mid_epoch_resumes_to_the_same_result(cli, uninterrupted, signum):
    known = {run.info.run_id for run in cli.runs()}
    stopped = stop_mid_epoch(cli, signum)
    assert stopped.returncode == EXIT_CODES[signum]
    run = the_new_run(cli, known)
    assert run.info.status == STATUS_WHEN_STOPPED[signum]
    assert len(steps(cli, run.info.run_id, "train/loss")) < 6  # it really was cut short

    resumed = cli.run(f"resume={run.info.run_id}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run.info.run_id in resumed.stdout
    assert {r.info.run_id for r in cli.runs()} == known | {run.info.run_id}  # no new run
    after = cli.client().get_run(run.info.run_id)
    assert after.info.status == "FINISHED"
    assert [r.info.status for r in cli.runs()].count("RUNNING") == 0  # SIGKILL's taken over
    assert "vnnlab.stopped_by" not in after.data.tags
    reference = uninterrupted.data.metrics
    tests = {key: value for key, value in reference.items() if key.startswith("test/")}
    assert {key: after.data.metrics[key] for key in tests} == tests  # bit for bit
    for key in ("train/loss", "val/loss"):  # every epoch once, none twice
        assert steps(cli, run.info.run_id, key) == steps(cli, uninterrupted.info.run_id, key)


def test_resume_trains_longer_and_refuses_a_run_that_is_still_running(cli, uninterrupted):
    longer = cli.run(f"resume={uninterrupted.info.run_id}", "trainer.max_epochs=7")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert len(steps(cli, uninterrupted.info.run_id, "train/loss")) == 7
    run = cli.client().get_run(uninterrupted.info.run_id)
    assert run.data.params["trainer.max_epochs"] == "6"  # params never change in MLflow
    assert run.data.tags["vnnlab.resumed_with"] == "trainer.max_epochs=7"

    known = {r.info.run_id for r in cli.runs()}
    process = cli.popen(*RUN, "trainer.max_epochs=1000")
    try:
        cli.wait_for_an_epoch(process, known=frozenset(known))
        [running] = [r for r in cli.runs() if r.info.run_id not in known]
        refused = cli.run(f"resume={running.info.run_id}")
        assert refused.returncode == 2
        assert f"is not allowed: expected a run that is not running (process {process.pid}" in (
            refused.stderr
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)


def test_a_run_whose_checkpoint_folder_is_gone_resumes_from_its_logged_checkpoint(cli, tmp_path):
    """Its folder deleted (a cleaned disk, another machine): resume downloads the checkpoint the
    run logged when it ended into the continued run's own folder and trains on from it (epoch 3
    only), leaving no copy in a temporary folder or beside the new last.ckpt."""
    known = {r.info.run_id for r in cli.runs()}
    first = cli.run(*RUN, "trainer.max_epochs=2")
    assert first.returncode == 0, first.stderr[-3000:]
    run = the_new_run(cli, known)
    shutil.rmtree(run.data.tags["vnnlab.checkpoint_dir"])

    env = cli.env | {"TMPDIR": str(tmp_path)}
    resumed = subprocess.run(cli.command(f"resume={run.info.run_id}", "trainer.max_epochs=3"),
                             cwd=cli.workdir, env=env, capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch 3/3" in resumed.stderr and "epoch 1/3" not in resumed.stderr
    # each epoch once, logged at its last step (80 steps of 50 points an epoch)
    assert steps(cli, run.info.run_id, "train/loss") == [80 * epoch - 1 for epoch in (1, 2, 3)]
    folder = Path(cli.client().get_run(run.info.run_id).data.tags["vnnlab.checkpoint_dir"])
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("vnnlab-")] == []


# Every other inference method, stopped by SIGKILL (no chance to save anything at the signal):
# IVON's optimiser state, the ensemble's members and Laplace's curvature (fitted after the
# last epoch, from the resumed weights) all come back.
METHODS = ["map", "mc_dropout", "ensemble", "laplace", "ivon"]
METHOD_RUN = ["model=regressor", "data.n_train=8000", "data.n_val=200", "data.n_test=200",
              "trainer.max_epochs=6"]  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_every_method_killed_and_resumed_ends_as_if_never_stopped(tmp_path, method):
    cli = CLI(tmp_path)
    run = [*METHOD_RUN, f"inference={method}"]
    whole = cli.run(*run)
    assert whole.returncode == 0, whole.stderr[-3000:]
    [reference] = cli.runs()

    process = cli.popen(*run)
    assert process.stderr is not None
    for line in process.stderr:
        if STOP_AFTER in line:
            break
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=120)
    stopped = the_new_run(cli, {reference.info.run_id})
    assert len(steps(cli, stopped.info.run_id, "train/loss")) < 6

    resumed = cli.run(f"resume={stopped.info.run_id}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = cli.client().get_run(stopped.info.run_id)
    assert after.info.status == "FINISHED"
    tests = {k: v for k, v in reference.data.metrics.items() if k.startswith("test/")}
    assert {key: after.data.metrics[key] for key in tests} == tests  # bit for bit
