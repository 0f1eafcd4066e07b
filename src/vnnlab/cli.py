"""`vnnlab-train` (and `python -m vnnlab.cli`): the Hydra command line around train().

Only Hydra is imported up front, so that `--help`, `--cfg` and a bad override answer without
loading torch, Lightning and MLflow; a job imports vnnlab.train when it starts.
"""

import gc
import os
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf import DictConfig

CONFIG_DIR = str(Path(__file__).parent / "conf")  # a link to the top-level conf/ in a checkout

# What Hydra raises while composing the config from the overrides, before any job starts.
COMPOSITION_ERRORS = (ConfigCompositionException, MissingConfigException, OverrideParseException)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any] | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return _sweep_job(cfg)
    load_job_code()
    from vnnlab import console
    from vnnlab.errors import BadInputError
    from vnnlab.train import TrackingIncomplete, train

    try:
        run = train(cfg)
    except BadInputError as error:
        print(f"vnnlab: {error}", file=sys.stderr)
        sys.exit(2)
    except TrackingIncomplete as error:
        print(f"vnnlab: {error}", file=sys.stderr)
        sys.exit(1)
    print(
        f"\nvnnlab: run {run.run_id} FINISHED\n"
        f"{console.metrics_table(run.metrics)}\n"
        f"  open it:  mlflow ui --backend-store-uri {run.tracking_uri}\n"
        f"  then:     http://127.0.0.1:5000/#/experiments/{run.experiment_id}/runs/{run.run_id}"
    )
    return None


def _sweep_job(cfg: DictConfig) -> dict[str, Any]:
    """One job of a multirun. A failure is reported and recorded, never raised: Hydra's basic
    launcher would stop the sweep at a SystemExit and report only the first exception; the
    sweep callback (vnnlab.sweep) lists every failed job at the end and exits non-zero."""
    load_job_code()
    import torch

    from vnnlab import sweep
    from vnnlab.errors import BadInputError
    from vnnlab.train import train

    job = sweep.job_name(sweep.current_sweep())
    threads = sweep.threads_per_job()
    if threads is not None:
        torch.set_num_threads(threads)
    pruning = _trial_pruning(cfg)
    try:
        run = train(cfg, callbacks=[pruning] if pruning else [])
    except BadInputError as error:
        outcome = sweep.JobOutcome(job, "BAD_INPUT", str(error))
    except Exception as error:  # the run itself ended FAILED with this reason
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        outcome = sweep.JobOutcome(job, "FAILED", reason)
    else:
        if pruning is not None and pruning.pruned:
            reason = f"pruned by the sweeper after epoch {pruning.pruned_epoch}"
            outcome = sweep.JobOutcome(job, "PRUNED", reason, run.run_id, run.metrics)
        else:
            outcome = sweep.JobOutcome(job, "FINISHED", "", run.run_id, run.metrics)
    if outcome.status != "FINISHED":
        print(f"vnnlab: job [{job}] {outcome.status}: {outcome.reason}", file=sys.stderr)
    sweep.record(outcome)
    return outcome.as_dict()


def load_job_code() -> None:
    """Import what a job runs (torch, Lightning, MLflow and its SQL store) once per process,
    with the garbage collector paused, then freeze what was loaded. The imports create ~700k
    objects that live until exit: while they loaded, the collector walked them all 9 times to
    free ~500 (1-2 s of a 9 s import); afterwards every full collection walked them again (0.3 s
    each, during training) and so did the interpreter's exit (2 s, in every process and joblib
    worker). Once only: a later job's leftovers are not frozen with them."""
    if gc.get_freeze_count() > 0:
        return
    gc.disable()
    try:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (the default SQLite store)

        import vnnlab.train  # noqa: F401  (torch, Lightning, MLflow)
    finally:
        gc.freeze()
        gc.enable()


def _trial_pruning(cfg: DictConfig):
    """The Optuna sweeper's per-epoch pruning, when this job is one of its trials."""
    if cfg.get("trial") is None:
        return None
    from vnnlab.pruning import TrialPruning

    return TrialPruning(**cfg.trial)


def main() -> None:
    """Console entry point. An override Hydra cannot compose (an unknown key, a missing
    option) is bad input as well: one line and exit 2, instead of Hydra's report and exit 1."""
    # Hydra prints its own errors and exits 1 unless this is set; with it they reach us.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _hydra_main()
    except COMPOSITION_ERRORS as error:
        text = str(error).split("Config search path")[0]  # drop Hydra's search-path dump
        print("vnnlab: " + " ".join(line.strip() for line in text.splitlines()), file=sys.stderr)
        sys.exit(2)
    except SystemExit as stop:
        if _stopped_by_sigterm(stop):  # Lightning's stop on SIGTERM: a SystemExit, no code
            sys.exit(128 + signal.SIGTERM)
        if isinstance(stop.__context__, KeyboardInterrupt):  # Lightning's exit(1) on Ctrl-C
            sys.exit(128 + signal.SIGINT)
        raise
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM between jobs (tracking.raise_interrupt)
        by_sigterm = str(stop) == f"signal {signal.SIGTERM}"
        sys.exit(128 + (signal.SIGTERM if by_sigterm else signal.SIGINT))
    finally:
        _end_sweep_if_interrupted()
        gc.freeze()  # the process ends: its last collections need not walk what it loaded
    _exit_if_the_sweep_failed()


def _stopped_by_sigterm(stop: SystemExit) -> bool:
    lightning = sys.modules.get("pytorch_lightning.utilities.exceptions")
    return lightning is not None and isinstance(stop, lightning.SIGTERMException)


def _end_sweep_if_interrupted() -> None:
    sweep = sys.modules.get("vnnlab.sweep")  # loaded only if a multirun started here
    if sweep is not None:
        sweep.end_open_parents("KILLED")


def _exit_if_the_sweep_failed() -> None:
    sweep = sys.modules.get("vnnlab.sweep")
    failure = sweep.take_failure() if sweep is not None else None
    if failure is not None:
        print(f"vnnlab: {failure}", file=sys.stderr)
        sys.exit(failure.exit_code)


if __name__ == "__main__":  # `python -m vnnlab.cli`
    # the main of vnnlab.cli, as vnnlab-train calls it, not of this copy named __main__: joblib's
    # workers then find the job function by its module's name instead of receiving a copy of it
    from vnnlab.cli import main as vnnlab_train

    vnnlab_train()
