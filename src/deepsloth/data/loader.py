"""`TensorLoader`: batches from an in-memory uint8 dataset, augmented on the device.

The whole split is moved to `device` once, as uint8 (CIFAR-10 train is 154 MB). Each batch is
indexed out, augmented with batched tensor ops if asked, converted to float [0, 1] and
optionally made channels-last. Shuffling draws a permutation from a `torch.Generator`
seeded from (seed, epoch), so a run is reproducible and every epoch differs. Iterating
advances the epoch by one; `set_epoch(e)` pins it (call it each epoch when resuming).

With `augment=True` (the dataset's training recipe, plus `cutout`) the random parameters of
the whole epoch (crop offsets, flips, jitter factors, cutout squares) are drawn when the epoch
starts, on a seeded CPU generator, batch by batch exactly as `augment_batch` would draw them,
and moved to `device` with the permutation once per epoch (on CUDA asynchronously, from pinned
memory). Each batch is then indexed and augmented on the device with nothing copied from the
host, so on CUDA the host queues steps ahead of the GPU; the batches are the same as augmenting
batch by batch with `augment_batch` on the same generator. An `augment` function is called
batch by batch instead.

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
from .augment import AugmentParams, apply_augment, draw_augment, to_float01

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
                 *, rank: int = 0, world_size: int = 1, cutout: int = 0):
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
        if cutout < 0:
            raise DeepslothError(f"cutout size must be >= 0, got {cutout}")
        self.cutout = int(cutout)
        self._recipe = augment is True   # the dataset's recipe, drawn per epoch (see the module doc)
        self._augment: Optional[AugmentFn] = None
        if augment is True:
            if self.name is None:
                raise DeepslothError("augment=True needs a dataset with a name; pass a function")
        elif augment is False or augment is None:
            pass
        elif callable(augment):
            self._augment = augment
        else:
            raise DeepslothError(f"augment must be a bool or a function, got {augment!r}")
        if self.cutout and not self._recipe:
            raise DeepslothError("cutout is part of augment=True; pass it inside an augment function otherwise")

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
        """This epoch's order of items, on the CPU."""
        n = len(self.labels)
        idx = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            idx = idx[self.rank::self.world_size][: self.num_items]
        return idx

    def _batch_sizes(self):
        bs, n = self.batch_size, self.num_items
        return [min(bs, n - b * bs) for b in range(len(self))]

    def epoch_params(self, g: torch.Generator) -> AugmentParams:
        """The augmentation parameters of one epoch, one per item in batch order (on the CPU):
        drawn batch by batch from `g` as `augment_batch` draws them, then concatenated."""
        hw = tuple(self.images.shape[-2:])
        parts = [draw_augment(size, self.name, hw, g, self.cutout) for size in self._batch_sizes()]
        if not parts:
            return {}
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":   # pinned: the copy runs asynchronously, the host does not wait
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        g_order = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, 0))
        g_aug = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, 1 + self.rank))
        idx = self._to_device(self._indices(g_order))
        params = {k: self._to_device(v) for k, v in self.epoch_params(g_aug).items()} if self._recipe else None
        bs = self.batch_size
        for b in range(len(self)):
            sel = idx[b * bs:(b + 1) * bs]
            x = self.images.index_select(0, sel)
            y = self.labels.index_select(0, sel)
            if params is not None:
                x = apply_augment(x, self.name, {k: v[b * bs:(b + 1) * bs] for k, v in params.items()},
                                  self.cutout)
            elif self._augment is not None:
                x = self._augment(x, g_aug)
            else:
                x = to_float01(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
