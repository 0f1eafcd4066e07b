"""`vnnlab-train`, the console script (also `python -m vnnlab`): the Hydra command line around
the training function, vnnlab.run.training.train.

Only Hydra is imported up front, so that `--help`, `--cfg` and a bad override answer without
loading torch, Lightning and MLflow; a job imports them when it starts (import_job_code).
"""

import gc
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig

from vnnlab import CONFIG_DIR
from vnnlab.errors import BadInputError
from vnnlab.run.context import RunContext
from vnnlab.sweep import hydra_callback as sweep_callback
from vnnlab.tracking.interrupts import Interrupted

PROGRAM = "vnnlab-train"
# What Hydra raises while composing the config from the overrides, before any job starts.
COMPOSITION_ERRORS = (ConfigCompositionException, MissingConfigException, OverrideParseException)
EXIT_BAD_INPUT, EXIT_FAILED = 2, 1


def main(argv: Sequence[str] | None = None) -> None:
    """The console entry point; `argv` (default: the process's arguments) lets a test or a
    script run the command in-process. Ends with SystemExit on anything but success: 2 for bad
    input (an override Hydra cannot compose included: one line, not Hydra's report and exit
    1), 1 for a run that failed, 128 + the signal for a run stopped by one."""
    # Hydra prints its own errors and exits 1 unless this is set; with it they reach us.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        with _command_line(argv):
            sys.argv[1:] = _every_split_column(sys.argv[1:])
            _hydra_main()
    except BadInputError as error:  # in the command line itself, before Hydra reads it
        _exit(EXIT_BAD_INPUT, str(error))
    except COMPOSITION_ERRORS as error:
        text = str(error).split("Config search path")[0]  # drop Hydra's search-path dump
        _exit(EXIT_BAD_INPUT, " ".join(line.strip() for line in text.splitlines()))
    except Interrupted as stop:
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:  # Ctrl-C outside a run (composing, between jobs)
        sys.exit(128 + signal.SIGINT)
    finally:
        sweep_callback.end_open_parents("KILLED")
    failure = sweep_callback.take_failure()
    if failure is not None:
        _exit(failure.exit_code, str(failure))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any] | None:
    import_job_code()  # then the job's modules, which need what it imported
    from vnnlab.run import console, ranks
    from vnnlab.run.training import TrackingIncomplete, train

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from vnnlab.sweep.job import run_job  # and the sweeper's Optuna: jobs of a sweep only

        return run_job(cfg, run_context(hydra_cfg))
    try:
        run = train(cfg, run_context(hydra_cfg))
    except BadInputError as error:
        _exit(EXIT_BAD_INPUT, str(error))
    except TrackingIncomplete as error:
        _exit(EXIT_FAILED, str(error))
    except Exception as error:  # the run ended FAILED with this reason; the trace is for a bug
        traceback.print_exc()
        _exit(
            EXIT_FAILED, "the run failed: " + " ".join(f"{type(error).__name__}: {error}".split())
        )
    if not ranks.is_rank_zero():  # rank 1, 2, … of a multi-process fit: rank 0 reports
        return None
    print(
        f"\nvnnlab: run {run.run_id} FINISHED\n"
        f"{console.metrics_table(run.metrics)}\n"
        f"  open it:  mlflow ui --backend-store-uri {run.tracking_uri}\n"
        f"  then:     http://127.0.0.1:5000/#/experiments/{run.experiment_id}/runs/{run.run_id}"
    )
    return None


def run_context(hydra_cfg: DictConfig) -> RunContext:
    """What the run takes from Hydra: the launch and output folders, the overrides, the model
    and data chosen."""
    choices = hydra_cfg.runtime.choices
    return RunContext(
        launch_dir=Path(hydra_cfg.runtime.cwd),
        output_dir=Path(hydra_cfg.runtime.output_dir),
        overrides=tuple(hydra_cfg.overrides.task),
        choices={
            group: choices[group]
            for group in ("model", "inference", "optimizer", "data")
            if choices.get(group)
        },  # fmt: skip
    )


@cache
def import_job_code() -> None:
    """Import what a job runs (torch, Lightning, MLflow and its SQL store) once per process,
    with the garbage collector paused, then freeze what was loaded. The imports create several
    hundred thousand objects that live until exit: while they load, the collector would walk
    them again and again to free almost nothing, and every later full collection (during
    training, and at exit) would walk them once more (the README's performance section)."""
    gc.disable()
    try:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (the default SQLite store)

        import vnnlab.run.training  # noqa: F401  (torch, Lightning, MLflow)
    finally:
        gc.freeze()
        gc.enable()


@contextmanager
def _command_line(argv: Sequence[str] | None) -> Iterator[None]:
    """Hydra reads its command line from sys.argv: `argv` there for the duration."""
    if argv is None:
        yield
        return
    saved = sys.argv
    sys.argv = [PROGRAM, *argv]
    try:
        yield
    finally:
        sys.argv = saved


EVERY_SPLIT = "data.split_column=all"


def _every_split_column(args: list[str]) -> list[str]:
    """`data.split_column=all` → one value per column of split names in the table that
    `data.path=` names (any number of splits: the UCI tables have 20, protein 5)."""
    if EVERY_SPLIT not in args:
        return args
    paths = [arg.split("=", 1)[1] for arg in args if arg.startswith("data.path=")]
    if not paths:
        raise BadInputError(f"{EVERY_SPLIT} needs the table on the command line: data.path=...")
    from vnnlab.data.tabular import split_columns

    columns = split_columns(paths[-1])
    if not columns:
        raise BadInputError(
            f"data.path={paths[-1]}: no column of split names (train, val, test) for {EVERY_SPLIT}"
        )
    return [f"data.split_column={','.join(columns)}" if arg == EVERY_SPLIT else arg for arg in args]


def _exit(code: int, message: str) -> None:
    print(f"vnnlab: {message}", file=sys.stderr)
    sys.exit(code)
