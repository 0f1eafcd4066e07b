"""Multi-process training for real: `vnnlab-train trainer.strategy=ddp trainer.devices=2
trainer.accelerator=cpu` starts a second process (Lightning's launcher) and the two train
together over gloo. One step of the two equals one step of a single process on the union of
their batches; one MLflow run is written, by rank 0; a SIGTERM stops both at the same step
and the run, KILLED, resumes (on two processes again, from its own config) to FINISHED with
every epoch once."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from helpers import CLI, composed
from vnnlab.run.build import build_data_and_model

pytestmark = pytest.mark.slow

DDP = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
# One plain SGD step (Adam's first step is lr·sign(g): blind to the scale of the KL), with one
# weight draw for the whole step (estimator=weights), which both processes draw alike; a small
# N, so that KL/N moves the weights well beyond float error.
SGD_STEP = ["data.n_train=200", "optimizer=sgd", "model.lr=0.1", "model.lr_schedule=none",
            "trainer.max_steps=1", "trainer.limit_val_batches=0",
            "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false"]  # fmt: skip
ONE_STEP = ["model=bnn_regressor", "inference.estimator=weights", *SGD_STEP]
TOLERANCE = 1e-5


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def kl_share_of_the_step(lr: float) -> float:
    """The largest change one SGD step makes through KL/N alone (the initial weights, as the
    command draws them; each parameter group at its own lr): what a per-process N (half the
    global) would add to the step."""
    _, model = build_data_and_model(composed(*ONE_STEP))
    (model.inference.net.kl("closed_form") / model.inference.n_train).backward()
    return max(
        lr * group.get("lr_scale", 1.0) * param.grad.abs().max().item()
        for group in model.parameter_groups()
        for param in group["params"]
    )


def test_one_step_on_two_processes_is_one_step_on_the_union_of_their_batches(tmp_path):
    cli = CLI(tmp_path)
    two = cli.run(*ONE_STEP, *DDP, "data.batch_size=25", f"hydra.run.dir={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    assert len(cli.runs()) == 1  # rank 1 recorded nothing
    one = cli.run(*ONE_STEP, "data.batch_size=50", f"hydra.run.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]

    on_two, on_one = weights(tmp_path / "two"), weights(tmp_path / "one")
    difference = max((on_two[k] - on_one[k]).abs().max().item() for k in on_one)
    kl_step = kl_share_of_the_step(lr=0.1)
    print(f"\n2 processes × 25 rows against 1 × 50: max |Δθ| = {difference:.2e} "
          f"(tolerance {TOLERANCE:g}); KL/N's largest share of the step: {kl_step:.2e}, "
          "which N per process would double")  # fmt: skip
    assert difference <= TOLERANCE
    assert kl_step > 10 * TOLERANCE  # a per-process N would fail the comparison


def test_the_test_metrics_of_two_processes_are_over_the_whole_split(tmp_path):
    """An MLP evaluates without noise: after the same step, the two processes' test metrics
    (each over its share of the test split, reduced by torchmetrics) are the single
    process's over the whole split. Unreduced, rank 0 would report its own half."""
    cli = CLI(tmp_path)
    mlp = ["model=mlp_regressor", *SGD_STEP, "data.n_test=301"]  # shares of 151 and 150 rows
    for overrides in ([*DDP, "data.batch_size=25"], ["data.batch_size=50"]):
        result = cli.run(*mlp, *overrides)
        assert result.returncode == 0, result.stderr[-3000:]
    two, one = (run.data.metrics for run in cli.runs())
    for key in ("test/mse", "test/rmse"):
        assert two[key] == pytest.approx(one[key], rel=1e-5)


# Long enough to be stopped mid-epoch: 40 steps an epoch on each process.
RUNS = {
    "bnn": ["model=bnn_regressor", "data.n_train=4000", "data.n_val=200", "data.n_test=200"],
    "vae": ["model=vae", "data=manifold", "data.n_train=8000", "data.n_val=200",
            "data.n_test=200"],
}  # fmt: skip
EPOCHS = 5


def processes_running(marker: str) -> list[int]:
    """Pids of live processes whose command line contains `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in command:
                pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("model", ["bnn", "vae"])
def test_a_two_process_run_stopped_by_sigterm_resumes_to_the_end(tmp_path, model):
    cli = CLI(tmp_path)
    out = tmp_path / "first"
    process = cli.popen(*RUNS[model], *DDP, f"trainer.max_epochs={EPOCHS}",
                        f"hydra.run.dir={out}")  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if f"epoch 2/{EPOCHS}" in line:
            break
    else:
        pytest.fail(f"no epoch line; exit {process.wait()}")
    time.sleep(0.2)  # into the next epoch
    process.send_signal(signal.SIGTERM)  # to rank 0, as `kill` would
    process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while processes_running(str(out)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_running(str(out)) == []  # rank 1 stopped too
    [run] = cli.runs()
    assert run.info.status == "KILLED"
    stopped_at = len(cli.client().get_metric_history(run.info.run_id, "train/loss"))
    assert 2 <= stopped_at < EPOCHS

    resumed = cli.run(f"resume={run.info.run_id}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [after] = cli.runs()  # the same run, still the only one
    assert (after.info.run_id, after.info.status) == (run.info.run_id, "FINISHED")
    steps = [m.step for m in cli.client().get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == [40 * epoch - 1 for epoch in range(1, EPOCHS + 1)]  # each once
    assert any(key.startswith("test/") for key in after.data.metrics)
    assert after.data.params["trainer.strategy"] == "ddp"
