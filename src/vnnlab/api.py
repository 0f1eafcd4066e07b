"""vnnlab from Python (a notebook, a script): the command line's overrides as a list.

from vnnlab.api import load_model, run
result = run(["model=vae", "data=manifold", "trainer.max_epochs=5"])
result.run_id, result.metrics["test/elbo"], result.model      # the model just trained
model = load_model(result.run_id)                             # later, from MLflow
"""

from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from vnnlab import CONFIG_DIR
from vnnlab.run.context import RunContext
from vnnlab.run.load import load_model, load_run
from vnnlab.run.training import TrainResult, train

__all__ = ["load_model", "load_run", "run"]


def run(overrides: Sequence[str] = ()) -> TrainResult:
    """Compose the config from `overrides` as `vnnlab-train` would, train, test and record one
    MLflow run (by default in ./mlflow.db). Raises BadInputError before any run on bad input."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]  # Hydra's own settings: no knob of the run
    return train(cfg, RunContext(overrides=tuple(overrides), choices=choices))
