"""The Hydra callback that makes a multirun one MLflow parent run (conf/config.yaml registers
it under `hydra.callbacks`, so it works with every launcher and sweeper).

Before any job starts, the parent process creates the store, the experiment and the parent run
and writes them to the sweep folder (records.Sweep); each job nests its run under the parent
and records its outcome (vnnlab.sweep.job). At the end the parent gathers the outcomes, logs
the comparison table, becomes the sweep's headline (its description the table, its metrics the
best child's: vnnlab.sweep.headline), and ends FINISHED, or FAILED when a job did not finish.

Hydra turns an exception raised in a callback into a warning, so the verdict of a sweep that
ended in this process is left here for the command to act on (`take_failure`), as is a parent
run still open when the process is interrupted (`end_open_parents`).

MLflow (seconds to import) is imported once a sweep starts, not at module level: Hydra loads
this module for every command, and a single run imports MLflow with the rest of its code
(vnnlab.commands.train.import_job_code).
"""

import signal
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from vnnlab import tags
from vnnlab.overrides import with_keys
from vnnlab.sweep.records import Sweep, SweepFailed, collect, sweep_dir
from vnnlab.tracking.interrupts import SigtermHandler

_failed_sweeps: list[SweepFailed] = []
_open_parents: list[tuple[str, str]] = []  # (tracking URI, run id)


def take_failure() -> SweepFailed | None:
    """The failure of the multirun that just ended in this process, if any (once)."""
    return _failed_sweeps.pop() if _failed_sweeps else None


def end_open_parents(status: str = "KILLED") -> None:
    """End every parent run this process left open (Ctrl-C or SIGTERM between jobs)."""
    if not _open_parents:
        return
    from mlflow.tracking import MlflowClient

    while _open_parents:
        uri, run_id = _open_parents.pop()
        MlflowClient(uri).set_terminated(run_id, status)


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.previous_sigterm: Any = signal.SIG_DFL

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from vnnlab.tracking.run import git_tags
        from vnnlab.tracking.store import experiment_id, open_store, resolve_tracking_uri

        # The store and its experiment are created here, before parallel jobs start: jobs
        # migrating a fresh SQLite store at once corrupt it (DESIGN.md, measured traps).
        uri = resolve_tracking_uri(config.tracking.uri, Path(config.hydra.runtime.cwd))
        client = open_store(uri)
        experiment = experiment_id(client, config.tracking.experiment)
        overrides = list(config.hydra.overrides.task)
        swept = _swept_keys(overrides, config)
        name = _parent_name(overrides, config, swept)
        parent_tags = _parent_tags(config, swept) | git_tags(Path(__file__).parent)
        parent = client.create_run(experiment, run_name=name, tags=parent_tags)
        _open_parents.append((uri, parent.info.run_id))
        Sweep(parent.info.run_id, uri, experiment, swept).write(sweep_dir(config.hydra))
        # so that the parent run ends KILLED, not RUNNING (restored when the sweep ends)
        self.previous_sigterm = signal.signal(signal.SIGTERM, SigtermHandler())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        folder = sweep_dir(config.hydra)
        sweep = Sweep.read(folder)
        outcomes = collect(folder)
        failed = [outcome for outcome in outcomes if not outcome.finished]
        client = MlflowClient(sweep.tracking_uri)
        _report(sweep, config)
        if failed:
            _failed_sweeps.append(SweepFailed(failed, len(outcomes)))
            message = f"{len(failed)} of {len(outcomes)} jobs did not finish"
            client.set_tag(sweep.parent_run_id, tags.FAILURE, message)
        client.set_terminated(sweep.parent_run_id, "FAILED" if failed else "FINISHED")
        _open_parents.remove((sweep.tracking_uri, sweep.parent_run_id))
        signal.signal(signal.SIGTERM, self.previous_sigterm)


def _report(sweep: Sweep, config: DictConfig) -> None:
    """The comparison table on the terminal and as the parent run's artifacts; the best child
    as the parent's headline. A table that cannot be built is reported, never allowed to leave
    the parent run open."""
    try:
        from vnnlab.sweep.compare import report_sweep
        from vnnlab.sweep.headline import Objective, publish

        print(report_sweep(sweep.tracking_uri, sweep.parent_run_id), flush=True)
        print(publish(sweep.tracking_uri, sweep.parent_run_id, Objective.of(config)))
    except Exception as error:
        print(f"vnnlab: no comparison table ({type(error).__name__}: {error})", file=sys.stderr)


def _swept_keys(overrides: list[str], config: DictConfig) -> list[str]:
    """Keys given several values on the command line, and a sweeper's search space."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    keys = [o.key_or_group for o in parsed if o.is_sweep_override() and not o.is_hydra_override()]
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return list(dict.fromkeys([*keys, *params]))


def _parent_name(overrides: list[str], config: DictConfig, swept: list[str]) -> str:
    """`uci_regression: inference × 20 splits` for a study over repeats (named after its
    experiment, else its data), else `sweep` and the swept overrides."""
    from vnnlab.sweep.aggregate import repeated_key, study_name

    over = repeated_key(swept)
    n_values = _count_values(overrides, config, over) if over else None
    if over is None or n_values is None:
        return " ".join(["sweep", *(with_keys(overrides, swept) or overrides)])
    choices = config.hydra.runtime.choices
    label = choices.get("experiment") or choices.get("data") or "sweep"
    return study_name(label, swept, over, n_values)


def _count_values(overrides: list[str], config: DictConfig, key: str) -> int | None:
    """How many values the sweep gives `key` (the command line's, else the sweeper's params);
    None when they cannot be counted before the sweep (an Optuna interval)."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    given = with_keys(overrides, [key]) or [f"{key}={params[key]}"]
    [override] = OverridesParser.create().parse_overrides(given[-1:])
    if not override.is_sweep_override():
        return 1
    try:
        return len(list(override.sweep_string_iterator()))
    except Exception:  # an interval, or a sweep a sweeper samples: not a list of values
        return None


def _parent_tags(config: DictConfig, swept: list[str]) -> dict[str, str]:
    hydra_cfg = config.hydra
    return {
        tags.SWEEP_ROLE: tags.PARENT,
        tags.SWEEP_PARAMS: ",".join(swept),
        tags.SWEEP_OVERRIDES: " ".join(hydra_cfg.overrides.task),
        tags.SWEEP_LAUNCHER: str(hydra_cfg.launcher.get("_target_", "")),
        tags.SWEEP_SWEEPER: str(hydra_cfg.sweeper.get("_target_", "")),
        tags.SWEEP_DIR: str(sweep_dir(config.hydra)),
    }
