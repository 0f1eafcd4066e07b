"""`vnnlab-train`: config → validate → instantiate → fit → test → log.

`train(cfg)` is a plain function (tests and notebooks call it with a composed config);
`main()` is the Hydra command line around it. This is the only module that instantiates.
"""

import inspect
import os
import sys
import tempfile
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.utils import get_class, get_original_cwd, instantiate
from omegaconf import DictConfig, OmegaConf

from vnnlab import tracking
from vnnlab.errors import BadInputError
from vnnlab.validate import validate

CONFIG_DIR = str(Path(__file__).parent / "conf")  # a link to the top-level conf/ in a checkout


def train(cfg: DictConfig) -> tracking.TrackedRun:
    """Train and test one model on one data set, recorded as one MLflow run.

    Raises BadInputError before any run exists when the config or the data is unusable.
    """
    validate(cfg)
    datamodule, model = _build(cfg)
    run_name, tags = _describe(type(model), datamodule)
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, _launch_dir())
    with tracking.tracked_run(uri, cfg.tracking.experiment, run_name, tags) as run:
        run.log_params(tracking.flatten(OmegaConf.to_container(cfg, resolve=True)))
        run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        trainer = pl.Trainer(**cfg.trainer, logger=run.lightning_logger())
        trainer.fit(model, datamodule=datamodule)
        trainer.test(model, datamodule=datamodule, verbose=False)
        _log_results(run, trainer, model, datamodule)
    return run


def _build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """The data module (loaded, so its sizes are known) and the model sized to fit it."""
    datamodule = _instantiate("data", cfg.data)
    datamodule.setup("fit")
    model_class = get_class(cfg.model._target_)
    if model_class.task != datamodule.task:
        raise BadInputError(
            f"model={model_class.__name__} is a {model_class.task} model but data="
            f"{type(datamodule).__name__} is {datamodule.task} data: pick a matching pair"
        )
    pl.seed_everything(cfg.seed, verbose=False)  # before the weights are drawn
    return datamodule, _instantiate("model", cfg.model, **_data_dims(model_class, datamodule))


def _log_results(run: tracking.TrackedRun, trainer: pl.Trainer, model, datamodule) -> None:
    """What a finished run keeps besides its metrics: reference values, figures, checkpoint."""
    if hasattr(datamodule, "reference_metrics"):  # e.g. the noise floor of synthetic data
        reference = {f"test/{k}": v for k, v in datamodule.reference_metrics().items()}
        run.log_metrics(reference, step=trainer.global_step)
    for name, figure in model.figures(datamodule).items():
        run.log_figure(figure, f"figures/{name}")
    with tempfile.TemporaryDirectory(prefix="vnnlab-") as scratch:
        checkpoint = Path(scratch) / "final.ckpt"
        trainer.save_checkpoint(checkpoint, weights_only=False)  # resumable: optimiser too
        run.log_file(checkpoint, "checkpoints")


def _instantiate(group: str, node: DictConfig, **extra):
    """hydra.utils.instantiate, with a wrong key or value reported as bad input.

    `_convert_="all"` hands plain lists and dicts to constructors: OmegaConf containers in
    saved hyper-parameters would not load under torch.load(weights_only=True)."""
    try:
        return instantiate(node, _convert_="all", **extra)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, BadInputError):
            raise cause from None
        if isinstance(cause, TypeError):  # e.g. an unexpected keyword argument
            raise BadInputError(f"{group}: {cause}") from None
        raise


def _data_dims(model_class: type, datamodule: pl.LightningDataModule) -> dict[str, int]:
    """The sizes the data decides (in_features, out_features, n_train) that the model takes."""
    accepted = inspect.signature(model_class).parameters
    return {key: value for key, value in datamodule.dims().items() if key in accepted}


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
    commit = tracking.git_commit(Path(__file__).parent)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return " ".join([f"{model_name}-{data_name}", *overrides]), tags


# What Hydra raises while composing the config from the overrides, before any job starts.
COMPOSITION_ERRORS = (ConfigCompositionException, MissingConfigException, OverrideParseException)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run = train(cfg)
    except BadInputError as error:
        print(f"vnnlab: {error}", file=sys.stderr)
        sys.exit(2)
    print(
        f"\nvnnlab: run {run.run_id} FINISHED\n"
        f"  open it:  mlflow ui --backend-store-uri {run.tracking_uri}\n"
        f"  then:     http://127.0.0.1:5000/#/experiments/{run.experiment_id}/runs/{run.run_id}"
    )


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


if __name__ == "__main__":
    main()
