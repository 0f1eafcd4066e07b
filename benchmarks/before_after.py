"""The same measurements on two versions of vnnlab, side by side in one run: this checkout and
an earlier commit (a git worktree), each in its own processes (PYTHONPATH names its src/), the
two alternating repetition by repetition so that a change in the machine's load lands on both.

    python benchmarks/before_after.py --before f33c06b --root ../shared/data [--after HEAD]

- start-up: from the command to its "epoch 1/1" line, a one-batch epoch of the default job
  (the store exists already, as for every run after a user's first);
- sweep: a 20-job sequential sweep of small jobs (MLP regressor, 20 epochs); its overhead per
  job is the wall time less the jobs' training time (Lightning's Timer around fit, measured
  in a process of the same version), per job;
- MNIST VAE epoch: one epoch (784-400-20, batch 128) through train(), Timer around fit;
- MNIST BBB epoch: one epoch of the bnn_classifier preset (784-400-400-10), the same way;
- parallel sweep: the 4-job default sweep over model.lr with the joblib launcher, 2 workers.

Prints medians and the ratios after/before, and writes them to
benchmarks/results/before_after.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from comparisons.startup import seconds_to_first_epoch  # benchmarks/ is on the path

HERE = Path(__file__).resolve().parents[1]
RESULTS = HERE / "benchmarks" / "results"
SWEEP_JOB = ["model=mlp_regressor", "trainer.max_epochs=20", "trainer.enable_progress_bar=false"]
SWEEP_JOBS = 20
PARALLEL = ["model.lr=0.001,0.003,0.01,0.03", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
# One job's fit seconds, in a process of the version under test (its train() signature).
FIT_SECONDS = """
import sys, json
from pytorch_lightning.callbacks import Timer
from hydra import compose, initialize_config_dir
try:  # today's layout, then the one before run/training.py, then the oldest
    from vnnlab import CONFIG_DIR
    from vnnlab.run.training import train
except ImportError:
    try:
        from vnnlab.run.train import train
    except ImportError:
        from vnnlab.cli import CONFIG_DIR
        from vnnlab.train import train
overrides = json.loads(sys.argv[1])
with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
    cfg = compose("config", overrides=overrides)
timer = Timer()
train(cfg, callbacks=[timer])
print(timer.time_elapsed("train"))
"""


class Version:
    """A source tree of vnnlab, run through its own command."""

    def __init__(self, name: str, tree: Path):
        self.name, self.tree = name, tree
        new_layout = (tree / "src" / "vnnlab" / "__main__.py").exists()
        self.command = [sys.executable, "-m", "vnnlab" if new_layout else "vnnlab.cli"]
        self.env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        self.env["PYTHONPATH"] = str(tree / "src")
        # one torch thread: on 2 cores, another process's threads would otherwise multiply a
        # fit's time several-fold (DESIGN.md), and land on one version's repetition only
        self.env["OMP_NUM_THREADS"] = "1"

    def run(self, folder: Path, *arguments: str) -> float:
        start = time.perf_counter()
        done = subprocess.run([*self.command, *arguments], cwd=folder, env=self.env,
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{self.name} {arguments}: {done.stderr[-2000:]}")
        return time.perf_counter() - start

    def seconds_to_first_epoch(self, folder: Path) -> float:
        return seconds_to_first_epoch(folder, self.command, self.env)

    def fit_seconds(self, folder: Path, overrides: list[str]) -> float:
        arguments = [*overrides, f"tracking.uri=sqlite:///{folder / 'fit.db'}"]
        done = subprocess.run([sys.executable, "-c", FIT_SECONDS, json.dumps(arguments)],
                              cwd=folder, env=self.env, capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{self.name} fit: {done.stderr[-2000:]}")
        return float(done.stdout.split()[-1])


def measure(versions: list[Version], folder: Path, root: str, repeats: int) -> dict:
    """Per version, per measurement: the list of repetitions (alternating versions)."""
    each: dict[str, dict[str, list[float]]] = {v.name: {} for v in versions}
    vae = ["model=vae", "data=mnist", f"data.root={root}", "trainer.max_epochs=1",
           "trainer.enable_progress_bar=false", "model.likelihood=bernoulli"]  # fmt: skip
    bbb = ["model=bnn_classifier", "data=mnist", f"data.root={root}", "trainer.max_epochs=1",
           "trainer.enable_progress_bar=false"]  # fmt: skip
    for repeat in range(repeats):
        for version in versions if repeat % 2 == 0 else versions[::-1]:
            work = folder / f"{version.name}-{repeat}"
            work.mkdir()
            record = each[version.name]
            sweep = version.run(work, "-m", f"seed=range(0,{SWEEP_JOBS})", *SWEEP_JOB)
            fit = version.fit_seconds(work, SWEEP_JOB)
            record.setdefault("sweep overhead per job (s)", []).append(
                (sweep - SWEEP_JOBS * fit) / SWEEP_JOBS
            )
            record.setdefault("start-up to the first step (s)", []).append(
                version.seconds_to_first_epoch(work)
            )
            record.setdefault("MNIST VAE epoch, fit (s)", []).append(version.fit_seconds(work, vae))
            record.setdefault("MNIST BBB epoch, fit (s)", []).append(version.fit_seconds(work, bbb))
            (work / "parallel").mkdir()
            record.setdefault("joblib sweep, 4 jobs on 2 workers (s)", []).append(
                version.run(work / "parallel", "-m", *PARALLEL)
            )
            print(f"  {version.name} repeat {repeat + 1}: "
                  + ", ".join(f"{k} {v[-1]:.2f}" for k, v in record.items()),
                  file=sys.stderr, flush=True)  # fmt: skip
    return each


def table(each: dict, before: str, after: str) -> str:
    lines = [f"| measurement | before ({before}) | after | after / before |"]
    lines.append("|---|---:|---:|---:|")
    for key in each[before]:
        old, new = statistics.median(each[before][key]), statistics.median(each[after][key])
        lines.append(f"| {key} | {old:.2f} | {new:.2f} | {new / old:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier commit")
    parser.add_argument("--root", default=os.environ.get("VNNLAB_DATA_ROOT", "data"))
    parser.add_argument("--after", help="a later commit (default: this checkout as it is)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vnnlab-before-after-") as temporary:
        folder = Path(temporary)
        trees = {"before-tree": args.before} | ({"after-tree": args.after} if args.after else {})
        for name, commit in trees.items():
            subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", "-q",
                            str(folder / name), commit], check=True)  # fmt: skip
        try:
            after = folder / "after-tree" if args.after else HERE
            versions = [Version(args.before, folder / "before-tree"), Version("after", after)]
            each = measure(versions, folder, str(Path(args.root).resolve()), args.repeats)
        finally:
            for name in trees:
                subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force",
                                str(folder / name)], check=True)  # fmt: skip
    text = table(each, args.before, "after")
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    detail = "\n".join(f"- {name}: {record}" for name, record in each.items())
    (RESULTS / "before_after.md").write_text(f"{text}\n\nEach repetition:\n{detail}\n")


if __name__ == "__main__":
    main()
