"""A real `mlflow server` that goes away while a real `vnnlab-train` logs to it: training goes
on; a server back within MLflow's retries gets the whole record, and what a server gone for
good never took is reported at the end, with the checkpoint kept locally."""

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from helpers import CLI, MlflowServer

pytestmark = pytest.mark.slow

EPOCHS = 5
RUN = ["model=mlp_regressor", "data.n_train=2000", "data.n_val=100", "data.n_test=100",
       f"trainer.max_epochs={EPOCHS}"]  # fmt: skip


def read_until(process: subprocess.Popen, text: str) -> list[str]:
    """stderr lines of `process` up to and including the first that contains `text`."""
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if text in line:
            return lines
    pytest.fail(f"no line with {text!r}: exit {process.wait()}, {''.join(lines)[-2000:]}")


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(tmp_path / "server")
    server.folder.mkdir()
    server.start()
    yield server
    server.stop()


def test_a_server_back_within_the_retries_gets_the_whole_run(cli, server, tmp_path):
    process = cli.popen(*RUN, f"tracking.uri={server.url}")
    read_until(process, f"epoch 1/{EPOCHS}")
    server.stop()  # the next epoch's metrics meet a closed port
    server.start()  # a few seconds later, on the same port and store
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    client = MlflowClient(server.url)
    [run] = client.search_runs([client.get_experiment_by_name("vnnlab").experiment_id])
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "val/loss"):
        assert len(client.get_metric_history(run.info.run_id, key)) == EPOCHS
    assert "test/mse" in run.data.metrics


def test_a_server_gone_for_good_stops_no_training_and_what_it_missed_is_reported(cli: CLI, server):
    cli.env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # MLflow gives up at once
    process = cli.popen(*RUN, f"tracking.uri={server.url}")
    read_until(process, f"epoch 2/{EPOCHS}")
    server.stop()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]
    assert f"epoch {EPOCHS}/{EPOCHS}" in stderr  # trained to its end
    assert "does not answer; training goes on" in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("vnnlab: run ") and "stopped answering" in last
    [unsent] = cli.workdir.glob("outputs/*/*/checkpoints/unsent.txt")
    lines = unsent.read_text().splitlines()
    assert any(line.startswith("metrics at step") and "val/loss=" in line for line in lines)
    assert any("test/mse=" in line for line in lines)
    assert lines[-1] == "status FINISHED"  # the run's end, last of all
    assert (unsent.parent / "last.ckpt").is_file()
    assert f"{len(lines)} records not sent" in last
