"""train(cfg, context), the function that trains one run: config → validate → instantiate → fit →
test → log, one model on one data set.

`train(cfg, context)` is a plain function: the command line (vnnlab.commands.train), a sweep's
job (vnnlab.sweep.job), a notebook (vnnlab.api) and the tests call it with a composed config
and what they know of the command around it (RunContext).
"""

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from vnnlab import tags
from vnnlab.data.base import VNNDataModule
from vnnlab.errors import bad_value
from vnnlab.models.base import VNNModule
from vnnlab.overrides import override_key
from vnnlab.run import console, ranks, resume
from vnnlab.run.build import build_data_and_model, build_trainer
from vnnlab.run.context import RunContext
from vnnlab.run.lightning_callbacks import TrainerStops
from vnnlab.run.resume import LAST_CHECKPOINT
from vnnlab.tracking.logger import RunLogger
from vnnlab.tracking.run import TrackedRun, flatten, git_tags, tracked_run
from vnnlab.tracking.store import check_store, resolve_tracking_uri
from vnnlab.validate import validate


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


class TrackingIncomplete(Exception):
    """The run trained to its end, but the tracking server took only part of its record."""


def train(
    cfg: DictConfig, context: RunContext | None = None, callbacks: Sequence[pl.Callback] = ()
) -> TrainResult:
    """Train and test one model on one data set, recorded as one MLflow run; with
    `cfg.resume` set, continue that run instead (vnnlab.run.resume). `context`: the command
    around the run (default: one started here, outside Hydra); `callbacks`: extra Lightning
    callbacks (e.g. a sweeper's pruning).

    Raises BadInputError before any run exists when the config or the data is unusable, and
    Interrupted when a signal stopped it (the run then ended KILLED).
    """
    with console.quiet_dependencies():
        return _train(cfg, context or RunContext(), callbacks)


def _train(cfg: DictConfig, context: RunContext, callbacks: Sequence[pl.Callback]) -> TrainResult:
    validate(cfg)
    sweep = context.sweep
    uri = (
        sweep.tracking_uri if sweep else resolve_tracking_uri(cfg.tracking.uri, context.launch_dir)
    )
    if not ranks.is_rank_zero():
        return _train_beside_rank_zero(cfg, context, callbacks, uri)
    if sweep is None:  # a sweep's parent has opened its store
        check_store(uri)
    else:
        _refuse_in_a_multirun(cfg)
    prior = _prior_run(cfg, context, uri)
    if prior is not None:
        cfg = prior.cfg
    datamodule, model = build_data_and_model(cfg)
    run_name, run_tags = _name_and_tags(type(model), datamodule, context)
    with _checkpoint_folder(context.output_dir) as folder:
        stops = TrainerStops()
        trainer = build_trainer(cfg, folder, [stops, *callbacks])
        with tracked_run(
            uri,
            cfg.tracking.experiment,
            run_name,
            resume.owner_tags(folder) | ({} if prior else run_tags),
            known_experiment_id=sweep.experiment_id if sweep else None,
            resume_run_id=prior.run_id if prior else None,
            system_metrics_every_s=cfg.tracking.get("system_metrics_every_s"),
            sigterm=stops.sigterm,
        ) as run:
            try:
                _record_config(run, cfg, prior)
                trainer.logger = RunLogger(run, prior.logged_through if prior else None)
                checkpoint = prior.checkpoint(folder) if prior else None
                if trainer.world_size > 1:  # for the processes its fit is about to start
                    ranks.share(ranks.SharedRun(run.run_id, run.experiment_id, checkpoint))
                with stops.signals_as_interruptions():
                    metrics = _fit_and_test(trainer, model, datamodule, checkpoint, folder)
                metrics |= _log_results(run, trainer, model, datamodule)
                run.describe(_description(model, datamodule, trainer, metrics))
            finally:  # a failed or killed run keeps its last checkpoint too
                _log_checkpoint(run, folder)
        if run.unsent:
            raise _unsent(run, folder)
    return TrainResult(run.run_id, run.experiment_id, uri, model, datamodule, metrics)


def _train_beside_rank_zero(
    cfg: DictConfig, context: RunContext, callbacks: Sequence[pl.Callback], uri: str
) -> TrainResult:
    """Rank 1, 2, … of a multi-process fit (vnnlab.run.ranks): the same data, model and
    Trainer as rank 0, from the checkpoint it chose, with no run of their own."""
    shared = ranks.shared()
    prior = None
    if cfg.get("resume") is not None:
        prior = resume.prior_run(cfg, list(context.overrides), uri, writer=False)
        cfg = prior.cfg
    datamodule, model = build_data_and_model(cfg)
    with _checkpoint_folder(context.output_dir) as folder:
        stops = TrainerStops()
        trainer = build_trainer(cfg, folder, [stops, *callbacks])
        if shared is not None:
            checkpoint = shared.start_checkpoint
        else:  # started by another launcher, at the same time as rank 0
            checkpoint = prior.local_checkpoint if prior else None
        with stops.signals_as_interruptions():
            metrics = _fit_and_test(trainer, model, datamodule, checkpoint, folder)
    run_id, experiment_id = (shared.run_id, shared.experiment_id) if shared else ("", "")
    return TrainResult(run_id, experiment_id, uri, model, datamodule, metrics)


def _fit_and_test(
    trainer: pl.Trainer,
    model: VNNModule,
    datamodule: VNNDataModule,
    checkpoint: Path | None,
    folder: Path,
) -> dict[str, float]:
    """Fit (from `checkpoint` if given), fit what comes after training, save the trained state,
    test; the last value of each metric (train/ and val/ of the last epoch, test/)."""
    train_inputs, *train_targets = datamodule.split("train")
    model.use_training_inputs(train_inputs)  # closed-form parts (PCA)
    if train_targets:
        model.use_training_targets(train_targets[0])  # a regressor's target scaling
    trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    model.fit_posthoc(datamodule.split("train"), datamodule.batch_size)  # e.g. Laplace's
    if trainer.checkpoint_callback is not None:  # also when the epochs are no multiple of
        trainer.save_checkpoint(folder / LAST_CHECKPOINT, weights_only=False)  # all, to resume
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    [test_metrics] = trainer.test(model, datamodule=datamodule, verbose=False)
    return metrics | test_metrics


def _unsent(run: TrackedRun, folder: Path) -> TrackingIncomplete:
    """What the server never took, written beside the checkpoint, as an error to report."""
    record = folder / "unsent.txt"
    record.write_text("\n".join(run.unsent) + "\n", encoding="utf-8")
    return TrackingIncomplete(
        f"run {run.run_id} trained to its end, but {run.tracking_uri} stopped answering: "
        f"{len(run.unsent)} records not sent (listed in {record}); checkpoint: "
        f"{folder / LAST_CHECKPOINT}"
    )


def _refuse_in_a_multirun(cfg: DictConfig) -> None:
    """What a multirun's job cannot do: continue a run, or train on several processes (for
    each, Lightning would run the whole multirun's command line again)."""
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if strategy.startswith("ddp"):
        raise bad_value("trainer.strategy", strategy, "one run at a time, not in a multirun (-m)")
    if cfg.get("resume") is not None:
        raise bad_value("resume", cfg.resume, "one run at a time, not in a multirun (-m)")


def _prior_run(cfg: DictConfig, context: RunContext, uri: str) -> resume.PriorRun | None:
    if cfg.get("resume") is None:
        return None
    return resume.prior_run(cfg, list(context.overrides), uri)


def _record_config(run: TrackedRun, cfg: DictConfig, prior: resume.PriorRun | None) -> None:
    """The resolved config as params and as config.yaml. A resumed run keeps its params (MLflow
    never changes a param); what it was resumed with is a tag, and config.yaml is updated."""
    if prior is None:
        run.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
    else:
        run.set_tag(tags.RESUMED_WITH, f"trainer.max_epochs={cfg.trainer.max_epochs}")
    run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


@contextmanager
def _checkpoint_folder(output_dir: Path | None) -> Iterator[Path]:
    """Where last.ckpt is rewritten as training goes: `checkpoints/` in the run's output
    folder, kept (a run killed even by SIGKILL resumes from it); without one (the Python API)
    a temporary folder, removed once the run has logged its last checkpoint."""
    if output_dir is not None:
        folder = output_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="vnnlab-checkpoints-") as temporary:
        yield Path(temporary)


def _log_results(
    run: TrackedRun, trainer: pl.Trainer, model: VNNModule, datamodule: VNNDataModule
) -> dict[str, float]:
    """What a finished run keeps besides its metrics: reference values (returned) and figures."""
    info = datamodule.info()
    reference = datamodule.reference_metrics() | model.reference_metrics(info)
    reference = {f"test/{key}": value for key, value in reference.items()}
    run.log_metrics(reference, step=trainer.global_step)
    figures = model.figures(info, datamodule.split("train"), datamodule.split("test"))
    for name, figure in figures.items():
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
    method = getattr(model, "inference", None)
    fitted_by = f" fitted by {type(method).__name__}" if method is not None else ""
    return (
        f"{type(model).__name__}{fitted_by} trained on {type(datamodule).__name__} "
        f"({info.n_train} training points, {info.in_features} inputs) for "
        f"{trainer.current_epoch} epochs, {trainer.global_step} optimiser steps. "
        f"Test metrics: {headline}."
    )


def _log_checkpoint(run: TrackedRun, folder: Path) -> None:
    """The last checkpoint Lightning wrote (weights, optimiser, loop state) → checkpoints/."""
    checkpoint = folder / LAST_CHECKPOINT
    if checkpoint.is_file():
        run.log_file(checkpoint, "checkpoints")


def _name_and_tags(
    model_class: type, datamodule: VNNDataModule, context: RunContext
) -> tuple[str, dict[str, str]]:
    """Run name "<model>-<inference>-<data> <overrides>" (a sweep's job: its swept values;
    no inference for a model fitted its own way) and tags: the
    config groups chosen, the overrides, the git commit, the sweep it belongs to."""
    model_name = context.choices.get("model", model_class.__name__)
    data_name = context.choices.get("data", type(datamodule).__name__)
    overrides = [o for o in context.overrides if override_key(o) not in ("model", "data")]
    run_tags = {tags.MODEL: model_name, tags.DATA: data_name, tags.OVERRIDES: " ".join(overrides)}
    run_tags |= git_tags(Path(__file__).parent)
    inference = context.choices.get("inference")
    if inference:
        run_tags[tags.INFERENCE] = inference
    if context.choices.get("optimizer"):
        run_tags[tags.OPTIMIZER] = context.choices["optimizer"]
    fitted = f"{model_name}-{inference}" if inference else model_name
    name = " ".join([f"{fitted}-{data_name}", *overrides])
    sweep = context.sweep
    if sweep is not None:  # a child of the sweep's parent run
        name = sweep.name
        run_tags |= {tags.PARENT_RUN: sweep.parent_run_id, tags.SWEEP_ROLE: tags.CHILD,
                     tags.SWEEP_JOB: str(sweep.number)}  # fmt: skip
    return name, run_tags
