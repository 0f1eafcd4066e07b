"""Multi-process training, the parts that need no second process: how a split is shared out
among the processes (data.batches.TensorBatches), and that each process's loss is a mean over
its own examples plus terms that do not depend on them, so that DDP's average of the
processes' gradients is the gradient of one process on the union of their batches. The fit
on two real processes is in reliability/test_ddp_processes.py (slow)."""

import pytest
import torch

from helpers import QUICK, composed
from vnnlab.data.batches import TensorBatches
from vnnlab.run.build import build_data_and_model


def shares(n: int, batch_size: int, shuffle: bool, replicas: int = 2) -> list[list[list[int]]]:
    """Per replica, one pass's batches as lists of row numbers."""
    rows = torch.arange(n)
    return [
        [batch.tolist() for (batch,) in TensorBatches((rows,), batch_size, shuffle, seed=3,
                                                      rank=rank, replicas=replicas)]
        for rank in range(replicas)
    ]  # fmt: skip


@pytest.mark.parametrize("n", [100, 103])
def test_one_training_step_of_two_replicas_is_one_batch_of_a_single_process(n):
    two = shares(n, batch_size=5, shuffle=True)
    [single] = shares(n, batch_size=10, shuffle=True, replicas=1)
    assert len(two[0]) == len(two[1]) == -(-(n // 2) // 5)  # the same number of steps
    for step, (first, second) in enumerate(zip(*two, strict=True)):
        union = sorted(first + second)
        if len(first) == len(second) == 5:
            assert union == sorted(single[step])
        else:  # the last step of an odd split: the single process has the row left out
            assert set(union) < set(single[step]) and len(single[step]) - len(union) == n % 2
    served = [row for share in two for batch in share for row in batch]
    assert len(served) == len(set(served)) == n - n % 2  # no row twice, at most one sits out


def test_replicas_reshuffle_alike_every_epoch():
    batches = [TensorBatches((torch.arange(40),), 4, shuffle=True, seed=1, rank=rank,
                             replicas=2) for rank in range(2)]  # fmt: skip
    epochs = [[[b.tolist() for (b,) in share] for share in batches] for _ in range(2)]
    for first, second in epochs:
        assert sorted(sum(first + second, [])) == list(range(40))  # a partition, each epoch
    assert epochs[0] != epochs[1]


@pytest.mark.parametrize(("n", "batch_size"), [(100, 10), (101, 10), (7, 3), (1000, 64)])
def test_evaluation_shares_every_row_once_in_as_many_batches_on_every_replica(n, batch_size):
    for replicas in (2, 3):
        parts = shares(n, batch_size, shuffle=False, replicas=replicas)
        assert len({len(part) for part in parts}) == 1  # DDP may talk at each forward pass
        assert all(batch for part in parts for batch in part)
        assert sorted(row for part in parts for batch in part for row in batch) == list(range(n))
    [single] = shares(n, batch_size, shuffle=False, replicas=1)
    assert single == [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def gradients(model, loss: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def union_and_halves(model, batch, same_draw: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the loss on the whole batch, and the mean of the gradients on its two
    halves (what DDP averages over two processes), with the noise the whole drew: one draw
    for the whole step (`same_draw`: each half starts from the seed), or one per example
    (the halves draw in turn from the seed, continuing one stream)."""
    torch.manual_seed(7)
    whole = gradients(model, model.training_terms(batch)["loss"])
    half = len(batch[0]) // 2
    torch.manual_seed(7)
    first = gradients(model, model.training_terms(tuple(t[:half] for t in batch))["loss"])
    if same_draw:
        torch.manual_seed(7)
    second = gradients(model, model.training_terms(tuple(t[half:] for t in batch))["loss"])
    return whole, (first + second) / 2


def test_the_bnn_loss_of_each_process_scales_the_kl_by_the_global_n():
    """One weight draw for the whole step (estimator=weights): each half draws the same θ as
    the whole, so the halves' mean gradient is the whole's exactly when KL/N uses the global N
    (the N of the data set, not of a process's share)."""
    cfg = composed(*QUICK, "model=bnn_regressor", "inference.estimator=weights",
                   "data.n_train=200")  # fmt: skip
    datamodule, model = build_data_and_model(cfg)
    batch = tuple(t[:64] for t in datamodule.split("train"))
    whole, halves = union_and_halves(model, batch, same_draw=True)
    torch.testing.assert_close(halves, whole, rtol=1e-5, atol=1e-6)

    model.inference.n_train = cfg.data.n_train // 2  # a process's share as N: the KL counts twice
    _, halves_wrong = union_and_halves(model, batch, same_draw=True)
    assert not torch.allclose(halves_wrong, whole, rtol=1e-5, atol=1e-6)


def test_the_vae_loss_of_each_process_is_its_examples_mean_elbo():
    """The VAE's objective is per example (no N): with the same ζ for each row, the halves'
    mean gradient is the whole batch's (32 rows × 3 latent: draws of 48 values, a whole
    number of torch's blocks of 16 normals, so one draw of 96 is two draws of 48)."""
    cfg = composed(*QUICK, "model=vae", "data=manifold", "data.n_train=200", "data.n_val=50",
                   "data.n_test=50", "model.latent_dim=3")  # fmt: skip
    datamodule, model = build_data_and_model(cfg)
    batch = tuple(t[:64] for t in datamodule.split("train"))
    whole, halves = union_and_halves(model, batch, same_draw=False)
    torch.testing.assert_close(halves, whole, rtol=1e-5, atol=1e-6)
