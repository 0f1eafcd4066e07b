"""Acceptance figures for sweeps (issue: sweeps you can trust), measured with the real command.

1. parallel: `vnnlab-train -m model.lr=0.001,0.003,0.01,0.03` with the joblib launcher
   (n_jobs=2) in an empty folder, against the same sweep run sequentially in another empty
   folder, interleaved `--repeats` times; reports children FINISHED and the wall-time ratio.
2. diverging: `vnnlab-train -m model.lr=0.001,1e30`: statuses, failure tag, exit code.
3. optuna: a 20-trial search over model.lr and model.sigma2 whose lr range reaches values
   that diverge (Adam near 3), interrupted with SIGTERM after `--interrupt-after` finished
   trials, then the same command again: the study's trial states before and after.

    python benchmarks/sweep_acceptance.py [--parts parallel diverging optuna] [--repeats 2]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

RESULTS = Path(__file__).parent / "results" / "sweep_acceptance.json"
# vnnlab-train with this interpreter
VNNLAB_TRAIN = [sys.executable, "-m", "vnnlab"]
QUIET = ["trainer.enable_progress_bar=false"]
LRS = "model.lr=0.001,0.003,0.01,0.03"
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def vnnlab_train(folder: Path, *overrides: str) -> tuple[int, float, str]:
    """Run the command in `folder`; (exit code, wall seconds, stderr)."""
    start = time.perf_counter()
    done = subprocess.run(
        [*VNNLAB_TRAIN, *overrides],
        cwd=folder, capture_output=True, text=True, env=environment(),
    )  # fmt: skip
    return done.returncode, time.perf_counter() - start, done.stderr


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def runs_of(folder: Path) -> list:
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def children(folder: Path) -> list:
    return [r for r in runs_of(folder) if r.data.tags.get("vnnlab.sweep.role") == "child"]


def parallel_against_sequential(repeats: int) -> dict:
    timings: dict[str, list[float]] = {"sequential": [], "joblib": []}
    statuses = {}
    for _ in range(repeats):
        for name, launcher in (("sequential", []), ("joblib", JOBLIB)):
            with tempfile.TemporaryDirectory() as scratch:
                folder = Path(scratch)
                code, seconds, stderr = vnnlab_train(folder, "-m", LRS, *QUIET, *launcher)
                assert code == 0, stderr[-2000:]
                timings[name].append(seconds)
                statuses[name] = sorted(r.info.status for r in children(folder))
    best = {name: min(values) for name, values in timings.items()}
    return {
        "timings_s": timings,
        "children": statuses,
        "ratio_joblib_over_sequential": best["joblib"] / best["sequential"],
        "cpu_count": os.cpu_count(),
    }


def diverging() -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        code, seconds, stderr = vnnlab_train(folder, "-m", "model.lr=0.001,1e30", *QUIET)
        rows = {
            r.data.params["model.lr"]: (r.info.status, r.data.tags.get("vnnlab.failure", ""))
            for r in children(folder)
        }
        summary = stderr[stderr.find("jobs did not finish") - 10 :].strip()
    return {"exit_code": code, "seconds": seconds, "children": rows, "summary": summary}


def optuna_trials(folder: Path) -> dict[str, int]:
    import optuna

    storage = f"sqlite:///{folder / 'optuna.db'}"
    [summary] = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    states = [t.state.name for t in study.trials]
    return {state: states.count(state) for state in sorted(set(states))} | {"total": len(states)}


def optuna_interrupted_and_resumed(interrupt_after: int) -> dict:
    search = ["-m", "hydra/sweeper=vnnlab_optuna", "hydra.sweeper.n_trials=20",
              "model.lr=tag(log,interval(1e-4,3.0))", "model.sigma2=choice(0.001,0.01,0.1)",
              "trainer.max_epochs=10", "data.n_train=300", *QUIET]  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        process = subprocess.Popen(
            [*VNNLAB_TRAIN, *search], cwd=folder, env=environment(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while len([r for r in children(folder) if r.info.status != "RUNNING"]) < interrupt_after:
            if process.poll() is not None:
                break
            time.sleep(1)
        process.send_signal(signal.SIGTERM)
        first_exit = process.wait(timeout=120)
        before = optuna_trials(folder)
        code, seconds, _ = vnnlab_train(folder, *search)
        after = optuna_trials(folder)
        parents = [r for r in runs_of(folder) if r.data.tags.get("vnnlab.sweep.role") == "parent"]
        left_running = [r.info.run_id for r in runs_of(folder) if r.info.status == "RUNNING"]
    return {
        "interrupted_exit_code": first_exit,
        "trials_after_interrupt": before,
        "resumed_exit_code": code,
        "resumed_seconds": seconds,
        "trials_after_resume": after,
        "parent_runs": sorted(r.info.status for r in parents),
        "runs_left_running": left_running,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["parallel", "diverging", "optuna"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--interrupt-after", type=int, default=8)
    args = parser.parse_args()
    report: dict = {}
    if "parallel" in args.parts:
        report["parallel"] = parallel_against_sequential(args.repeats)
        print(json.dumps(report["parallel"], indent=2), flush=True)
    if "diverging" in args.parts:
        report["diverging"] = diverging()
        print(json.dumps(report["diverging"], indent=2), flush=True)
    if "optuna" in args.parts:
        report["optuna"] = optuna_interrupted_and_resumed(args.interrupt_after)
        print(json.dumps(report["optuna"], indent=2), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
