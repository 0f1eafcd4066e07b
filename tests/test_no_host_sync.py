"""The GPU path: a training step never waits for the device. Whatever reads a tensor's value on
the host (`.item()`, `if tensor`, `float(tensor)`, `.tolist()`, `.cpu()`, `.numpy()`) makes the
host wait until the device has computed it: once per step, that serialises a GPU's queue.

Checked on CPU by watching every torch call of a real fit (vnnlab.run.training with its own
callbacks, Lightning's loop, the optimiser) through a TorchFunctionMode, which sees those
reads on any device. The last batch of an epoch may read: the epoch's means are handed over
and checked there, once."""

import pytest
from pytorch_lightning import Callback
from torch.overrides import TorchFunctionMode

from helpers import FAST, composed
from vnnlab.run.training import train

HOST_READS = {"item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy"}


class HostReads(TorchFunctionMode):
    """Records the torch functions called while it is active whose name is a host read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


class WatchTrainingSteps(Callback):
    """From each training batch's start to its end (forward, loss, backward, optimiser step
    and the callbacks around them): the host reads of every batch but an epoch's last."""

    def __init__(self) -> None:
        self.mode: HostReads | None = None
        self.reads_per_batch: list[list[str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.mode = HostReads()
        self.mode.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        assert self.mode is not None
        self.mode.__exit__(None, None, None)
        if batch_idx + 1 < trainer.num_training_batches:
            self.reads_per_batch.append(self.mode.reads)
        self.mode = None


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=bnn_regressor"],
        ["model=bnn_regressor", "inference.estimator=weights", "inference.mc_samples=3",
         "model.learn_sigma2=true"],
        ["model=bnn_regressor", "inference.prior=scale_mixture", "inference.kl=monte_carlo",
         "inference.estimator=weights"],
        ["model=vae", "data=manifold", "data.n_train=400", "data.n_val=100",
         "data.n_test=100", "model.learn_sigma2=optimal"],
        ["model=mlp_regressor"],
    ],
    ids=["bnn", "bnn-weights-learned-sigma2", "bnn-scale-mixture", "vae-optimal-sigma2", "mlp"],
)  # fmt: skip
def test_a_training_step_reads_nothing_back_from_the_device(tmp_path, store, overrides):
    watch = WatchTrainingSteps()
    cfg = composed(*FAST, *overrides, "data.batch_size=50", f"tracking.uri=sqlite:///{store}")
    train(cfg, callbacks=[watch])
    assert len(watch.reads_per_batch) >= 2 * 3  # two epochs of at least 4 batches, watched
    assert [reads for reads in watch.reads_per_batch if reads] == []


def test_the_watch_sees_a_host_read_in_a_training_step(tmp_path, store):
    """The check above can fail: a model that calls .item() in its step is caught."""

    class ReadsTheLoss(Callback):
        def on_before_backward(self, trainer, pl_module, loss) -> None:
            loss.item()

    watch = WatchTrainingSteps()
    cfg = composed(*FAST, "model=mlp_regressor", "data.batch_size=50",
                   f"tracking.uri=sqlite:///{store}")  # fmt: skip
    train(cfg, callbacks=[watch, ReadsTheLoss()])
    assert all(reads == ["item"] for reads in watch.reads_per_batch)
