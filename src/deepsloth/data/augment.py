"""Batched training augmentation on tensors (docs/method.md §1), with no per-image Python.

* `crop_flip` / `random_crop_flip`: zero-pad by `pad`, crop back to H x W at a per-image
  offset, optionally mirror. Implemented as two `torch.gather`s with per-image index
  arithmetic on the padded batch; the flip is folded into the column index, so it costs
  nothing extra. Works on uint8 and float, on any device.
* `cutout`: per image, one `size` x `size` square at a uniformly drawn centre (clipped at the
  border) set to mid-grey (DeVries & Taylor, 2017); a regulariser for longer CNN schedules, off
  unless a recipe asks for it.
* `color_jitter`: per-image brightness, contrast and saturation factors drawn uniformly from
  [1-s, 1+s], applied in that fixed order (torchvision's ColorJitter picks a random order;
  a fixed one keeps the op simple and deterministic), clamping to [0, 1] after each step.

Random numbers come from `generator` (a `torch.Generator`, on CPU or on the batch's device);
with the same seeded generator the output is identical. Offsets drawn on a CPU generator
are moved to the batch's device (a few hundred integers per batch).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import DeepslothError
from .registry import DATASETS, canonical_name

# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise DeepslothError(f"expected an image batch [B,3,H,W], got {tuple(x.shape)}")


def _gen_device(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.device:
    return generator.device if generator is not None else x.device


def _randint(high: int, n: int, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator,
                         device=_gen_device(x, generator)).to(x.device)


def _uniform(lo: float, hi: float, n: int, x: torch.Tensor,
             generator: Optional[torch.Generator]) -> torch.Tensor:
    u = torch.rand((n,), generator=generator, device=_gen_device(x, generator))
    return (lo + (hi - lo) * u).to(device=x.device, dtype=x.dtype)


def crop_flip(x: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor,
              flip: torch.Tensor) -> torch.Tensor:
    """Deterministic core: out[b] = mirror?(zero_pad(x[b], pad)[:, dy:dy+H, dx:dx+W]).

    dy, dx: integer [B] in [0, 2*pad]; flip: bool [B] (mirror after cropping).
    """
    _check_batch(x)
    B, C, H, W = x.shape
    if pad < 0:
        raise DeepslothError(f"pad must be >= 0, got {pad}")
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x
    Wp = W + 2 * pad
    dev = x.device
    dy, dx, flip = dy.to(dev, torch.long), dx.to(dev, torch.long), flip.to(dev, torch.bool)
    ar_h = torch.arange(H, device=dev)
    ar_w = torch.arange(W, device=dev)
    rows = dy[:, None] + ar_h[None, :]                                           # [B, H]
    cols = dx[:, None] + torch.where(flip[:, None], (W - 1) - ar_w[None, :], ar_w[None, :])
    out = torch.gather(xp, 2, rows[:, None, :, None].expand(B, C, H, Wp))       # [B, C, H, Wp]
    return torch.gather(out, 3, cols[:, None, None, :].expand(B, C, H, W))      # [B, C, H, W]


def random_crop_flip(x: torch.Tensor, pad: int, generator: Optional[torch.Generator] = None,
                     flip: bool = True) -> torch.Tensor:
    """Random crop with `pad` px zero padding plus random horizontal flip, per image."""
    _check_batch(x)
    B = x.shape[0]
    dy = _randint(2 * pad + 1, B, x, generator)
    dx = _randint(2 * pad + 1, B, x, generator)
    if flip:
        mirror = _randint(2, B, x, generator).bool()
    else:
        mirror = torch.zeros(B, dtype=torch.bool, device=x.device)
    return crop_flip(x, pad, dy, dx, mirror)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)           # [B, 1, H, W]


def color_jitter(x: torch.Tensor, brightness: float = 0.2, contrast: float = 0.2,
                 saturation: float = 0.2, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-image brightness, contrast, saturation jitter on a float [0, 1] batch."""
    _check_batch(x)
    if not x.is_floating_point():
        raise DeepslothError("color_jitter expects a float batch in [0, 1]")
    B = x.shape[0]
    if brightness:
        f = _uniform(max(0.0, 1 - brightness), 1 + brightness, B, x, generator)
        x = (x * f.view(B, 1, 1, 1)).clamp_(0, 1)
    if contrast:
        f = _uniform(max(0.0, 1 - contrast), 1 + contrast, B, x, generator).view(B, 1, 1, 1)
        mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (f * x + (1 - f) * mean).clamp_(0, 1)
    if saturation:
        f = _uniform(max(0.0, 1 - saturation), 1 + saturation, B, x, generator).view(B, 1, 1, 1)
        x = (f * x + (1 - f) * _grayscale(x)).clamp_(0, 1)
    return x


def cutout(x: torch.Tensor, size: int, generator: Optional[torch.Generator] = None,
           fill: float = 0.5) -> torch.Tensor:
    """Per image, set one `size` x `size` square (centre uniform over the image, clipped at the
    border) to `fill`, on a float [0, 1] batch; a new tensor."""
    _check_batch(x)
    if not x.is_floating_point():
        raise DeepslothError("cutout expects a float batch in [0, 1]")
    if size < 0:
        raise DeepslothError(f"cutout size must be >= 0, got {size}")
    B, _, H, W = x.shape
    if size == 0:
        return x
    top = _randint(H, B, x, generator) - size // 2
    left = _randint(W, B, x, generator) - size // 2
    rows = torch.arange(H, device=x.device)[None, :]
    cols = torch.arange(W, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)              # [B, H]
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)            # [B, W]
    return x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], fill)


def to_float01(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]; float input is returned as `dtype` unchanged."""
    if x.dtype == torch.uint8:
        return x.to(dtype).div_(255.0)
    return x.to(dtype)


def augment_batch(x: torch.Tensor, dataset_name: str,
                  generator: Optional[torch.Generator] = None, cutout_size: int = 0) -> torch.Tensor:
    """The docs/method.md §1 training recipe for `dataset_name`, on a uint8 (or float) batch -> float [0,1].

    CIFAR-10: horizontal flip + random crop with 4 px zero padding.
    Tiny ImageNet: horizontal flip + random crop with 8 px padding + colour jitter 0.2.
    """
    info = DATASETS[canonical_name(dataset_name)]
    x = random_crop_flip(x, info.crop_pad, generator)   # on uint8: 4x less memory traffic
    x = to_float01(x)
    if info.jitter:
        x = color_jitter(x, info.jitter, info.jitter, info.jitter, generator)
    if cutout_size:   # after the rest, so a recipe without it draws the same numbers as before
        x = cutout(x, cutout_size, generator)
    return x
