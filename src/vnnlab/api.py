"""vnnlab from Python (a notebook, a script): the command line's overrides as a list.

from vnnlab.api import load_model, run
result = run(["model=vae", "data=manifold", "trainer.max_epochs=5"])
result.run_id, result.metrics["test/elbo"], result.model      # the model just trained
model = load_model(result.run_id)                             # later, from MLflow
"""

import tempfile
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from vnnlab import tracking
from vnnlab.cli import CONFIG_DIR
from vnnlab.models.base import VNNModule
from vnnlab.train import LAST_CHECKPOINT, TrainResult, train


def run(overrides: Sequence[str] = ()) -> TrainResult:
    """Compose the config from `overrides` as `vnnlab-train` would, train, test and record one
    MLflow run (by default in ./mlflow.db). Raises BadInputError before any run on bad input."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return train(cfg)


def load_model(run_id: str, tracking_uri: str | None = None) -> VNNModule:
    """The trained model of a run, from its logged config and last checkpoint (loaded with
    weights_only=True: a checkpoint holds tensors and plain hyper-parameters only)."""
    client = MlflowClient(tracking.resolve_tracking_uri(tracking_uri, Path.cwd()))
    with tempfile.TemporaryDirectory(prefix="vnnlab-") as scratch:
        config = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", scratch))
        checkpoint = client.download_artifacts(run_id, f"checkpoints/{LAST_CHECKPOINT}", scratch)
        model_class = get_class(config.model._target_)
        return model_class.load_from_checkpoint(checkpoint, weights_only=True, map_location="cpu")
