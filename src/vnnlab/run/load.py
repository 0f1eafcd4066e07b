"""A finished run brought back from MLflow: its model, rebuilt from its logged config and last
checkpoint (loaded with weights_only=True: a checkpoint holds tensors and plain values only)."""

import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from vnnlab.errors import bad_value
from vnnlab.models.base import VNNModule
from vnnlab.run.resume import CHECKPOINT_ARTIFACT
from vnnlab.tracking.store import open_existing_store, resolve_tracking_uri


def load_model(run_id: str, tracking_uri: str | None = None) -> VNNModule:
    """The trained model of a run (in eval mode)."""
    return load_run(run_id, tracking_uri)[0]


def load_run(run_id: str, tracking_uri: str | None = None) -> tuple[VNNModule, dict[str, Any]]:
    """The run's trained model (in eval mode) and its whole checkpoint, whose entries include
    the data module's state. BadInputError when the store or the run has none."""
    uri = resolve_tracking_uri(tracking_uri, Path.cwd())
    client = open_existing_store(uri, "run_id", run_id)
    with tempfile.TemporaryDirectory(prefix="vnnlab-") as scratch:
        try:
            config = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", scratch))
            checkpoint = client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, scratch)
        except (MlflowException, OSError):
            raise bad_value("run_id", run_id, f"a finished vnnlab run in {uri}") from None
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    # what Lightning's load_from_checkpoint does, hook included, without reading the file twice
    model = _model_class(config.model._target_, run_id)(**state["hyper_parameters"])
    model.on_load_checkpoint(state)
    model.load_state_dict(state["state_dict"])
    return model.eval(), state


def _model_class(target: str, run_id: str) -> type[VNNModule]:
    try:
        return get_class(target)
    except ImportError:  # Hydra's; a class that vnnlab no longer has
        allowed = (
            f"a run recorded by vnnlab 0.2 or later (its model {target} predates "
            "inference=; retrain it with model=regressor or classifier and inference=…)"
        )
        raise bad_value("run_id", run_id, allowed) from None
