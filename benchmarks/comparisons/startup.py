"""5. Start-up and 6. sweep throughput, through the real command in fresh processes.

- `vnnlab-train --help`, and from the command to the first training step: a one-batch epoch
  of the default job, timed to its "epoch 1/1" line (an upper bound on the first step: that
  line comes after one training and one validation batch). The store exists already (the
  sweep below made it), as for every run after a user's first.
- a sweep of small jobs (MLP regressor, 20 epochs, one seed each) with Hydra's basic launcher
  (sequential, in one process) and, but for --quick, with the joblib launcher (2 jobs at a
  time); the overhead
  per job is the sequential sweep's wall time, less the jobs' training time, per job. The
  training time of a job is measured in this process: Lightning's Timer around `fit`."""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytorch_lightning.callbacks import Timer

from comparisons.common import Row, Scale, compose_config, median_seconds, working_directory
from vnnlab.run.training import train

COMMAND = [sys.executable, "-m", "vnnlab"]
ONE_BATCH = ["trainer.max_epochs=1", "trainer.limit_train_batches=1",
             "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"]  # fmt: skip
SWEEP_JOB = ["model=mlp_regressor", "trainer.max_epochs=20"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def environment() -> dict[str, str]:
    """The user's environment without a tracking URI, so runs go to the folder's store."""
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def run(folder: Path, *arguments: str) -> None:
    done = subprocess.run([*COMMAND, *arguments], cwd=folder, capture_output=True, text=True,
                          env=environment())  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} exited {done.returncode}: {done.stderr[-2000:]}")


def seconds_to_first_epoch(
    folder: Path, command: list[str] = COMMAND, env: dict[str, str] | None = None
) -> float:
    """From the command to its "epoch 1/1" line on stderr."""
    start = time.perf_counter()
    process = subprocess.Popen([*command, *ONE_BATCH], cwd=folder, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True,
                               env=env or environment())  # fmt: skip
    seconds = None
    for line in process.stderr:
        if seconds is None and line.startswith("epoch 1/1"):
            seconds = time.perf_counter() - start
    if process.wait() != 0 or seconds is None:
        raise RuntimeError(f"the one-batch run exited {process.returncode} without an epoch line")
    return seconds


def startup_rows(scale: Scale, folder: Path) -> list[Row]:
    """In `folder`, whose store exists."""
    help_seconds, help_each = median_seconds(lambda: run(folder, "--help"), scale.startup_repeats)
    first = [seconds_to_first_epoch(folder) for _ in range(scale.startup_repeats)]
    first_seconds = statistics.median(first)
    return [
        Row("start-up: command to the first training step", first_seconds, "s", "≤ 8 s",
            first_seconds <= 8, {"each": first}),
        Row("start-up: vnnlab-train --help", help_seconds, "s", "≤ 3 s", help_seconds <= 3,
            {"each": help_each}),
    ]  # fmt: skip


def job_training_seconds(folder: Path, repeats: int) -> float:
    """Median `fit` seconds of one sweep job, trained in this process."""
    each = []
    for _ in range(1 + repeats):  # the first warms up
        timer = Timer()
        cfg = compose_config([*SWEEP_JOB, "trainer.enable_progress_bar=false",
                              f"tracking.uri=sqlite:///{folder}/in-process.db"])  # fmt: skip
        with working_directory(folder):
            train(cfg, callbacks=[timer])
        each.append(timer.time_elapsed("train"))
    return statistics.median(each[1:])


def sweep_rows(scale: Scale, folder: Path) -> list[Row]:
    """Each sweep in a fresh subfolder of `folder`; the training time in `folder` itself."""
    seeds = f"seed=range(0,{scale.sweep_jobs})"
    launchers = {"sequential": [], **({} if scale.quick else {"joblib, 2 jobs": JOBLIB})}
    wall = {}
    for name, launcher in launchers.items():
        (folder / name).mkdir()
        start = time.perf_counter()
        run(folder / name, "-m", seeds, *SWEEP_JOB, "trainer.enable_progress_bar=false", *launcher)
        wall[name] = time.perf_counter() - start
    training = job_training_seconds(folder, scale.startup_repeats)
    per_job = (wall["sequential"] - scale.sweep_jobs * training) / scale.sweep_jobs
    details = {"wall_seconds": wall, "jobs": scale.sweep_jobs, "job_training_seconds": training}
    rows = [Row(f"sweep: overhead per job beyond training ({scale.sweep_jobs} jobs, sequential)",
                per_job, "s", "≤ 1 s", per_job <= 1, details)]  # fmt: skip
    if "joblib, 2 jobs" in wall:
        parallel = wall["joblib, 2 jobs"] / wall["sequential"]
        rows.append(Row(f"sweep: joblib (2 jobs) / sequential wall time, {scale.sweep_jobs} jobs",
                        parallel, "×", "(reference)"))  # fmt: skip
    return rows


def compare(scale: Scale) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="vnnlab-bench-") as temporary:
        folder = Path(temporary)
        sweep = sweep_rows(scale, folder)
        return startup_rows(scale, folder / "sequential") + sweep
