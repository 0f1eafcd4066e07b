"""A run that diverges after some epochs: it stops at the first non-finite loss, ends FAILED
with the step in its reason, and the checkpoint it logs is the last one of finite weights (the
end of the epoch before), from which it can be resumed or inspected."""

import math

import pytest
import torch
from mlflow.tracking import MlflowClient
from pytorch_lightning import Callback

from helpers import QUICK, composed
from vnnlab.models.base import NonFiniteLossError
from vnnlab.run.training import train

STEPS_PER_EPOCH = 4  # 128 training points in batches of 32


class PoisonAtEpoch(Callback):
    """A divergence on cue: one weight becomes NaN as epoch `epoch` (0-based) starts."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = math.nan


def test_a_late_divergence_keeps_the_last_finite_checkpoint(tmp_path, store):
    uri = f"sqlite:///{store}"
    cfg = composed(
        *QUICK,
        "trainer.max_epochs=4",
        "model=mlp_regressor",
        "data.n_train=128",
        "data.n_val=32",
        "data.n_test=32",
        "data.batch_size=32",
        f"tracking.uri={uri}",
    )
    with pytest.raises(NonFiniteLossError, match=f"at step {2 * STEPS_PER_EPOCH} "):
        train(cfg, callbacks=[PoisonAtEpoch(2)])

    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("vnnlab").experiment_id])
    assert run.info.status == "FAILED"
    assert f"at step {2 * STEPS_PER_EPOCH} (epoch 2, batch 0)" in run.data.tags["vnnlab.failure"]
    path = client.download_artifacts(run.info.run_id, "checkpoints/last.ckpt", str(tmp_path))
    state = torch.load(path, weights_only=True)
    assert (state["epoch"], state["global_step"]) == (1, 2 * STEPS_PER_EPOCH)  # 2 epochs done
    assert all(torch.isfinite(tensor).all() for tensor in state["state_dict"].values())
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(losses) == 2 and all(math.isfinite(m.value) for m in losses)
