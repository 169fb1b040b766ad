"""Input-transformation defences: the model classifies a transformed copy of its input.

    t = parse("jpeg:quality=75")          # or JPEG(quality=75)
    defended = Transformed(model, t, seed=0)
    exits = defended(x)                   # x: float [N,C,H,W] in [0, 1]; the model's exit list

Every transform maps float images [N,C,H,W] in [0, 1] to images of the same shape and dtype in
[0, 1]. Each states two properties an adaptive attacker needs (Athalye et al., 2018):

* `randomized`: it draws random numbers, so an adaptive attack averages its gradient over many
  draws (expectation over transformation). Every random number is drawn on the CPU from the
  `generator` passed to `forward` (a CPU `torch.Generator`) and then moved to the input's device,
  so a given generator state gives the same output on every device; with no generator, torch's
  default generator is used.
* `differentiable`: its backward pass is its true gradient. For the others (JPEG, bit-depth
  reduction, median filter) the forward value is exactly the transform and the backward pass is
  the identity: the straight-through estimator (BPDA), `x + (t(x) - x).detach()`, written so that
  the value is bit-for-bit `t(x)`.

Transforms are named by a one-line spec, `name:param=value,...` (`spec()` writes it, `parse`
reads it back): `jpeg:quality=75`, `bitdepth:bits=4`, `median:kernel=3`, `resize-pad:shrink=4`.
"""
from __future__ import annotations

import numbers
import re
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepslothError
from ..validate import check_number

__all__ = ["InputTransform", "JPEG", "BitDepth", "MedianFilter", "ResizePad", "Transformed", "parse",
           "TRANSFORMS", "quantization_table"]


def _straight_through(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` in the forward pass, the identity in the backward pass (BPDA).

    `value + (x - x.detach())` adds an exact zero, so the result equals `value` bit for bit
    (unlike `x + (value - x).detach()`, which can be off by a rounding error)."""
    value = value.detach()
    if torch.is_grad_enabled() and x.requires_grad:
        return value + (x - x.detach())
    return value


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; every other float dtype is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        return str(int(v)) if v.is_integer() else repr(v)
    return str(value)


class InputTransform(nn.Module):
    """Base class of the input transforms (see the module docstring).

    Subclasses set `name`, `params` (the names of their constructor parameters, each stored as
    an attribute of the same name), `randomized` and `differentiable`, and implement
    `transform(x, generator)` on a validated batch. `forward` checks the batch and, for
    non-differentiable transforms, wraps the result in the straight-through estimator.
    Transforms hold no parameters or buffers, so wrapping a model adds nothing to its state.
    """

    name: str = "transform"
    params: Tuple[str, ...] = ()
    randomized: bool = False
    differentiable: bool = True

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        self._check_input(x)
        if x.shape[0] == 0:
            return x.clone()
        out = self.transform(x, generator)
        if not self.differentiable:
            out = _straight_through(x, out)
        return out

    def transform(self, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor) -> None:
        if not torch.is_tensor(x) or x.dim() != 4:
            raise DeepslothError(f"{self.name}: input must be a batch of images [N, C, H, W], got "
                                 f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
        if not x.is_floating_point():
            raise DeepslothError(f"{self.name}: input must hold float images in [0, 1], got {x.dtype}")

    # -- description -------------------------------------------------------------------------
    def describe(self) -> Dict[str, Any]:
        """{"name": ..., every parameter: its value} (JSON-serialisable)."""
        return {"name": self.name, **{p: getattr(self, p) for p in self.params}}

    def spec(self) -> str:
        """The canonical one-line spec, e.g. `jpeg:quality=75`; `parse(t.spec()) == t`."""
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{p}={_format_value(getattr(self, p))}" for p in sorted(self.params))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InputTransform):
            return NotImplemented
        return type(self) is type(other) and self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.spec()))

    def extra_repr(self) -> str:
        return ", ".join(f"{p}={getattr(self, p)!r}" for p in self.params)


# ----------------------------------------------------------------------------------------------
# JPEG
# ----------------------------------------------------------------------------------------------

# The example quantisation tables of the JPEG standard (Annex K), as the IJG library uses them,
# in row-major order.
_LUMINANCE_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)
_CHROMINANCE_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32


def quantization_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """The IJG quantisation table [8, 8] (float64) for `quality` in 1..100: the standard table
    scaled by 5000/q (integer division) for q < 50, else by 200 - 2q, in percent, each entry
    floor((T * scale + 50) / 100) clamped to [1, 255] (baseline JPEG)."""
    q = int(quality)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    base = _CHROMINANCE_TABLE if chroma else _LUMINANCE_TABLE
    entries = [min(max((t * scale + 50) // 100, 1), 255) for t in base]
    return torch.tensor(entries, dtype=torch.float64).reshape(8, 8)


def _dct_matrix() -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix D (float64): coefficients = D @ block @ D.T."""
    k = torch.arange(8, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(8, dtype=torch.float64).unsqueeze(0)
    d = torch.cos((2 * n + 1) * k * torch.pi / 16) * (2.0 / 8) ** 0.5
    d[0] /= 2 ** 0.5
    return d


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


class JPEG(InputTransform):
    """JPEG compression and decompression (baseline, 4:2:0 chroma subsampling, IJG tables),
    computed in torch: batched, on any device.

    The pipeline is that of a baseline JPEG encoder and decoder: pixels to the 8-bit grid;
    RGB to YCbCr with the JFIF full-range matrices (8-bit samples); chroma subsampled 4:2:0 by
    2x2 averaging; level shift by 128; orthonormal 8x8 block DCT-II; quantisation with the
    standard IJG luminance/chrominance tables scaled by `quality` (the IJG quality formula);
    rounding; dequantisation; inverse DCT; chroma upsampled back with the triangle filter of the
    IJG decoder ("fancy" upsampling, which is bilinear interpolation at scale 2); YCbCr to RGB;
    pixels rounded to the 8-bit grid and clamped to [0, 1]. The lossless entropy-coding stage
    does not change any pixel, so it is left out. Single-channel images are coded as luminance
    only. Images whose sides are not multiples of 16 (8 for one channel) are padded by edge
    replication and cropped back.

    The result agrees with Pillow's (libjpeg) encoder and decoder to about one grey level (1/255)
    or less in mean absolute difference: libjpeg's fixed-point DCT and rounding details differ,
    so a coefficient lying on a quantisation boundary may be rounded the other way, which shifts
    its 8x8 block by a fraction of the quantisation step.

    Not differentiable: the backward pass is the identity (BPDA).
    """

    name = "jpeg"
    params = ("quality",)
    randomized = False
    differentiable = False

    def __init__(self, quality: int = 75):
        super().__init__()
        self.quality = int(check_number("quality", quality, low=1, high=100, integer=True))
        # plain attributes, not buffers: a transform adds nothing to a model's state dict
        self._tables = (quantization_table(self.quality).reshape(64),
                        quantization_table(self.quality, chroma=True).reshape(64))
        d = _dct_matrix()
        self._dct = torch.kron(d, d)

    def _code(self, plane: torch.Tensor, table: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
        """Encode and decode one plane [N, H, W] of 8-bit samples (H, W multiples of 8).

        `dct` is the 64 x 64 matrix kron(D, D) acting on row-major flattened 8x8 blocks (the same
        as D @ block @ D.T), `table` the quantisation table flattened to 64 entries."""
        n, h, w = plane.shape
        blocks = (plane - 128.0).reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3).reshape(n, h // 8, w // 8, 64)
        coef = blocks @ dct.T
        coef = _round_half_away(coef / table) * table
        blocks = (coef @ dct).reshape(n, h // 8, w // 8, 8, 8)
        plane = blocks.transpose(2, 3).reshape(n, h, w) + 128.0
        return plane.round().clamp(0.0, 255.0)

    def transform(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        n, c, h, w = x.shape
        if c not in (1, 3):
            raise DeepslothError(f"jpeg: images must have 1 or 3 channels, got {c}")
        dtype = _work_dtype(x)
        with torch.no_grad():
            dct = self._dct.to(x.device, dtype)
            luma_t, chroma_t = (t.to(x.device, dtype) for t in self._tables)
            v = (x.detach().to(dtype) * 255.0).round().clamp(0.0, 255.0)
            m = 16 if c == 3 else 8
            ph, pw = (-h) % m, (-w) % m
            if ph or pw:
                v = F.pad(v, (0, pw, 0, ph), mode="replicate")
            if c == 1:
                out = self._code(v[:, 0], luma_t, dct).unsqueeze(1)
            else:
                r, g, b = v.unbind(1)
                y = (0.299 * r + 0.587 * g + 0.114 * b).round().clamp(0.0, 255.0)
                cb = (-0.168736 * r - 0.331264 * g + 0.5 * b + 128.0).round().clamp(0.0, 255.0)
                cr = (0.5 * r - 0.418688 * g - 0.081312 * b + 128.0).round().clamp(0.0, 255.0)
                chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2).round()          # [N, 2, H/2, W/2]
                y = self._code(y, luma_t, dct)
                hh, hw = chroma.shape[-2:]
                chroma = self._code(chroma.reshape(n * 2, hh, hw), chroma_t, dct).reshape(n, 2, hh, hw)
                chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
                cb, cr = (chroma.round() - 128.0).unbind(1)
                out = torch.stack([y + 1.402 * cr,
                                   y - 0.344136 * cb - 0.714136 * cr,
                                   y + 1.772 * cb], 1)
                out = out.round().clamp(0.0, 255.0)
            out = out[:, :, :h, :w] / 255.0
        return out.to(x.dtype).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# bit depth, median filter
# ----------------------------------------------------------------------------------------------

class BitDepth(InputTransform):
    """Bit-depth reduction (feature squeezing, Xu et al. 2018): every value rounded to one of
    2**bits evenly spaced levels, round(x * (2**bits - 1)) / (2**bits - 1). `bits` = 8 maps the
    8-bit grid to itself. Not differentiable: the backward pass is the identity (BPDA)."""

    name = "bitdepth"
    params = ("bits",)
    randomized = False
    differentiable = False

    def __init__(self, bits: int = 4):
        super().__init__()
        self.bits = int(check_number("bits", bits, low=1, high=8, integer=True))

    def transform(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        levels = float(2 ** self.bits - 1)
        dtype = _work_dtype(x)
        with torch.no_grad():
            out = (x.detach().to(dtype) * levels).round() / levels
        return out.to(x.dtype).clamp(0.0, 1.0)


class MedianFilter(InputTransform):
    """Median smoothing (feature squeezing, Xu et al. 2018): every value replaced by the median of
    its channel over the `kernel` x `kernel` window centred on it, the image padded by reflection
    at the borders. `kernel` odd in 3..9; images need sides larger than kernel // 2. Not
    differentiable: the backward pass is the identity (BPDA)."""

    name = "median"
    params = ("kernel",)
    randomized = False
    differentiable = False

    def __init__(self, kernel: int = 3):
        super().__init__()
        k = int(check_number("kernel", kernel, low=3, high=9, integer=True))
        if k % 2 == 0:
            raise DeepslothError(f"kernel must be odd (3, 5, 7 or 9), got {k}")
        self.kernel = k

    def transform(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.kernel // 2
        if min(h, w) <= p:
            raise DeepslothError(f"median: kernel {self.kernel} needs images larger than {p}x{p}, got {h}x{w}")
        with torch.no_grad():
            padded = F.pad(x.detach(), (p, p, p, p), mode="reflect")
            windows = padded.unfold(2, self.kernel, 1).unfold(3, self.kernel, 1)   # [N, C, H, W, k, k]
            out = windows.reshape(n, c, h, w, self.kernel * self.kernel).median(dim=-1).values
        return out


# ----------------------------------------------------------------------------------------------
# random resize and pad
# ----------------------------------------------------------------------------------------------

class ResizePad(InputTransform):
    """Random resizing and padding (after Xie et al. 2018), shape-preserving.

    For every input, a shrink s is drawn uniformly from 0..`shrink`; the image is resized
    bilinearly (align_corners=False, no antialiasing) to (H - s) x (W - s), which for square
    images is a side drawn uniformly from H - shrink..H, and placed at an offset drawn uniformly
    from the positions that fit inside an H x W canvas of zeros. Randomised (an adaptive attack
    uses expectation over transformation) and differentiable (true gradients).

    `shrink` is an integer >= 1 and at most half the smaller image side (checked per batch).
    Random numbers, in order: the N shrinks, then N (row, column) offset pairs, all from the
    CPU `generator`.
    """

    name = "resize-pad"
    params = ("shrink",)
    randomized = True
    differentiable = True

    def __init__(self, shrink: int = 4):
        super().__init__()
        self.shrink = int(check_number("shrink", shrink, low=1, integer=True))

    def transform(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.shrink > min(h, w) // 2:
            raise DeepslothError(f"resize-pad: shrink must be in 1..{min(h, w) // 2} for {h}x{w} images, "
                                 f"got {self.shrink}")
        shrinks = torch.randint(0, self.shrink + 1, (n,), generator=generator)
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        tops = torch.minimum((u[:, 0] * (shrinks + 1)).floor().long(), shrinks)
        lefts = torch.minimum((u[:, 1] * (shrinks + 1)).floor().long(), shrinks)
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        xs = x.to(dtype)
        out = xs.new_zeros(xs.shape)
        rows_base = torch.arange(h)
        cols_base = torch.arange(w)
        for s in torch.unique(shrinks).tolist():
            sel = (shrinks == s).nonzero().squeeze(1)
            group = xs[sel.to(x.device)]
            if s:
                group = F.interpolate(group, size=(h - s, w - s), mode="bilinear", align_corners=False,
                                      antialias=False)
                group = F.pad(group, (0, s, 0, s))           # image in the top-left corner of the canvas
            # shift each image to its offset: output row y reads canvas row (y - top) mod H, which
            # for y < top lands in the zero rows below the image (top <= s)
            rows = ((rows_base.unsqueeze(0) - tops[sel].unsqueeze(1)) % h).to(x.device)   # [G, H]
            cols = ((cols_base.unsqueeze(0) - lefts[sel].unsqueeze(1)) % w).to(x.device)  # [G, W]
            g = torch.arange(len(sel), device=x.device)
            placed = group[g[:, None, None], :, rows[:, :, None], cols[:, None, :]]       # [G, H, W, C]
            out = out.index_copy(0, sel.to(x.device), placed.permute(0, 3, 1, 2))
        return out.clamp(0.0, 1.0).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# a model behind a transform
# ----------------------------------------------------------------------------------------------

class Transformed(nn.Module):
    """`model` classifying transformed inputs: `forward(x) = model(transform(x, generator))`.

    The generator is this module's own CPU `torch.Generator`, seeded with `seed`; `reset()`
    reseeds it, so an evaluation pass is reproducible: reset, then evaluate the same batches in
    the same order. The wrapped model is `.model`, the transform `.transform`; the model's `meta`
    and `model_dir` attributes are carried over (None where it has none). The parameters are the
    model's own: the wrapper adds none.
    """

    def __init__(self, model: nn.Module, transform: InputTransform, seed: int = 0):
        super().__init__()
        if not isinstance(transform, InputTransform):
            raise DeepslothError(f"transform must be an InputTransform, got {type(transform).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2 ** 63:
            raise DeepslothError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        self.model = model
        self.transform = transform
        self.seed = int(seed)
        self.meta = getattr(model, "meta", None)
        self.model_dir = getattr(model, "model_dir", None)
        self.generator = torch.Generator().manual_seed(self.seed)

    def reset(self) -> "Transformed":
        """Reseed the transform's generator with `seed` (the state right after construction)."""
        self.generator.manual_seed(self.seed)
        return self

    def forward(self, x: torch.Tensor):
        return self.model(self.transform(x, self.generator))

    def extra_repr(self) -> str:
        return f"seed={self.seed}"


# ----------------------------------------------------------------------------------------------
# specs
# ----------------------------------------------------------------------------------------------

TRANSFORMS = {"jpeg": JPEG, "bitdepth": BitDepth, "median": MedianFilter, "resize-pad": ResizePad}

_INT = re.compile(r"^[+-]?\d+$")


def _parse_value(text: str) -> Any:
    if _INT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def parse(text: str) -> InputTransform:
    """The transform a spec names: `name` or `name:param=value[,param=value...]`, e.g. `jpeg`,
    `jpeg:quality=50`, `bitdepth:bits=3`, `median:kernel=3`, `resize-pad:shrink=4`; omitted
    parameters take their defaults. A one-line `DeepslothError` naming what is accepted for an
    unknown name or parameter or a bad value."""
    if not isinstance(text, str):
        raise DeepslothError(f"a transform spec must be a string, got {type(text).__name__}")
    name, _, rest = text.strip().partition(":")
    name = name.strip().lower()
    if name not in TRANSFORMS:
        raise DeepslothError(f"unknown transform {name!r}; choose one of {', '.join(TRANSFORMS)} "
                             f"(e.g. jpeg:quality=75)")
    cls = TRANSFORMS[name]
    accepted = ", ".join(cls.params)
    kwargs: Dict[str, Any] = {}
    for item in (rest.split(",") if rest.strip() else []):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise DeepslothError(f"{name}: expected param=value, got {item.strip()!r}; {name} takes {accepted}")
        if key not in cls.params:
            raise DeepslothError(f"{name} has no parameter {key!r}; it takes {accepted}")
        if key in kwargs:
            raise DeepslothError(f"{name}: parameter {key!r} given twice")
        kwargs[key] = _parse_value(value)
    return cls(**kwargs)
