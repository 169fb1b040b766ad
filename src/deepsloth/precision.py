"""Mixed precision for training and crafting (docs/method.md §3.7).

`amp="bf16"` runs the forward passes (and the adversarial crafting inside adversarial training)
under `torch.autocast` with bfloat16: convolutions and matrix products in bf16, the parameters,
optimiser state, losses and the input gradient in fp32. No loss scaling is needed (bf16 keeps
fp32's exponent range). On CPUs with AMX (Intel Sapphire Rapids and later) oneDNN runs bf16
convolutions several times faster than fp32 (`benchmarks/train_throughput.py --amp` prints the
ratio); on CUDA it uses the tensor cores. Evaluation, calibration and the saved weights stay fp32.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch

from .errors import DeepslothError

AMP_CHOICES = ("off", "bf16")


def check_amp(amp: Optional[str]) -> Optional[str]:
    """None for full fp32 ("off" or None), else the validated mode."""
    if amp in (None, "off"):
        return None
    if amp not in AMP_CHOICES:
        raise DeepslothError(f"unknown --amp {amp!r}; choose from {', '.join(AMP_CHOICES)}")
    return amp


def autocast(device: torch.device, amp: Optional[str]):
    """The autocast context for `amp` on `device` (a no-op context when amp is off)."""
    if check_amp(amp) is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


__all__ = ["AMP_CHOICES", "check_amp", "autocast"]
