"""Mixed precision for training and crafting (docs/method.md §3.7).

`amp="bf16"` runs the forward passes (and the adversarial crafting inside adversarial training)
under `torch.autocast` with bfloat16: convolutions and matrix products in bf16, the parameters,
optimiser state, losses and the input gradient in fp32. No loss scaling is needed (bf16 keeps
fp32's exponent range). On CPUs with native bf16 arithmetic (AMX or AVX512-BF16: Intel Sapphire
Rapids and later, AMD Zen 4 and later) oneDNN runs bf16 convolutions several times faster than
fp32 (`benchmarks/train_throughput.py --amp` prints the ratio); on CPUs without it (AVX2 only)
bf16 is emulated and many times *slower* than fp32; on CUDA it uses the tensor cores.
`amp="auto"` picks bf16 only where the device has it natively (`native_bf16`), else fp32.
Evaluation, calibration and the saved weights stay fp32.

When the user names no precision, `default_amp` says what to run: "auto" on CUDA (bf16 on any GPU
that computes it natively, Ampere and later), "off" (fp32) elsewhere, so CPU runs and their results
are unchanged; `--amp off` keeps fp32 on a GPU.
"""
from __future__ import annotations

import functools
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import torch

from .errors import DeepslothError, DeepslothWarning

AMP_CHOICES = ("off", "bf16", "auto")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")   # /proc/cpuinfo flags of native bf16 arithmetic


def check_amp(amp: Optional[str]) -> Optional[str]:
    """None for full fp32 ("off" or None), else the validated mode ("bf16" or "auto")."""
    if amp in (None, "off"):
        return None
    if amp not in AMP_CHOICES:
        raise DeepslothError(f"unknown --amp {amp!r}; choose from {', '.join(AMP_CHOICES)}")
    return amp


@functools.lru_cache(maxsize=None)
def _cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX-BF16 or AVX512-BF16)."""
    probes = [getattr(torch.cpu, n, None) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(callable(p) for p in probes):
        try:
            return any(bool(p()) for p in probes)
        except RuntimeError:
            pass
    try:   # an older torch without the probes: the kernel's flag list (Linux)
        flags = set(" ".join(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                             if line.startswith("flags")).split())
    except OSError:
        return False
    return any(f in flags for f in CPU_BF16_FLAGS)


def native_bf16(device) -> bool:
    """Whether `device` runs bf16 natively: a CUDA GPU with bf16 support, or a CPU with AMX or
    AVX512-BF16 (docs/method.md §3.7)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return _cpu_native_bf16()
    return False


def resolve_amp(amp: Optional[str], device) -> Optional[str]:
    """The precision to run on `device`: None (fp32) or "bf16". "auto" is bf16 where the device has
    native bf16 and fp32 elsewhere; an explicit "bf16" on a CPU without it is kept, with a warning
    (it is emulated there, many times slower than fp32)."""
    amp = check_amp(amp)
    if amp is None:
        return None
    native = native_bf16(device)
    if amp == "auto":
        return "bf16" if native else None
    if not native and torch.device(device).type == "cpu":
        warnings.warn("bf16 autocast on a CPU without native bf16 (no AMX or AVX512-BF16) is emulated and many "
                      "times slower than fp32; use --amp auto or off here", DeepslothWarning, stacklevel=2)
    return amp


def default_amp(device) -> str:
    """The precision mode when none is given: "auto" on CUDA, "off" (fp32) on any other device."""
    return "auto" if torch.device(device).type == "cuda" else "off"


def autocast(device: torch.device, amp: Optional[str]):
    """The autocast context for `amp` ("bf16", or "auto" resolved on `device`; a no-op context
    when fp32). It does not warn: `resolve_amp` does, once, where a run starts."""
    amp = check_amp(amp)
    if amp == "auto":
        amp = "bf16" if native_bf16(device) else None
    if amp is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


__all__ = ["AMP_CHOICES", "check_amp", "native_bf16", "resolve_amp", "default_amp", "autocast"]
