"""vnnlab from Python (a notebook, a script): the command line's overrides as a list.

from vnnlab.api import load_model, run
result = run(["model=vae", "data=manifold", "trainer.max_epochs=5"])
result.run_id, result.metrics["test/elbo"], result.model      # the model just trained
model = load_model(result.run_id)                             # later, from MLflow
"""

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from vnnlab import tracking
from vnnlab.cli import CONFIG_DIR
from vnnlab.errors import bad_value
from vnnlab.models.base import VNNModule
from vnnlab.resume import CHECKPOINT_ARTIFACT
from vnnlab.train import TrainResult, train


def run(overrides: Sequence[str] = ()) -> TrainResult:
    """Compose the config from `overrides` as `vnnlab-train` would, train, test and record one
    MLflow run (by default in ./mlflow.db). Raises BadInputError before any run on bad input."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return train(cfg)


def load_model(run_id: str, tracking_uri: str | None = None) -> VNNModule:
    """The trained model of a run, from its logged config and last checkpoint (loaded with
    weights_only=True: a checkpoint holds tensors and plain hyper-parameters only)."""
    return load_run(run_id, tracking_uri)[0]


def load_run(run_id: str, tracking_uri: str | None = None) -> tuple[VNNModule, dict[str, Any]]:
    """The run's trained model (in eval mode) and its whole checkpoint, whose entries include
    the data module's state. BadInputError when the store or the run has none."""
    uri = tracking.resolve_tracking_uri(tracking_uri, Path.cwd())
    database = tracking.sqlite_path(uri)
    if database is not None and not database.is_file():
        raise bad_value("run_id", run_id, f"the id of a run in {uri} (no such file)")
    client = tracking.open_store(uri)
    with tempfile.TemporaryDirectory(prefix="vnnlab-") as scratch:
        try:
            config = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", scratch))
            checkpoint = client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, scratch)
        except (MlflowException, OSError):
            raise bad_value("run_id", run_id, f"a finished vnnlab run in {uri}") from None
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    # what Lightning's load_from_checkpoint does, hook included, without reading the file twice
    model = get_class(config.model._target_)(**state["hyper_parameters"])
    model.on_load_checkpoint(state)
    model.load_state_dict(state["state_dict"])
    return model.eval(), state
