"""Minibatches as index slices of tensors held in memory: no per-item __getitem__, no collate."""

from collections.abc import Callable, Iterator

import torch
from torch import Tensor


class TensorBatches:
    """An iterable of minibatches over tensors that share their first dimension.

    Lightning accepts any iterable with a length as a dataloader. `transform` maps a batch of
    raw rows (e.g. uint8 images) to model inputs, so only one batch is converted at a time.
    The rows are served from the device the tensors are on: the order of an epoch moves there
    once, so a batch is one indexing on the device, with no copy from the host.

    In a multi-process fit (DDP) each of the `replicas` processes serves its own share, by
    `rank`: every replica draws the same order from the shared seed and takes every
    replicas-th row of it, so one step's batches, together, are one batch of the whole order.
    Training shares are cut to ⌊N / replicas⌋ rows (at most replicas − 1 rows sit out an
    epoch, different ones each epoch) so that every replica takes the same number of steps;
    evaluation shares keep every row once, in the same number of batches on every replica
    (DDP may talk across replicas at each forward pass).
    """

    def __init__(
        self,
        tensors: tuple[Tensor, ...],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        transform: Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]] | None = None,
        rank: int = 0,
        replicas: int = 1,
    ):
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.transform = transform
        self.rank, self.replicas = rank, replicas
        self._generator = torch.Generator().manual_seed(seed)

    def shuffle_state(self) -> Tensor:
        """Where the shuffling stands: saved in a checkpoint, so that a resumed run draws the
        same batch order as one that was never interrupted."""
        return self._generator.get_state()

    def restore_shuffle_state(self, state: Tensor) -> None:
        self._generator.set_state(state)

    def __len__(self) -> int:
        return _ceil_div(self._share_size(), self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        for index in self._batch_indices():
            batch = tuple(t[index] for t in self.tensors)
            yield self.transform(batch) if self.transform else batch

    def _share_size(self) -> int:
        """Rows this replica serves per pass (the largest share, in evaluation)."""
        n = len(self.tensors[0])
        return n // self.replicas if self.shuffle else _ceil_div(n, self.replicas)

    def _batch_indices(self) -> tuple[Tensor, ...]:
        n = len(self.tensors[0])
        device = self.tensors[0].device
        if self.shuffle:  # drawn on the host: its generator's state goes into checkpoints
            order = torch.randperm(n, generator=self._generator).to(device)
        else:
            order = torch.arange(n, device=device)
        share = order[self.rank :: self.replicas][: self._share_size()]
        if self.shuffle or self.replicas == 1:
            return share.split(self.batch_size)
        return share.tensor_split(len(self))  # as many batches as the largest share


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
