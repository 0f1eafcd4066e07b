"""1. Data path: an MNIST epoch of the same MLP (784-400-400-10, ReLU, fused Adam 1e-3,
batch 128) in the same plain loop, fed by vnnlab's MNISTDataModule (index slices of in-memory
tensors) or by a DataLoader over torchvision's per-item MNIST(transform=ToTensor()).
Epochs alternate between the two feeds; medians after one warm-up epoch each.

And the VAE's epoch (784-400-20, Bernoulli, batch 128) on dynamically binarised MNIST (a fresh
Bernoulli draw per pixel in every training batch, made in the batch, on its device) against
the grey-level one, epochs alternating the same way."""

import itertools
import statistics
import time
from collections.abc import Callable, Iterable

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import ToTensor

from comparisons.common import Row, Scale
from vnnlab.data.mnist import MNISTDataModule
from vnnlab.models.vae import VAE

IN_MEMORY, PER_ITEM = "MNISTDataModule", "DataLoader(MNIST, ToTensor)"


def make_mlp() -> nn.Module:
    # Flatten turns torchvision's (B, 1, 28, 28) into (B, 784); the module's batches already are.
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 400),
                         nn.ReLU(), nn.Linear(400, 10))  # fmt: skip


def per_item_batches(root: str, indices: list[int], batch_size: int, seed: int) -> DataLoader:
    """torchvision's usual path: a PIL image and a ToTensor per sample, collated per batch."""
    dataset = torchvision.datasets.MNIST(root, train=True, transform=ToTensor())
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(Subset(dataset, indices), batch_size, shuffle=True, generator=generator)


def mlp_epoch(batches: Iterable, n_batches: int | None) -> float:
    """Seconds of one epoch of a fresh, seeded MLP over `batches` (the first `n_batches`)."""
    torch.manual_seed(0)
    model = make_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as vnnlab trains
    start = time.perf_counter()
    for x, y in itertools.islice(batches, n_batches):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def vae_epoch(batches: Iterable, n_batches: int | None) -> float:
    """Seconds of one epoch of a fresh, seeded Bernoulli VAE's ELBO steps over `batches`."""
    torch.manual_seed(0)
    model = VAE(784, latent_dim=20, hidden=[400], likelihood="bernoulli")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    start = time.perf_counter()
    for batch in itertools.islice(batches, n_batches):
        loss = model.training_terms(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def alternating_epochs(
    feeds: dict[str, Iterable], epoch: Callable[[Iterable, int | None], float], scale: Scale
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """`epoch` over each feed in turn, 1 + scale.repeats rounds (round 0 warms up, untimed):
    each feed's median seconds and every timed epoch's."""
    seconds: dict[str, list[float]] = {name: [] for name in feeds}
    for round_ in range(1 + scale.repeats):
        for name, batches in feeds.items():
            elapsed = epoch(batches, scale.batches)
            if round_:
                seconds[name].append(elapsed)
    return {name: statistics.median(each) for name, each in seconds.items()}, seconds


def compare_binarized(root: str, n_val: int, scale: Scale) -> Row:
    feeds = {}
    for binarize in ("none", "dynamic"):
        module = MNISTDataModule(root=root, n_val=n_val, batch_size=128, seed=0, binarize=binarize)
        feeds[binarize] = module.train_dataloader()
    medians, seconds = alternating_epochs(feeds, vae_epoch, scale)
    ratio = medians["dynamic"] / medians["none"]
    return Row("data path: VAE epoch, dynamically binarised / grey", ratio, "×", "≤ 1.1×",
               ratio <= 1.1, {"epoch_seconds": medians, "each": seconds})  # fmt: skip


def compare(root: str, n_val: int, scale: Scale) -> list[Row]:
    module = MNISTDataModule(root=root, n_val=n_val, batch_size=128, seed=0)
    module.setup()
    feeds = {
        IN_MEMORY: module.train_dataloader(),
        PER_ITEM: per_item_batches(root, module.split_indices["train"].tolist(), 128, seed=0),
    }
    medians, seconds = alternating_epochs(feeds, mlp_epoch, scale)
    return [
        Row(
            "data path: MLP epoch, per-item DataLoader / MNISTDataModule",
            medians[PER_ITEM] / medians[IN_MEMORY],
            "×",
            "≥ 3×",
            medians[PER_ITEM] / medians[IN_MEMORY] >= 3,
            {"epoch_seconds": medians, "each": seconds, "batches": scale.batches or "all"},
        ),
        compare_binarized(root, n_val, scale),
    ]
