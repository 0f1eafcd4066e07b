"""A search shared across processes: two `vnnlab-train -m hydra/sweeper=vnnlab_optuna` processes
started together on one study, in a journal file (a shared filesystem) or in PostgreSQL. Between
them they run exactly n_trials trials, each number once; each trial is a child run under its own
process's parent (each process is one `-m` command, with its own verdict and exit code); a trial
that fails is FAIL. One of the two diverges on purpose (model.lr=1e30: its runs end FAILED)."""

import optuna
import pytest
from optuna.trial import TrialState

from helpers import FAST

pytestmark = pytest.mark.slow

N_TRIALS = 6
STUDY = "shared"
DIVERGES = "model.lr=1e30"  # a non-finite loss at the first steps: the run ends FAILED


def run_two_sweepers(cli, storage: str) -> list:
    common = ["-m", "hydra/sweeper=vnnlab_optuna", f"hydra.sweeper.n_trials={N_TRIALS}",
              f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={STUDY}",
              "model.sigma2=interval(0.01,1)", *FAST, "data.n_train=100"]  # fmt: skip
    healthy = cli.popen(*common, "hydra.sweep.dir=multirun/healthy")
    diverging = cli.popen(*common, DIVERGES, "hydra.sweep.dir=multirun/diverging")
    healthy_out, healthy_err = healthy.communicate(timeout=600)
    diverging.communicate(timeout=600)
    assert healthy.returncode == 0, healthy_err[-3000:]
    assert diverging.returncode == 1  # its jobs failed, and it says so
    return cli.runs()


def check_shared_study(cli, storage) -> None:
    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(N_TRIALS))  # exactly n_trials, no number twice
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED) for t in trials)
    runs = cli.runs()
    parents = {r.data.tags["vnnlab.sweep.dir"].rsplit("/", 1)[-1]: r for r in runs
               if r.data.tags.get("vnnlab.sweep.role") == "parent"}  # fmt: skip
    assert set(parents) == {"healthy", "diverging"}
    by_id = {r.info.run_id: r for r in runs}
    pids = {t.user_attrs["vnnlab.pid"] for t in trials}
    assert len(pids) == 2  # both processes asked trials
    children = [r for r in runs if r.data.tags.get("vnnlab.sweep.role") == "child"]
    assert len(children) == N_TRIALS  # one child per trial, none outside the study
    # A job's number is its trial's (the sweeper launches trial n as job n): unique across both
    for trial in trials:
        [child] = [c for c in children if c.data.tags["vnnlab.sweep.job"] == str(trial.number)]
        assert trial.user_attrs.get("mlflow_run_id", child.info.run_id) == child.info.run_id
        parent = by_id[child.data.tags["mlflow.parentRunId"]]
        diverged = DIVERGES in parent.data.tags["vnnlab.sweep.overrides"]
        assert (trial.state == TrialState.FAIL) == diverged, (trial.number, trial.state)
        assert child.info.status == ("FAILED" if diverged else "FINISHED")
        assert float(child.data.params["model.sigma2"]) == trial.params["model.sigma2"]


def test_two_sweepers_share_one_journal_file(cli):
    path = cli.workdir / "shared" / "study.log"
    run_two_sweepers(cli, f"journal://{path}")
    from vnnlab.sweep.study_storage import open_storage

    check_shared_study(cli, open_storage(f"journal://{path}"))
    assert not list(path.parent.glob("*.lock"))  # no lock left behind


def test_two_sweepers_share_one_postgresql_study(cli, postgres):
    storage = postgres.create_database("optuna_shared")
    run_two_sweepers(cli, storage)
    check_shared_study(cli, storage)
