"""Where an Optuna study lives (vnnlab.sweep.study_storage) and which RUNNING trials a sweeper
fails as interrupted when several sweepers share the study: only those whose sweeper is gone."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hydra_plugins.vnnlab_optuna_sweeper.optuna_sweeper import (
    OptunaSweeperConf,
    ask_batch,
    fail_interrupted_trials,
)
from vnnlab.sweep import study_storage

HOST = socket.gethostname()


def a_dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize(
    ("owner", "failed"),
    [
        (None, True),  # asked by hand, or by a sweeper that recorded no owner
        ("this process", True),  # left over from an earlier sweep in this very process
        ("a dead process", True),
        ("the parent process", False),  # alive: another sweeper of the study, still at work
        ("another host", False),  # cannot be checked from here: left to its own node
    ],
)
def test_only_trials_whose_sweeper_is_gone_are_failed(tmp_path: Path, owner, failed):
    storage = study_storage.open_storage(f"journal://{tmp_path / 'study.log'}")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    if owner is not None:
        pids = {"this process": os.getpid(), "a dead process": a_dead_pid(),
                "the parent process": os.getppid(), "another host": 1}  # fmt: skip
        trial.set_user_attr("vnnlab.host", "elsewhere" if owner == "another host" else HOST)
        trial.set_user_attr("vnnlab.pid", pids[owner])
    fail_interrupted_trials(study)
    expected = TrialState.FAIL if failed else TrialState.RUNNING
    assert study.get_trials()[0].state == expected


def test_a_batch_is_asked_up_to_n_trials_counting_running_ones_each_owned(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    study.ask()  # another sweeper's trial, still running
    settings = OptunaSweeperConf(n_trials=4, n_jobs=2)
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    first = ask_batch(study, url, space, settings)
    second = ask_batch(study, url, space, settings)
    assert [t.number for t in first + second] == [1, 2, 3]  # 4 in all, the running one counted
    assert ask_batch(study, url, space, settings) == []
    owners = [t.user_attrs for t in study.get_trials()[1:]]
    assert owners == [{"vnnlab.host": HOST, "vnnlab.pid": os.getpid()}] * 3


def test_a_relative_journal_file_is_made_absolute_and_other_urls_are_kept(tmp_path: Path):
    assert study_storage.absolute("journal://runs/study.log", tmp_path) == (
        f"journal://{tmp_path.resolve() / 'runs/study.log'}"
    )
    assert study_storage.absolute("journal:///shared/study.log", tmp_path) == (
        "journal:///shared/study.log"
    )
    url = "postgresql+psycopg://me@db/optuna"
    assert study_storage.absolute(url, tmp_path) == url
    assert study_storage.open_storage(url) == url
