"""Training one model on one data set: config → validate → instantiate → fit → test → log.

`train(cfg)` is a plain function (tests and notebooks call it with a composed config);
vnnlab.cli is the Hydra command line around it. This is the only module that instantiates.
"""

import inspect
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    InstantiationException,
)
from hydra.utils import get_class, get_original_cwd, instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from vnnlab import console, sweep, tracking
from vnnlab.data.base import VNNDataModule
from vnnlab.errors import BadInputError
from vnnlab.lightning_hooks import LightningHandlesSigterm
from vnnlab.models.base import VNNModule
from vnnlab.validate import validate

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
    callbacks = [LightningHandlesSigterm(), *extra_callbacks]
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


if __name__ == "__main__":  # `python -m vnnlab.train`, the same as `vnnlab-train`
    from vnnlab.cli import main

    main()
