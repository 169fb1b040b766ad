"""`TensorLoader`: batches from an in-memory uint8 dataset, augmented on the device.

The whole split is moved to `device` once, as uint8 (CIFAR-10 train is 154 MB). Each batch is
indexed out, augmented with batched tensor ops if asked, converted to float [0, 1] and
optionally made channels-last. Shuffling draws a permutation from a `torch.Generator`
seeded from (seed, epoch), so a run is reproducible and every epoch differs. Iterating
advances the epoch by one; `set_epoch(e)` pins it (call it each epoch when resuming).

For `torch.distributed`, pass `rank` and `world_size`: every rank draws the same
permutation and takes a strided share of it, truncated so all ranks get the same number of
items (and hence of batches).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import DeepslothError
from .augment import augment_batch, to_float01

AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for (seed, epoch, stream); no collisions like seed+epoch."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(stream)]) \
        .generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) | int(state[1])


class TensorLoader:
    """Iterate `(x, y)` batches: x float32 [B,3,H,W] in [0, 1] on `device`, y int64 [B]."""

    def __init__(self, dataset, batch_size: int = 128, shuffle: bool = True,
                 augment: Union[bool, AugmentFn] = False, drop_last: bool = False, seed: int = 0,
                 device: Union[str, torch.device] = "cpu", channels_last: bool = False,
                 *, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise DeepslothError(f"batch size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise DeepslothError(f"rank {rank} outside world size {world_size}")
        self.dataset = dataset
        self.name = getattr(dataset, "name", None)
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device, torch.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        if augment is True:
            if self.name is None:
                raise DeepslothError("augment=True needs a dataset with a name; pass a function")
            name = self.name
            self._augment: Optional[AugmentFn] = lambda x, g: augment_batch(x, name, g)
        elif augment is False or augment is None:
            self._augment = None
        elif callable(augment):
            self._augment = augment
        else:
            raise DeepslothError(f"augment must be a bool or a function, got {augment!r}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def num_items(self) -> int:
        """Items this rank sees per epoch."""
        n = len(self.labels)
        return n // self.world_size if self.world_size > 1 else n

    def __len__(self) -> int:
        n = self.num_items
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _indices(self, g: torch.Generator) -> torch.Tensor:
        n = len(self.labels)
        idx = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            idx = idx[self.rank::self.world_size][: self.num_items]
        return idx.to(self.device)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        g_order = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, 0))
        g_aug = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, 1 + self.rank))
        idx = self._indices(g_order)
        bs = self.batch_size
        for b in range(len(self)):
            sel = idx[b * bs:(b + 1) * bs]
            x = self.images.index_select(0, sel)
            y = self.labels.index_select(0, sel)
            x = self._augment(x, g_aug) if self._augment is not None else to_float01(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
