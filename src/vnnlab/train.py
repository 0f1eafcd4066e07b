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

from vnnlab import console, resume, sweep, tracking
from vnnlab.data.base import VNNDataModule
from vnnlab.errors import BadInputError, bad_value
from vnnlab.lightning_hooks import DurableCheckpointIO, LightningHandlesSigterm, RandomState
from vnnlab.models.base import VNNModule
from vnnlab.validate import validate

LAST_CHECKPOINT = resume.LAST_CHECKPOINT


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


def train(
    cfg: DictConfig,
    callbacks: Sequence[pl.Callback] = (),
    overrides: Sequence[str] | None = None,
) -> TrainResult:
    """Train and test one model on one data set, recorded as one MLflow run; with
    `cfg.resume` set, continue that run instead (vnnlab.resume). `callbacks`: extra Lightning
    callbacks (e.g. a sweeper's pruning); `overrides`: the command-line overrides `cfg` was
    composed from (default: Hydra's), which a resume checks.

    Raises BadInputError before any run exists when the config or the data is unusable.
    """
    with console.quiet_dependencies():
        return _train(cfg, callbacks, overrides)


def _train(
    cfg: DictConfig, callbacks: Sequence[pl.Callback], overrides: Sequence[str] | None
) -> TrainResult:
    validate(cfg)
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, _launch_dir())
    parent = sweep.current_sweep()
    if parent is None:  # a sweep's parent has opened its store
        tracking.check_store(uri)
    prior = _prior_run(cfg, overrides, uri, in_sweep=parent is not None)
    if prior is not None:
        cfg = prior.cfg
    datamodule, model = build_data_and_model(cfg)
    run_name, tags = _describe(type(model), datamodule)
    if parent is not None:  # a child of the sweep's parent run, in the parent's experiment
        run_name, tags = sweep.job_name(parent), tags | sweep.child_tags(parent)
        uri = parent.tracking_uri
    experiment_id = parent.experiment_id if parent else None
    with _checkpoint_folder() as folder:
        trainer = build_trainer(cfg, folder, callbacks)
        run_tags = resume.owner_tags(folder) | ({} if prior else tags)
        resume_run_id = prior.run_id if prior else None
        with tracking.tracked_run(
            uri,
            cfg.tracking.experiment,
            run_name,
            run_tags,
            experiment_id,
            resume_run_id,
            cfg.tracking.get("system_metrics_every_s"),
        ) as run:
            try:
                _record_config(run, cfg, prior)
                trainer.logger = run.lightning_logger(prior.logged_through if prior else None)
                checkpoint = prior.checkpoint(folder) if prior else None
                trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
                _save_final_checkpoint(trainer, folder)
                metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
                [test_metrics] = trainer.test(model, datamodule=datamodule, verbose=False)
                metrics |= test_metrics | _log_results(run, trainer, model, datamodule)
                run.describe(_description(model, datamodule, trainer, metrics))
            finally:  # a failed or killed run keeps its last checkpoint too
                _log_checkpoint(run, folder)
        if run.unsent:
            raise _unsent(run, folder)
    return TrainResult(run.run_id, run.experiment_id, uri, model, datamodule, metrics)


class TrackingIncomplete(Exception):
    """The run trained to its end, but the tracking server took only part of its record."""


def _unsent(run: tracking.TrackedRun, folder: Path) -> TrackingIncomplete:
    """What the server never took, written beside the checkpoint, as an error to report."""
    record = folder / "unsent.txt"
    record.write_text("\n".join(run.unsent) + "\n", encoding="utf-8")
    return TrackingIncomplete(
        f"run {run.run_id} trained to its end, but {run.tracking_uri} stopped answering: "
        f"{len(run.unsent)} records not sent (listed in {record}); checkpoint: "
        f"{folder / LAST_CHECKPOINT}"
    )


def _prior_run(
    cfg: DictConfig, overrides: Sequence[str] | None, uri: str, in_sweep: bool
) -> resume.PriorRun | None:
    if cfg.get("resume") is None:
        return None
    if in_sweep:
        raise bad_value("resume", cfg.resume, "one run at a time, not in a multirun (-m)")
    return resume.prior_run(cfg, list(_task_overrides() if overrides is None else overrides), uri)


def _record_config(run: tracking.TrackedRun, cfg: DictConfig, prior: resume.PriorRun | None):
    """The resolved config as params and as config.yaml. A resumed run keeps its params (MLflow
    never changes a param); what it was resumed with is a tag, and config.yaml is updated."""
    if prior is None:
        run.log_params(tracking.flatten(OmegaConf.to_container(cfg, resolve=True)))
    else:
        run.set_tag("vnnlab.resumed_with", f"trainer.max_epochs={cfg.trainer.max_epochs}")
    run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def build_data_and_model(cfg: DictConfig) -> tuple[VNNDataModule, VNNModule]:
    """The data module (loaded, so its sizes are known) and the model sized to fit it."""
    datamodule = _instantiate("data", cfg.data)
    info = datamodule.info()
    model_class = get_class(cfg.model._target_)
    model_class.check_data(info, OmegaConf.to_container(cfg.model, resolve=True))
    accepted = inspect.signature(model_class).parameters
    dims = {key: value for key, value in info.model_dims().items() if key in accepted}
    pl.seed_everything(cfg.seed, verbose=False)  # before the weights are drawn
    return datamodule, _instantiate("model", cfg.model, **dims)


def build_trainer(
    cfg: DictConfig, checkpoint_folder: Path, extra_callbacks: Sequence[pl.Callback]
) -> pl.Trainer:
    """The Trainer, built before the run exists so that Lightning's own refusals are bad input.
    The run's logger is attached once the run is open (benchmarks/ fits without one to
    measure what tracking costs)."""
    callbacks = [LightningHandlesSigterm(), *extra_callbacks]
    arguments = dict(cfg.trainer)
    if arguments.get("enable_progress_bar") == "auto":  # a bar on a terminal, else epoch lines
        arguments["enable_progress_bar"] = console.progress_on_a_terminal()
        if not arguments["enable_progress_bar"]:
            callbacks.append(console.EpochLines())
    if cfg.trainer.get("enable_checkpointing", True):
        every = cfg.checkpoint.every_n_epochs
        # last.ckpt, overwritten every `every` epochs: as "top 1" without a monitor (the
        # newest). save_last with save_top_k=0 would write it only when training ends.
        callbacks.append(
            ModelCheckpoint(
                checkpoint_folder,
                filename=LAST_CHECKPOINT.removesuffix(".ckpt"),
                save_top_k=1,
                every_n_epochs=every,
                enable_version_counter=False,
            )
        )
        callbacks.append(RandomState())
    plugins = [DurableCheckpointIO()]
    try:
        return pl.Trainer(**arguments, logger=False, callbacks=callbacks, plugins=plugins)
    except (MisconfigurationException, ValueError, TypeError) as error:
        raise BadInputError(f"trainer: {_one_line(error)}") from None


@contextmanager
def _checkpoint_folder() -> Iterator[Path]:
    """Where last.ckpt is rewritten as training goes: `checkpoints/` in Hydra's output folder,
    kept (a run killed even by SIGKILL resumes from it). Outside Hydra (the Python API) a
    temporary folder, removed once the run has logged its last checkpoint."""
    if HydraConfig.initialized():
        folder = Path(HydraConfig.get().runtime.output_dir) / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="vnnlab-checkpoints-") as temporary:
        yield Path(temporary)


def _task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


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


def _save_final_checkpoint(trainer: pl.Trainer, folder: Path) -> None:
    """The trained state, also when the epoch count is no multiple of every_n_epochs."""
    if trainer.checkpoint_callback is not None:
        trainer.save_checkpoint(folder / LAST_CHECKPOINT, weights_only=False)  # all, to resume


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


# `python -m vnnlab.train` runs vnnlab-train too, but only after this module's imports (torch,
# Lightning, MLflow): a parallel sweep's parent then holds them for nothing. vnnlab.cli does not.
if __name__ == "__main__":
    from vnnlab.cli import main

    main()
