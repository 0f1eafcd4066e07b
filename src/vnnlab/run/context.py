"""What a run takes from the command line around it, passed explicitly: train() reads no Hydra
state, so a notebook or a test calls it with none (RunContext() is a run started here)."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SweepJob:
    """A job of a multirun: its run is a child of the sweep's parent run, in the parent's store
    and experiment, named by the values it takes on the swept keys."""

    parent_run_id: str
    tracking_uri: str
    experiment_id: str
    name: str
    number: int


@dataclass(frozen=True)
class RunContext:
    """launch_dir: where the command was started (the default store, ./mlflow.db, is there);
    output_dir: the run's own folder (its checkpoints/ are kept there), None for a temporary
    folder removed once the run has logged its checkpoint; overrides: the command line the
    config was composed from; choices: the config groups picked (`{"model": "vae", ...}`), for
    the run's name; sweep: the sweep this run is a job of."""

    launch_dir: Path = field(default_factory=Path.cwd)
    output_dir: Path | None = None
    overrides: tuple[str, ...] = ()
    choices: Mapping[str, str] = field(default_factory=dict)
    sweep: SweepJob | None = None
