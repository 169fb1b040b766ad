"""Input-transformation defences (deepsloth.defences.transforms): shapes and ranges, determinism of
the random transform, straight-through (BPDA) gradients, JPEG against Pillow's libjpeg codec,
specs and their errors, and a model wrapped behind a transform."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from deepsloth.defences.transforms import (JPEG, TRANSFORMS, BitDepth, InputTransform, MedianFilter, ResizePad,
                                           Transformed, parse, quantization_table)
from deepsloth.errors import DeepslothError


def all_transforms():
    return [JPEG(75), JPEG(10), BitDepth(1), MedianFilter(5), ResizePad(4)]


def grid(x: torch.Tensor) -> torch.Tensor:
    """Float images on the 8-bit grid."""
    return (x.clamp(0, 1) * 255).round() / 255


def synthetic(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth colour gradients plus noise, on the 8-bit grid."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    phase = torch.rand(n, 3, 1, 1, generator=g)
    base = 0.5 + 0.4 * torch.sin(2.0 * (yy + phase) + 3.0 * (xx * phase))
    return grid(base + 0.04 * torch.randn(n, 3, h, w, generator=g))


def cifar(n: int) -> torch.Tensor:
    from deepsloth.data.bundled import load_bundled
    return load_bundled("test").images[:n].float() / 255


def pillow_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Pillow (libjpeg) JPEG encode + decode, baseline, 4:2:0."""
    from PIL import Image
    out = []
    for img in x:
        a = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=quality, subsampling=2)
        buf.seek(0)
        back = np.array(Image.open(buf).convert("RGB"))
        out.append(torch.from_numpy(back).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------
# shapes, ranges, dtypes
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [32, 64])
def test_every_transform_keeps_shape_dtype_and_range(size):
    rand = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    x = torch.cat([rand, torch.zeros(1, 3, size, size), torch.ones(1, 3, size, size)])
    for t in all_transforms():
        out = t(x, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == x.dtype, t.spec()
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, t.spec()
        assert torch.equal(out[2], x[2]), t.spec()     # black stays black under every transform
        if not t.randomized:
            assert torch.equal(out[3], x[3]), t.spec()   # and white stays white


def test_transforms_keep_float64_and_odd_shapes():
    x = torch.rand(2, 3, 21, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for t in all_transforms():
        out = t(x, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == torch.float64 and 0 <= out.min() and out.max() <= 1
    gray = torch.rand(2, 1, 20, 12, generator=torch.Generator().manual_seed(2))
    assert JPEG(50)(gray).shape == gray.shape
    assert JPEG(50)(gray[:0]).shape == (0, 1, 20, 12)


def test_flags():
    assert (JPEG.randomized, JPEG.differentiable) == (False, False)
    assert (BitDepth.randomized, BitDepth.differentiable) == (False, False)
    assert (MedianFilter.randomized, MedianFilter.differentiable) == (False, False)
    assert (ResizePad.randomized, ResizePad.differentiable) == (True, True)
    for t in all_transforms():   # no parameters or buffers: wrapping a model adds no state
        assert list(t.parameters()) == [] and list(t.buffers()) == []


# ------------------------------------------------------------------------------------------------
# ResizePad randomness
# ------------------------------------------------------------------------------------------------

def test_resize_pad_is_deterministic_per_seed_and_varies_across_seeds():
    x = synthetic(16, 32, 32)
    t = ResizePad(4)
    a = t(x, torch.Generator().manual_seed(5))
    b = t(x, torch.Generator().manual_seed(5))
    c = t(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # one generator, two calls: fresh draws each time
    g = torch.Generator().manual_seed(5)
    assert not torch.equal(t(x, g), t(x, g))


def test_resize_pad_draws_sizes_and_offsets_in_range():
    x = torch.ones(200, 3, 32, 32)
    out = ResizePad(4)(x, torch.Generator().manual_seed(0))
    # a resized all-ones image is an all-ones square of side r in a zero canvas
    rows = (out[:, 0].sum(dim=2) > 0).sum(dim=1)
    cols = (out[:, 0].sum(dim=1) > 0).sum(dim=1)
    assert torch.equal(rows, cols)
    assert set(rows.tolist()) == {28, 29, 30, 31, 32}     # every size drawn in 200 tries
    assert torch.equal(out[:, 0].sum(dim=(1, 2)), (rows * cols).float())
    tops = (out[:, 0].sum(dim=2) > 0).float().argmax(dim=1)
    assert (tops + rows <= 32).all() and len(set(tops.tolist())) == 5


def test_resize_pad_with_zero_shrink_drawn_is_identity():
    x = synthetic(64, 32, 32)
    out = ResizePad(1)(x, torch.Generator().manual_seed(0))
    same = [torch.equal(o, i) for o, i in zip(out, x)]
    assert any(same) and not all(same)


def test_resize_pad_rejects_a_shrink_too_large_for_the_images():
    with pytest.raises(DeepslothError) as e:
        ResizePad(17)(torch.rand(1, 3, 32, 32))
    assert "\n" not in str(e.value) and "shrink" in str(e.value) and "16" in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_same_outputs_on_cpu_and_gpu():
    x = synthetic(8, 32, 32)
    for t in all_transforms():
        a = t(x, torch.Generator().manual_seed(3))
        b = t(x.cuda(), torch.Generator().manual_seed(3)).cpu()
        tol = 1.5 / 255 if isinstance(t, JPEG) else 1e-5   # JPEG: float rounding may flip a quantisation step
        assert (a - b).abs().mean() < tol, t.spec()


# ------------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [JPEG(50), BitDepth(3), MedianFilter(3)], ids=lambda t: t.spec())
def test_bpda_forward_is_the_transform_and_backward_the_identity(t):
    x = synthetic(2, 32, 32).requires_grad_(True)
    w = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = t(x)
    with torch.no_grad():
        plain = t(x)
    assert torch.equal(out.detach(), plain)                  # the forward value is exactly t(x)
    assert not torch.equal(plain, x.detach())                # and the transform did something
    loss = (w * out.square()).sum()
    (gx,) = torch.autograd.grad(loss, x)
    ref = out.detach().clone().requires_grad_(True)            # gradient of the loss at the output
    (gref,) = torch.autograd.grad((w * ref.square()).sum(), ref)
    assert torch.isfinite(gx).all()
    assert torch.equal(gx, gref)


def test_resize_pad_has_real_gradients():
    x = synthetic(4, 32, 32).requires_grad_(True)
    w = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = ResizePad(4)(x, torch.Generator().manual_seed(1))
    (gx,) = torch.autograd.grad((w * out).sum(), x)
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0
    assert not torch.equal(gx, w)   # not the straight-through identity (some inputs are resized)


# ------------------------------------------------------------------------------------------------
# JPEG
# ------------------------------------------------------------------------------------------------

# Mean |ours - Pillow| over each test set, measured in grey levels (1/255): synthetic images
# 0.2-1.0 over qualities 10-100 (single images up to 2.3 at quality 10), the bundled CIFAR-10
# images 0.1-1.2 (single images up to 4.6 at quality 10). The differences come from libjpeg's
# fixed-point DCT and rounding details: where a coefficient sits near a quantisation boundary the
# two codecs round it differently, which moves a whole 8x8 block by up to step/8. The bundled
# CIFAR-10 images are themselves JPEGs, and re-compressing them at quality 50 (tables twice those
# they were made with) puts many coefficients on exact ties: about 2.2 there, so that quality is
# left out of the CIFAR check.
PILLOW_MEAN_TOL = 1.5 / 255


@pytest.mark.parametrize("quality", [10, 30, 50, 75, 90, 100])
def test_jpeg_matches_pillow_on_synthetic_images(quality):
    x32, x_odd = synthetic(4, 32, 32), synthetic(2, 40, 24, seed=1)      # 40x24: padded to 48x32
    diff = torch.cat([(JPEG(quality)(x) - pillow_jpeg(x, quality)).abs().flatten() for x in (x32, x_odd)])
    assert diff.mean() < PILLOW_MEAN_TOL, (quality, float(diff.mean()) * 255)


@pytest.mark.parametrize("quality", [10, 30, 75, 90])
def test_jpeg_matches_pillow_on_cifar_images(quality):
    x = cifar(8)
    diff = (JPEG(quality)(x) - pillow_jpeg(x, quality)).abs()
    assert diff.mean() < PILLOW_MEAN_TOL, (quality, float(diff.mean()) * 255)


def test_the_pillow_comparison_tells_qualities_apart():
    x = synthetic(3, 32, 32)
    assert (JPEG(75)(x) - pillow_jpeg(x, 50)).abs().mean() > 2 * PILLOW_MEAN_TOL
    assert (JPEG(90)(x) - pillow_jpeg(x, 75)).abs().mean() > 2 * PILLOW_MEAN_TOL


def test_jpeg_quality_100_is_near_identity_and_10_is_far():
    x = cifar(16)
    assert (JPEG(100)(x) - x).abs().mean() < 1.5 / 255
    assert (JPEG(10)(x) - x).abs().mean() > 8 / 255
    out = JPEG(30)(x)
    assert torch.equal((out * 255).round() / 255, out)      # on the 8-bit grid


def test_quantization_tables_follow_the_ijg_formula():
    assert quantization_table(50)[0, 0] == 16 and quantization_table(50, chroma=True)[7, 7] == 99
    assert (quantization_table(100) == 1).all()
    assert quantization_table(75)[0].tolist() == [8, 6, 5, 8, 12, 20, 26, 31]
    assert quantization_table(10)[0, 0] == 80 and quantization_table(1).max() == 255
    assert quantization_table(30)[0, 0] == 27     # scale 5000 // 30 = 166: (16 * 166 + 50) // 100


# ------------------------------------------------------------------------------------------------
# bit depth, median
# ------------------------------------------------------------------------------------------------

def test_bitdepth_8_keeps_the_8_bit_grid_and_1_gives_two_levels():
    x = (torch.arange(256, dtype=torch.float32) / 255).reshape(1, 1, 16, 16).repeat(1, 3, 1, 1)
    assert torch.equal(BitDepth(8)(x), x)
    assert set(BitDepth(1)(x).unique().tolist()) == {0.0, 1.0}
    assert len(BitDepth(3)(x).unique()) == 8
    assert torch.equal(BitDepth(2)(torch.tensor([0.0, 0.16, 0.17, 0.5, 0.84, 1.0]).reshape(1, 1, 2, 3)),
                       torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]).reshape(1, 1, 2, 3))


@pytest.mark.parametrize("kernel", [3, 5, 9])
def test_median_keeps_constants_and_removes_salt(kernel):
    const = torch.full((2, 3, 32, 32), 0.4)
    assert torch.equal(MedianFilter(kernel)(const), const)
    salty = const.clone()
    salty[0, 1, 10, 20] = 1.0
    salty[1, 2, 0, 0] = 0.0           # in the corner: reflect padding
    assert torch.equal(MedianFilter(kernel)(salty), const)


def test_median_of_a_known_window():
    x = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5) / 24
    out = MedianFilter(3)(x)
    assert torch.equal(out[0, 0, 1:4, 1:4], x[0, 0, 1:4, 1:4])     # a linear ramp is its own median
    # corner (0, 0) with reflect padding: window values 6,5,6 / 1,0,1 / 6,5,6 -> median 5
    assert out[0, 0, 0, 0] == x[0, 0, 1, 0]


# ------------------------------------------------------------------------------------------------
# specs and errors
# ------------------------------------------------------------------------------------------------

def test_spec_round_trips_for_every_transform():
    assert set(TRANSFORMS) == {"jpeg", "bitdepth", "median", "resize-pad"}
    for t in all_transforms() + [cls() for cls in TRANSFORMS.values()]:
        again = parse(t.spec())
        assert again == t and type(again) is type(t) and again.describe() == t.describe()
        assert json.loads(json.dumps(t.describe())) == t.describe()
        assert t.describe()["name"] == t.name and t.spec().startswith(t.name)
    assert JPEG(75).spec() == "jpeg:quality=75"
    assert parse("jpeg") == JPEG(75) and parse("JPEG: quality = 50") == JPEG(50)
    assert parse("bitdepth:bits=3") == BitDepth(3) and parse("median:kernel=3") == MedianFilter(3)
    assert parse("resize-pad:shrink=4") == ResizePad(4) and parse("resize-pad").describe() == \
        {"name": "resize-pad", "shrink": 4}
    assert JPEG(50.0).quality == 50 and isinstance(JPEG(50.0).quality, int)
    assert parse("jpeg:quality=50.0").spec() == "jpeg:quality=50"
    assert JPEG(50) != JPEG(51) and JPEG(50) != BitDepth(4)


@pytest.mark.parametrize("make, word", [
    (lambda: JPEG(0), "quality"), (lambda: JPEG(101), "quality"), (lambda: JPEG(7.5), "quality"),
    (lambda: JPEG("high"), "quality"), (lambda: BitDepth(0), "bits"), (lambda: BitDepth(9), "bits"),
    (lambda: MedianFilter(4), "kernel"), (lambda: MedianFilter(11), "kernel"), (lambda: MedianFilter(1), "kernel"),
    (lambda: ResizePad(0), "shrink"), (lambda: parse("blur"), "jpeg, bitdepth, median, resize-pad"),
    (lambda: parse("jpeg:q=5"), "quality"), (lambda: parse("jpeg:quality=abc"), "quality"),
    (lambda: parse("median:kernel=2"), "kernel"), (lambda: parse("bitdepth:bits"), "bits"),
    (lambda: parse("resize-pad:shrink=1,shrink=2"), "shrink"), (lambda: JPEG(True), "quality"),
])
def test_bad_parameters_give_one_line_errors_naming_them(make, word):
    with pytest.raises(DeepslothError) as e:
        make()
    assert isinstance(e.value, ValueError)
    assert "\n" not in str(e.value) and word in str(e.value)


def test_bad_inputs_give_one_line_errors():
    for bad in (torch.rand(3, 32, 32), torch.zeros(1, 3, 32, 32, dtype=torch.uint8)):
        with pytest.raises(DeepslothError) as e:
            JPEG(75)(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(DeepslothError, match="channels"):
        JPEG(75)(torch.rand(1, 4, 16, 16))


# ------------------------------------------------------------------------------------------------
# a model behind a transform
# ------------------------------------------------------------------------------------------------

class TwoExits(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3 * 32 * 32, 10)
        self.b = nn.Linear(10, 10)
        self.meta = {"input_size": 32, "num_classes": 10}

    def forward(self, x):
        h = self.a(x.flatten(1))
        return [h, self.b(h)]


def test_transformed_returns_the_exit_list_and_adds_no_parameters():
    torch.manual_seed(0)
    model = TwoExits()
    wrapped = Transformed(model, JPEG(50))
    x = synthetic(4, 32, 32)
    out = wrapped(x)
    assert isinstance(out, list) and len(out) == 2 and out[0].shape == (4, 10)
    ref = model(JPEG(50)(x))
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in model.parameters()]
    assert wrapped.meta is model.meta and wrapped.model_dir is None
    assert wrapped.model is model and wrapped.transform == JPEG(50)
    assert len(wrapped.state_dict()) == len(model.state_dict())


def test_transformed_reset_reproduces_a_random_transform():
    torch.manual_seed(0)
    wrapped = Transformed(TwoExits(), ResizePad(4), seed=3)
    x = synthetic(8, 32, 32)
    first = [wrapped(x[:4]), wrapped(x[4:])]
    again = wrapped(x[:4])
    assert not torch.equal(again[0], first[0][0])     # the generator moves on
    wrapped.reset()
    second = [wrapped(x[:4]), wrapped(x[4:])]
    for a, b in zip(first, second):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    other = Transformed(wrapped.model, ResizePad(4), seed=4)
    assert not torch.equal(other(x[:4])[0], first[0][0])
    with pytest.raises(DeepslothError, match="seed"):
        Transformed(wrapped.model, ResizePad(4), seed=-1)


def test_transforms_are_input_transforms():
    assert all(issubclass(cls, InputTransform) for cls in TRANSFORMS.values())
