"""Device selection and what fits the device: `auto` means CUDA when present, else CPU.

    dev = resolve_device("auto")
    bs = auto_batch(dev, default=128, per_item_bytes=lambda: probe(...))   # 128 on CPU

On CUDA, batch sizes left to the package (crafting's `--batch-size`, evaluation's
`--eval-batch-size` when not given) come from `auto_batch`: the largest power of two, up to
`AUTO_BATCH_CAP`, whose memory (measured per input with one probe step) fits in a share of the
GPU's free memory. On a CPU the usual fixed defaults stay (the memory there is not the limit,
and CPU results keep their batch layout). Convolutional models run channels-last on CUDA as on
CPU (`prefers_channels_last`).
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import nn

from .errors import DeepslothError

AUTO_BATCH_CAP = 4096     # beyond this a CIFAR-sized step gains nothing (the GPU is already full)
MEMORY_SHARE = 0.7        # of the free memory: room for the allocator's fragmentation and other tensors


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeepslothError(f"device {name!r} requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DeepslothError(f"unknown device {name!r} (use auto, cpu or cuda)") from None


def free_memory(device: torch.device | str) -> int:
    """Bytes a new allocation on the CUDA `device` can use: what the driver reports free plus what
    this process's caching allocator holds unused (it hands that out first)."""
    device = torch.device(device)
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + max(0, cached))


def auto_batch(device: torch.device | str, *, default: int,
               per_item_bytes: Union[float, Callable[[], float]], given: Optional[int] = None,
               cap: int = AUTO_BATCH_CAP, free_bytes: Optional[int] = None, share: float = MEMORY_SHARE) -> int:
    """The batch size to run: `given` when the caller gave one; on anything but CUDA, `default`;
    on CUDA the largest power of two <= `cap` with batch * per_item_bytes <= share * free_bytes
    (at least 1).

    `per_item_bytes` is the memory one input of the batch needs (a number, or a function that
    measures it, called only on CUDA: see `peak_bytes_per_item`); `free_bytes` defaults to
    `free_memory(device)`. The result depends only on these numbers, so it is the same on every
    run of the same device with the same free memory (and recorded wherever it changes results)."""
    if given is not None:
        if int(given) < 1:
            raise DeepslothError(f"batch size must be >= 1, got {given}")
        return int(given)
    if torch.device(device).type != "cuda":
        return int(default)
    per = float(per_item_bytes() if callable(per_item_bytes) else per_item_bytes)
    free = free_memory(device) if free_bytes is None else int(free_bytes)
    limit = max(1, int(cap))
    fits = limit if per <= 0 else int(share * free // per)
    fits = max(1, min(fits, limit))
    return 1 << (fits.bit_length() - 1)   # a power of two: stable under small changes of free memory


def peak_bytes_per_item(step: Callable[[int], None], device: torch.device | str, batch: int = 256) -> float:
    """Peak CUDA memory of one `step(batch)` call (it builds its own inputs of `batch` rows),
    divided by `batch`: an upper bound of the memory per input (it includes fixed costs such as
    convolution workspaces). A probe that runs out of memory is retried at half the batch."""
    device = torch.device(device)
    while True:
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            step(batch)
            torch.cuda.synchronize(device)
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            continue
        return max(0, torch.cuda.max_memory_allocated(device) - base) / batch


def prefers_channels_last(model: nn.Module, device: torch.device | str) -> bool:
    """Whether `model` should run channels-last on `device`: always on a CPU (its convolutions are
    faster so, and CPU results were made so), on CUDA for convolutional networks (three or more
    2-d convolutions: cuDNN's tensor-core kernels work channels-last), not for a vision transformer
    (one patch convolution); elsewhere the model keeps its layout."""
    kind = torch.device(device).type
    if kind == "cpu":
        return True
    return kind == "cuda" and sum(isinstance(m, nn.Conv2d) for m in model.modules()) >= 3


__all__ = ["resolve_device", "auto_batch", "free_memory", "peak_bytes_per_item", "prefers_channels_last",
           "AUTO_BATCH_CAP", "MEMORY_SHARE"]
