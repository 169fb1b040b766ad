"""What every attack shares: the model in eval mode with frozen parameters, the device, the
seed, and the input-gradient primitive.

    atk = SomeAttack(model, ..., seed=0)
    out = atk(x, y)          # x: float [N,3,H,W] in [0, 1] (or uint8), y: int64 [N] or None

Calling an attack puts the model in eval mode and sets `requires_grad_(False)` on every
parameter for the duration of the call, then restores both (so it is safe inside a
training loop). Gradients are taken with `torch.autograd.grad` with respect to the input
only. Each call starts a fresh CPU `torch.Generator` seeded with `seed`, and random draws are
made on the CPU then moved, so a given seed gives the same random starts on every device and
the same call twice gives the same output.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from ..data.augment import to_float01  # noqa: F401  (re-exported)
from ..precision import autocast
from ..exits.forward import as_exit_list
from .objectives import Objective, exits_needed


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_seed(seed) -> int:
    """A seed torch generators accept: an integer in [0, 2**63)."""
    from ..errors import DeepslothError
    import numbers
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2 ** 63:
        raise DeepslothError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def derive_seed(seed: int, *keys: Any) -> int:
    """A deterministic 63-bit seed for a sub-task (a batch, a class) of a seeded run."""
    text = repr((int(seed),) + tuple(keys)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients inside the block; both restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def apply_universal(x: torch.Tensor, delta: torch.Tensor,
                    labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """clamp(x + delta, 0, 1) for a universal delta [3,H,W], or with a class-universal
    deltas [C,3,H,W] each input gets the delta of its label."""
    x = to_float01(x)
    delta = delta.to(x.device, x.dtype)
    if delta.dim() == x.dim():
        if labels is None:
            raise ValueError("class-universal perturbations need the labels of the inputs")
        delta = delta[labels.to(x.device)]
    if delta.shape[-3:] != x.shape[-3:]:
        raise ValueError(f"perturbation of shape {tuple(delta.shape)} does not fit inputs "
                         f"{tuple(x.shape)}")
    return (x + delta).clamp_(0.0, 1.0)


class Attack:
    """Base class: subclasses implement `forward(x, y, generator)` on float inputs on `device`."""

    name = "attack"

    def __init__(self, model: nn.Module, seed: int = 0, device: Optional[torch.device | str] = None):
        self.model = model
        self.seed = check_seed(seed)
        self.device = torch.device(device) if device is not None else model_device(model)
        self.normalization: Optional[tuple] = None   # (mean, std) the model expects, if any
        self.amp: Optional[str] = None   # "bf16": the model's forwards under bf16 autocast (deepsloth.precision)
        # a folder where the attack keeps what a killed run resumes from (class-universal DeepSloth: its finished
        # classes; UAP: the state after its last pass), set by whoever writes the result to disk; None: nothing kept
        self.resume_dir: Optional[Path] = None

    def set_normalization_used(self, mean, std) -> "Attack":
        """The model expects (x - mean) / std (per channel); the attack keeps working in [0, 1]
        pixel space (eps is measured there) and normalises only what it feeds the model."""
        m = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if not (torch.isfinite(m).all() and torch.isfinite(s).all()):
            raise ValueError("normalisation mean and std must be finite numbers")
        if bool((s <= 0).any()):
            raise ValueError("normalisation std must be > 0")
        self.normalization = (m, s)
        return self

    def generate(self, x, y=None, **kwargs):
        """ART-style entry point: numpy (or tensor) inputs in [0, 1], same type out."""
        import numpy as np
        as_numpy = isinstance(x, np.ndarray)
        xt = torch.from_numpy(x) if as_numpy else x
        yt = None if y is None else (torch.from_numpy(np.asarray(y)) if not torch.is_tensor(y) else y)
        if yt is not None and yt.dim() == 2:   # one-hot labels, as ART passes them
            yt = yt.argmax(dim=1)
        out = self(xt.float(), None if yt is None else yt.long(), **kwargs)
        return out.numpy() if as_numpy else out

    # -- public ------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                 seed: Optional[int] = None) -> torch.Tensor:
        self.check_inputs(x, y)
        out_device = x.device
        generator = torch.Generator().manual_seed(self.seed if seed is None else check_seed(seed))
        with frozen(self.model), torch.enable_grad():
            out = self.forward(x, None if y is None else y.to(self.device), generator)
        return out.detach().to(out_device)

    def expected_input(self) -> Tuple[Optional[int], Optional[int], Optional[int]]:
        """(channels, image size, classes) the model takes, where known: its metadata (`create_model`
        attaches it) and its first convolution; None where unknown."""
        meta = getattr(self.model, "meta", None) or {}
        conv = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        size, classes = meta.get("input_size"), meta.get("num_classes")
        return (conv.in_channels if conv is not None else None, int(size) if size else None,
                int(classes) if classes else None)

    def check_inputs(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> None:
        """A ValueError naming the argument for what the attack cannot attack: not a non-empty [N,C,H,W]
        batch of uint8 or [0, 1] float images the model takes, or labels that are not N class indices."""
        if not torch.is_tensor(x) or x.dim() != 4:
            raise ValueError(f"x must be a batch of images [N, C, H, W], got "
                             f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch")
        if x.dtype != torch.uint8:
            if not x.is_floating_point():
                raise ValueError(f"x must hold uint8 or float images, got {x.dtype}")
            if not bool(torch.isfinite(x).all()):
                raise ValueError("x holds NaN or infinite values")
            lo, hi = float(x.min()), float(x.max())
            if lo < -1e-6 or hi > 1 + 1e-6:
                raise ValueError(f"x must hold pixels in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; pass uint8 "
                                 f"images or divide by 255")
        channels, size, classes = self.expected_input()
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"x has {x.shape[1]} channels, the model takes {channels}")
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            raise ValueError(f"x holds {x.shape[-2]}x{x.shape[-1]} images, the model takes {size}x{size}")
        if y is None:
            return
        if not torch.is_tensor(y) or y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must hold one label per input ({x.shape[0]}), got "
                             f"{tuple(y.shape) if torch.is_tensor(y) else type(y).__name__}")
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
            raise ValueError(f"y must hold integer class indices, got {y.dtype}")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or (classes is not None and hi >= classes):
            raise ValueError(f"y holds labels outside 0..{(classes or hi + 1) - 1}: [{lo}, {hi}]")

    def config(self) -> Dict[str, Any]:
        """Every hyper-parameter of the attack (JSON-serialisable)."""
        return {"attack": self.name, **self.spec_params(), "seed": self.seed}

    def spec_params(self) -> Dict[str, Any]:
        """The hyper-parameters an attack spec records (`deepsloth.attacks.params`); they rebuild the
        attack exactly."""
        return {}

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor],
                generator: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "attack")
        return f"{type(self).__name__}({args})"

    # -- helpers for subclasses ------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as float32 [0, 1] on the attack's device."""
        return to_float01(x.to(self.device, non_blocking=True))

    def logits(self, x: torch.Tensor, need="all") -> List[torch.Tensor]:
        """The model's exit logits; with `need` "final" or an exit index, only that part of the
        network runs when the model offers `forward_exits` (see objectives.exits_needed).
        With `amp` set the model runs under bf16 autocast and the logits come back as fp32."""
        if self.normalization is not None:
            m, s = self.normalization
            x = (x - m.to(x.device)) / s.to(x.device)
        partial = getattr(self.model, "forward_exits", None)
        with autocast(x.device, self.amp):
            out = as_exit_list(partial(x, need) if need != "all" and partial is not None else self.model(x))
        return out if self.amp is None else [o.float() for o in out]

    def input_grad(self, x: torch.Tensor, objective: Objective,
                   labels: Optional[torch.Tensor], reduction: str = "sum") -> torch.Tensor:
        """d objective(model(x), labels).sum() (or .mean()) / d x, with x a fresh leaf (no
        parameter grads); only the exits the objective reads are computed."""
        x = x.detach().requires_grad_(True)
        loss = objective(self.logits(x, exits_needed(objective)), labels)
        if not loss.requires_grad:        # an objective that ignores the input: no direction
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(loss.mean() if reduction == "mean" else loss.sum(), x)
        return grad

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Final-exit predictions (no gradients; the internal classifiers are not run)."""
        with torch.no_grad():
            return self.logits(x, "final")[-1].argmax(dim=-1)


__all__ = ["Attack", "frozen", "model_device", "to_float01", "derive_seed", "apply_universal"]
