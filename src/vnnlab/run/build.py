"""Everything a run instantiates from its config: the data module, the model sized to fit it,
and the Trainer with vnnlab's callbacks. The only module that instantiates."""

import inspect
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from vnnlab.data.base import VNNDataModule
from vnnlab.errors import BadInputError
from vnnlab.models.base import VNNModule
from vnnlab.run import console
from vnnlab.run.lightning_callbacks import (
    DurableCheckpointIO,
    RandomState,
    SeedTheFit,
    StopTogether,
)
from vnnlab.run.resume import LAST_CHECKPOINT


def build_data_and_model(cfg: DictConfig) -> tuple[VNNDataModule, VNNModule]:
    """The data module (loaded, so its sizes are known) and the model sized to fit it, given
    the `optimizer` group's node and, for a task model, the `inference` group's."""
    datamodule = _instantiate(cfg.data)
    info = datamodule.info()
    model_class = get_class(cfg.model._target_)
    model_class.check_data(info, OmegaConf.to_container(cfg.model, resolve=True))
    accepted = inspect.signature(model_class).parameters
    groups = [group for group in ("inference", "optimizer") if group in cfg]
    given = info.model_dims() | {g: OmegaConf.to_container(cfg[g], resolve=True) for g in groups}
    given = {key: value for key, value in given.items() if key in accepted}
    knobs = OmegaConf.to_container(cfg.model, resolve=True)
    knobs.pop("_target_")
    pl.seed_everything(cfg.seed, verbose=False)  # before the weights are drawn
    # called, not instantiated: Hydra would build the optimiser and method nodes themselves
    return datamodule, model_class(**knobs, **given)


def build_trainer(
    cfg: DictConfig, checkpoint_folder: Path, callbacks: Sequence[pl.Callback]
) -> pl.Trainer:
    """The Trainer with `callbacks` and vnnlab's own (epoch lines, last.ckpt, random state),
    built before the run exists so that Lightning's own refusals are bad input. The run's
    logger is attached once the run is open."""
    callbacks = [*callbacks, SeedTheFit(cfg.seed), StopTogether()]
    arguments = dict(cfg.trainer)
    if arguments.get("enable_progress_bar") == "auto":  # a bar on a terminal, else epoch lines
        arguments["enable_progress_bar"] = console.progress_on_a_terminal()
        if not arguments["enable_progress_bar"]:
            callbacks.append(console.EpochLines())
    if cfg.trainer.get("enable_checkpointing", True):
        # last.ckpt, overwritten every `every_n_epochs` epochs: as "top 1" without a monitor
        # (the newest). save_last with save_top_k=0 would write it only when training ends.
        callbacks.append(
            ModelCheckpoint(
                checkpoint_folder,
                filename=LAST_CHECKPOINT.removesuffix(".ckpt"),
                save_top_k=1,
                every_n_epochs=cfg.checkpoint.every_n_epochs,
                enable_version_counter=False,
            )
        )
        callbacks.append(RandomState())
    plugins = [DurableCheckpointIO()]
    try:
        return pl.Trainer(**arguments, logger=False, callbacks=callbacks, plugins=plugins)
    except (MisconfigurationException, ValueError, TypeError) as error:
        raise BadInputError(f"trainer: {' '.join(str(error).split())}") from None


def _instantiate(node: DictConfig, **extra):
    """hydra.utils.instantiate, with a BadInputError raised inside reported as itself.

    `_convert_="all"` hands plain lists and dicts to constructors: OmegaConf containers in
    saved hyper-parameters would not load under torch.load(weights_only=True)."""
    try:
        return instantiate(node, _convert_="all", **extra)
    except InstantiationException as error:
        if isinstance(error.__cause__, BadInputError):
            raise error.__cause__ from None
        raise
