"""`vnnlab-train`: config → validate → instantiate → fit → test → log.

`train(cfg)` is a plain function (tests and notebooks call it with a composed config);
`main()` is the Hydra command line around it. This is the only module that instantiates.
"""

import inspect
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from hydra.utils import get_class, get_original_cwd, instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from vnnlab import console, sweep, tracking
from vnnlab.data.base import VNNDataModule
from vnnlab.errors import BadInputError
from vnnlab.models.base import VNNModule
from vnnlab.validate import validate

CONFIG_DIR = str(Path(__file__).parent / "conf")  # a link to the top-level conf/ in a checkout
LAST_CHECKPOINT = "last.ckpt"


@dataclass(frozen=True)
class TrainResult:
    """What a training run leaves in hand: its MLflow ids, the trained model, its data and the
    last value of each metric it logged (train/ and val/ of the last epoch, test/)."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    model: VNNModule
    datamodule: VNNDataModule
    metrics: dict[str, float]


def train(cfg: DictConfig, callbacks: Sequence[pl.Callback] = ()) -> TrainResult:
    """Train and test one model on one data set, recorded as one MLflow run. `callbacks`:
    extra Lightning callbacks (e.g. a sweeper's pruning).

    Raises BadInputError before any run exists when the config or the data is unusable.
    """
    with console.quiet_dependencies():
        return _train(cfg, callbacks)


def _train(cfg: DictConfig, callbacks: Sequence[pl.Callback]) -> TrainResult:
    validate(cfg)
    datamodule, model = _build(cfg)
    run_name, tags = _describe(type(model), datamodule)
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, _launch_dir())
    parent = sweep.current_sweep()
    if parent is not None:  # a child of the sweep's parent run, in the parent's experiment
        run_name, tags = sweep.job_name(parent), tags | sweep.child_tags(parent)
        uri = parent.tracking_uri
    experiment_id = parent.experiment_id if parent else None
    with _checkpoint_folder() as folder:
        trainer = _trainer(cfg, folder, callbacks)
        with tracking.tracked_run(
            uri, cfg.tracking.experiment, run_name, tags, experiment_id
        ) as run:
            try:
                run.log_params(tracking.flatten(OmegaConf.to_container(cfg, resolve=True)))
                run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
                trainer.logger = run.lightning_logger()
                trainer.fit(model, datamodule=datamodule)
                metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
                [test_metrics] = trainer.test(model, datamodule=datamodule, verbose=False)
                metrics |= test_metrics | _log_results(run, trainer, model, datamodule)
                run.describe(_description(model, datamodule, trainer, metrics))
            finally:  # a failed or killed run keeps its last checkpoint too
                _log_checkpoint(run, folder)
    return TrainResult(run.run_id, run.experiment_id, uri, model, datamodule, metrics)


def _build(cfg: DictConfig) -> tuple[VNNDataModule, VNNModule]:
    """The data module (loaded, so its sizes are known) and the model sized to fit it."""
    datamodule = _instantiate("data", cfg.data)
    info = datamodule.info()
    model_class = get_class(cfg.model._target_)
    model_class.check_data(info, OmegaConf.to_container(cfg.model, resolve=True))
    accepted = inspect.signature(model_class).parameters
    dims = {key: value for key, value in info.model_dims().items() if key in accepted}
    pl.seed_everything(cfg.seed, verbose=False)  # before the weights are drawn
    return datamodule, _instantiate("model", cfg.model, **dims)


def _trainer(
    cfg: DictConfig, checkpoint_folder: Path, extra_callbacks: Sequence[pl.Callback]
) -> pl.Trainer:
    """The Trainer, built before the run exists so that Lightning's own refusals are bad input.
    The run's logger is attached once the run is open."""
    callbacks = [tracking.LightningHandlesSigterm(), *extra_callbacks]
    arguments = dict(cfg.trainer)
    if arguments.get("enable_progress_bar") == "auto":  # a bar on a terminal, else epoch lines
        arguments["enable_progress_bar"] = console.progress_on_a_terminal()
        if not arguments["enable_progress_bar"]:
            callbacks.append(console.EpochLines())
    if cfg.trainer.get("enable_checkpointing", True):
        every = cfg.checkpoint.every_n_epochs
        callbacks.append(
            ModelCheckpoint(checkpoint_folder, save_last=True, save_top_k=0, every_n_epochs=every)
        )
    try:
        return pl.Trainer(**arguments, logger=False, callbacks=callbacks)
    except (MisconfigurationException, ValueError, TypeError) as error:
        raise BadInputError(f"trainer: {_one_line(error)}") from None


@contextmanager
def _checkpoint_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vnnlab-checkpoints-") as folder:
        yield Path(folder)


def _log_results(
    run: tracking.TrackedRun, trainer: pl.Trainer, model: VNNModule, datamodule: VNNDataModule
) -> dict[str, float]:
    """What a finished run keeps besides its metrics: reference values (returned) and figures."""
    reference = datamodule.reference_metrics(dict(model.hparams))  # e.g. the noise floor
    reference = {f"test/{k}": v for k, v in reference.items()}
    run.log_metrics(reference, step=trainer.global_step)
    for name, figure in model.figures(datamodule).items():
        run.log_figure(figure, f"figures/{name}")
    return reference


def _description(
    model: VNNModule, datamodule: VNNDataModule, trainer: pl.Trainer, metrics: dict[str, float]
) -> str:
    """One paragraph for the MLflow UI: what was trained on what, and the headline metrics."""
    info = datamodule.info()
    headline = ", ".join(
        f"{name} = {console.format_number(value)}"
        for name, value in sorted(metrics.items())
        if name.startswith("test/")
    )
    return (
        f"{type(model).__name__} trained on {type(datamodule).__name__} ({info.n_train} training "
        f"points, {info.in_features} inputs) for {trainer.current_epoch} epochs, "
        f"{trainer.global_step} optimiser steps. Test metrics: {headline}."
    )


def _log_checkpoint(run: tracking.TrackedRun, folder: Path) -> None:
    """The last checkpoint Lightning wrote (weights, optimiser, loop state) → checkpoints/."""
    checkpoint = folder / LAST_CHECKPOINT
    if checkpoint.is_file():
        run.log_file(checkpoint, "checkpoints")


def _instantiate(group: str, node: DictConfig, **extra):
    """hydra.utils.instantiate, with a BadInputError raised inside reported as itself.

    `_convert_="all"` hands plain lists and dicts to constructors: OmegaConf containers in
    saved hyper-parameters would not load under torch.load(weights_only=True)."""
    try:
        return instantiate(node, _convert_="all", **extra)
    except InstantiationException as error:
        if isinstance(error.__cause__, BadInputError):
            raise error.__cause__ from None
        raise


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _launch_dir() -> Path:
    return Path(get_original_cwd()) if HydraConfig.initialized() else Path.cwd()


def _describe(model_class: type, datamodule) -> tuple[str, dict[str, str]]:
    """Run name "<model>-<data> <overrides>" and tags: git commit and Hydra overrides."""
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        model_name, data_name = (
            hydra_cfg.runtime.choices["model"],
            hydra_cfg.runtime.choices["data"],
        )
        overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("model=", "data="))]
    else:
        model_name, data_name, overrides = model_class.__name__, type(datamodule).__name__, []
    tags = {"vnnlab.model": model_name, "vnnlab.data": data_name}
    tags["hydra.overrides"] = " ".join(overrides)
    tags |= tracking.git_tags(Path(__file__).parent)
    return " ".join([f"{model_name}-{data_name}", *overrides]), tags


# What Hydra raises while composing the config from the overrides, before any job starts.
COMPOSITION_ERRORS = (ConfigCompositionException, MissingConfigException, OverrideParseException)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any] | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return _sweep_job(cfg)
    try:
        run = train(cfg)
    except BadInputError as error:
        print(f"vnnlab: {error}", file=sys.stderr)
        sys.exit(2)
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
    job = sweep.job_name(sweep.current_sweep())
    threads = sweep.threads_per_job()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        run = train(cfg)
    except BadInputError as error:
        outcome = sweep.JobOutcome(job, "BAD_INPUT", str(error))
    except Exception as error:  # the run itself ended FAILED with this reason
        outcome = sweep.JobOutcome(job, "FAILED", f"{type(error).__name__}: {_one_line(error)}")
    else:
        outcome = sweep.JobOutcome(job, "FINISHED", "", run.run_id, run.metrics)
    if outcome.status != "FINISHED":
        print(f"vnnlab: job [{job}] {outcome.status}: {outcome.reason}", file=sys.stderr)
    sweep.record(outcome)
    return outcome.as_dict()


def main() -> None:
    """Console entry point. An override Hydra cannot compose (an unknown key, a missing
    option) is bad input as well: one line and exit 2, instead of Hydra's report and exit 1."""
    # Hydra prints its own errors and exits 1 unless this is set; with it they reach us.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _hydra_main()
    except SIGTERMException:  # Lightning's stop on SIGTERM is a SystemExit without a code
        sys.exit(128 + signal.SIGTERM)
    except COMPOSITION_ERRORS as error:
        text = str(error).split("Config search path")[0]  # drop Hydra's search-path dump
        print("vnnlab: " + " ".join(line.strip() for line in text.splitlines()), file=sys.stderr)
        sys.exit(2)
    finally:
        sweep.end_open_parents("KILLED")  # a sweep interrupted between jobs
    failure = sweep.take_failure()
    if failure is not None:
        print(f"vnnlab: {failure}", file=sys.stderr)
        sys.exit(failure.exit_code)


if __name__ == "__main__":
    main()
