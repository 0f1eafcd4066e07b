"""Minibatches as index slices of tensors held in memory: no per-item __getitem__, no collate."""

from collections.abc import Callable, Iterator

import torch
from torch import Tensor


class TensorBatches:
    """An iterable of minibatches over tensors that share their first dimension.

    Lightning accepts any iterable with a length as a dataloader. `transform` maps a batch of
    raw rows (e.g. uint8 images) to model inputs, so only one batch is converted at a time.
    """

    def __init__(
        self,
        tensors: tuple[Tensor, ...],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        transform: Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]] | None = None,
    ):
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.transform = transform
        self._generator = torch.Generator().manual_seed(seed)

    def shuffle_state(self) -> Tensor:
        """Where the shuffling stands: saved in a checkpoint, so that a resumed run draws the
        same batch order as one that was never interrupted."""
        return self._generator.get_state()

    def restore_shuffle_state(self, state: Tensor) -> None:
        self._generator.set_state(state)

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        n = len(self.tensors[0])
        order = torch.randperm(n, generator=self._generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                batch = tuple(t[start : start + self.batch_size] for t in self.tensors)
            else:
                index = order[start : start + self.batch_size]
                batch = tuple(t[index] for t in self.tensors)
            yield self.transform(batch) if self.transform else batch
