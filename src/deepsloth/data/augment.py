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

Every random operation is split into a draw (`draw_augment`: the per-image parameters, drawn in
a fixed order) and a deterministic application (`apply_augment`, `crop_flip`, `jitter_with`,
`cutout_at`). `augment_batch` is the two in sequence. The training loader draws the parameters
of a whole epoch at once, batch by batch in the same order, moves them to the device in one copy
and applies each batch's slice there: the same numbers as `augment_batch` batch by batch, without
a host-to-device copy (and wait) per batch.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from ..errors import DeepslothError
from .registry import DATASETS, canonical_name

# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)

AugmentParams = Dict[str, torch.Tensor]   # name -> one value per image ([B]); see draw_augment


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise DeepslothError(f"expected an image batch [B,3,H,W], got {tuple(x.shape)}")


def _draw_device(generator: Optional[torch.Generator], device) -> torch.device:
    """Where numbers are drawn: on the generator's device, else (global RNG) on `device`."""
    return generator.device if generator is not None else torch.device(device)


def _draw_int(high: int, n: int, generator: Optional[torch.Generator], device) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=_draw_device(generator, device))


def _draw_uniform(lo: float, hi: float, n: int, generator: Optional[torch.Generator], device) -> torch.Tensor:
    u = torch.rand((n,), generator=generator, device=_draw_device(generator, device))
    return lo + (hi - lo) * u


def _draw_crop(params: AugmentParams, n: int, pad: int, flip: bool,
               generator: Optional[torch.Generator], device) -> None:
    params["dy"] = _draw_int(2 * pad + 1, n, generator, device)
    params["dx"] = _draw_int(2 * pad + 1, n, generator, device)
    if flip:
        params["flip"] = _draw_int(2, n, generator, device).bool()


def _draw_jitter(params: AugmentParams, n: int, brightness: float, contrast: float, saturation: float,
                 generator: Optional[torch.Generator], device) -> None:
    for key, s in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if s:
            params[key] = _draw_uniform(max(0.0, 1 - s), 1 + s, n, generator, device)


def _draw_cutout(params: AugmentParams, n: int, size: int, height: int, width: int,
                 generator: Optional[torch.Generator], device) -> None:
    if size:
        params["cut_top"] = _draw_int(height, n, generator, device) - size // 2
        params["cut_left"] = _draw_int(width, n, generator, device) - size // 2


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
    params: AugmentParams = {}
    _draw_crop(params, x.shape[0], pad, flip, generator, x.device)
    return _apply_crop(x, pad, params)


def _apply_crop(x: torch.Tensor, pad: int, params: AugmentParams) -> torch.Tensor:
    mirror = params.get("flip")
    if mirror is None:
        mirror = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    return crop_flip(x, pad, params["dy"], params["dx"], mirror)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)           # [B, 1, H, W]


def _factor(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return f.to(device=x.device, dtype=x.dtype).view(x.shape[0], 1, 1, 1)


def jitter_with(x: torch.Tensor, brightness: Optional[torch.Tensor] = None,
                contrast: Optional[torch.Tensor] = None,
                saturation: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Deterministic core of `color_jitter`: per-image factors [B] (None: that step is skipped),
    applied to a float [0, 1] batch in the order brightness, contrast, saturation."""
    _check_batch(x)
    if not x.is_floating_point():
        raise DeepslothError("color_jitter expects a float batch in [0, 1]")
    if brightness is not None:
        x = (x * _factor(brightness, x)).clamp_(0, 1)
    if contrast is not None:
        f = _factor(contrast, x)
        mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (f * x + (1 - f) * mean).clamp_(0, 1)
    if saturation is not None:
        f = _factor(saturation, x)
        x = (f * x + (1 - f) * _grayscale(x)).clamp_(0, 1)
    return x


def color_jitter(x: torch.Tensor, brightness: float = 0.2, contrast: float = 0.2,
                 saturation: float = 0.2, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-image brightness, contrast, saturation jitter on a float [0, 1] batch."""
    _check_batch(x)
    if not x.is_floating_point():
        raise DeepslothError("color_jitter expects a float batch in [0, 1]")
    params: AugmentParams = {}
    _draw_jitter(params, x.shape[0], brightness, contrast, saturation, generator, x.device)
    return jitter_with(x, params.get("brightness"), params.get("contrast"), params.get("saturation"))


def cutout_at(x: torch.Tensor, size: int, top: torch.Tensor, left: torch.Tensor,
              fill: float = 0.5) -> torch.Tensor:
    """Deterministic core of `cutout`: set rows [top, top+size) x columns [left, left+size) of
    each image (clipped at the border; top, left: integer [B]) to `fill`; a new tensor."""
    _check_batch(x)
    if not x.is_floating_point():
        raise DeepslothError("cutout expects a float batch in [0, 1]")
    if size < 0:
        raise DeepslothError(f"cutout size must be >= 0, got {size}")
    if size == 0:
        return x
    _, _, H, W = x.shape
    top, left = top.to(x.device, torch.long), left.to(x.device, torch.long)
    rows = torch.arange(H, device=x.device)[None, :]
    cols = torch.arange(W, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)              # [B, H]
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)            # [B, W]
    return x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], fill)


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
    params: AugmentParams = {}
    _draw_cutout(params, B, size, H, W, generator, x.device)
    return cutout_at(x, size, params["cut_top"], params["cut_left"], fill)


def to_float01(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]; float input is returned as `dtype` unchanged."""
    if x.dtype == torch.uint8:
        return x.to(dtype).div_(255.0)
    return x.to(dtype)


def draw_augment(n: int, dataset_name: str, image_size: Sequence[int],
                 generator: Optional[torch.Generator] = None, cutout_size: int = 0,
                 device="cpu") -> AugmentParams:
    """The random parameters of `augment_batch` for a batch of `n` images of `image_size` (H, W):
    crop offsets `dy`, `dx` and `flip`; for Tiny ImageNet also the jitter factors `brightness`,
    `contrast` and `saturation`; with cutout its square's `cut_top`, `cut_left`. Each is a [n]
    tensor on the generator's device (`device` when `generator` is None), drawn in that order."""
    info = DATASETS[canonical_name(dataset_name)]
    if cutout_size < 0:
        raise DeepslothError(f"cutout size must be >= 0, got {cutout_size}")
    height, width = int(image_size[0]), int(image_size[1])
    params: AugmentParams = {}
    _draw_crop(params, n, info.crop_pad, True, generator, device)
    if info.jitter:
        _draw_jitter(params, n, info.jitter, info.jitter, info.jitter, generator, device)
    # cutout is drawn after the rest, so a recipe without it draws the same numbers as before
    _draw_cutout(params, n, cutout_size, height, width, generator, device)
    return params


def apply_augment(x: torch.Tensor, dataset_name: str, params: AugmentParams,
                  cutout_size: int = 0) -> torch.Tensor:
    """`augment_batch` with the parameters given (`draw_augment`): uint8 (or float) -> float [0, 1]."""
    info = DATASETS[canonical_name(dataset_name)]
    x = _apply_crop(x, info.crop_pad, params)   # on uint8: 4x less memory traffic
    x = to_float01(x)
    if info.jitter:
        x = jitter_with(x, params.get("brightness"), params.get("contrast"), params.get("saturation"))
    if cutout_size:
        x = cutout_at(x, cutout_size, params["cut_top"], params["cut_left"])
    return x


def augment_batch(x: torch.Tensor, dataset_name: str,
                  generator: Optional[torch.Generator] = None, cutout_size: int = 0) -> torch.Tensor:
    """The docs/method.md §1 training recipe for `dataset_name`, on a uint8 (or float) batch -> float [0,1].

    CIFAR-10: horizontal flip + random crop with 4 px zero padding.
    Tiny ImageNet: horizontal flip + random crop with 8 px padding + colour jitter 0.2.
    """
    _check_batch(x)
    params = draw_augment(x.shape[0], dataset_name, x.shape[-2:], generator, cutout_size, device=x.device)
    return apply_augment(x, dataset_name, params, cutout_size)
