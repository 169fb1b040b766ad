"""The training data path: the epoch's augmentation drawn at once and applied on the device.

The loader draws every batch's crop offsets, flips, jitter factors and cutout squares when an
epoch starts (on a seeded CPU generator, batch by batch in the order `augment_batch` draws
them), moves them to the training device in one copy and augments each batch there. On CUDA
that keeps the host from waiting for each batch's parameters; on the CPU, where these tests run,
it is the same code on the CPU device. These tests check that its batches are exactly those of
augmenting batch by batch, that the random numbers come in the documented order, that training
through it is bit-identical to training batch by batch and resumes bit-identically, and that the
speed options (channels-last, torch.compile) reach a run without changing what it trains.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepsloth.train.loop as loop
from deepsloth.data import Dataset, TensorLoader, augment_batch
from deepsloth.data.augment import apply_augment, draw_augment
from deepsloth.data.loader import epoch_seed
from deepsloth.models import create_model
from deepsloth.train.recipes import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(name: str, n: int = 25, size: int = 12, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)   # never 0: padding shows
    return Dataset(name, "train", images, torch.arange(n) % 3, ["a", "b", "c"], "toy")


def _per_batch(ds: Dataset, *, batch_size: int, seed: int, epoch: int, cutout: int = 0, drop_last: bool = False,
               rank: int = 0, world_size: int = 1):
    """The batches of augmenting one batch at a time with `augment_batch` (the loader's generators)."""
    g_order = torch.Generator().manual_seed(epoch_seed(seed, epoch, 0))
    g_aug = torch.Generator().manual_seed(epoch_seed(seed, epoch, 1 + rank))
    idx = torch.randperm(len(ds), generator=g_order)
    if world_size > 1:
        idx = idx[rank::world_size][: len(ds) // world_size]
    stop = len(idx) - len(idx) % batch_size if drop_last else len(idx)
    out = []
    for start in range(0, stop, batch_size):
        sel = idx[start:start + batch_size]
        out.append((augment_batch(ds.images[sel], ds.name, g_aug, cutout_size=cutout), ds.labels[sel]))
    return out


@pytest.mark.parametrize("name, cutout, drop_last, rank, world_size", [
    ("cifar10", 0, False, 0, 1),
    ("cifar10", 5, True, 0, 1),
    ("cifar10", 5, False, 1, 2),
    ("tinyimagenet", 0, False, 0, 1),   # crop with 8 px padding plus colour jitter
    ("tinyimagenet", 4, True, 2, 3),
])
def test_epoch_plan_gives_exactly_the_per_batch_batches(name, cutout, drop_last, rank, world_size):
    ds = _data(name)
    loader = TensorLoader(ds, batch_size=4, augment=True, cutout=cutout, drop_last=drop_last, seed=11,
                          channels_last=True, rank=rank, world_size=world_size)
    for epoch in (0, 3):
        loader.set_epoch(epoch)
        got = list(loader)
        want = _per_batch(ds, batch_size=4, seed=11, epoch=epoch, cutout=cutout, drop_last=drop_last, rank=rank,
                          world_size=world_size)
        assert len(got) == len(want) == len(loader) and len(got) >= 2
        for (x, y), (x_ref, y_ref) in zip(got, want):
            assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
        if not drop_last and loader.num_items % 4:
            assert len(got[-1][1]) == loader.num_items % 4   # the short last batch draws for its size only


def test_draws_come_in_the_documented_order():
    """An independent re-implementation: per batch, crop rows, crop columns, flips, then the cutout
    square's top and left, each drawn with `torch.randint` from the epoch's augmentation generator,
    applied image by image with slicing."""
    ds, bs, seed, size, pad = _data("cifar10", n=10, size=12), 4, 3, 5, 4
    loader = TensorLoader(ds, batch_size=bs, augment=True, cutout=size, seed=seed)
    g_order = torch.Generator().manual_seed(epoch_seed(seed, 0, 0))
    g = torch.Generator().manual_seed(epoch_seed(seed, 0, 1))
    idx = torch.randperm(len(ds), generator=g_order)
    H = W = 12
    for b, (x, y) in enumerate(loader):
        sel = idx[b * bs:(b + 1) * bs]
        n = len(sel)
        dy, dx = torch.randint(0, 2 * pad + 1, (n,), generator=g), torch.randint(0, 2 * pad + 1, (n,), generator=g)
        flip = torch.randint(0, 2, (n,), generator=g).bool()
        top = torch.randint(0, H, (n,), generator=g) - size // 2
        left = torch.randint(0, W, (n,), generator=g) - size // 2
        for i in range(n):
            img = F.pad(ds.images[sel[i]], (pad,) * 4)[:, dy[i]:dy[i] + H, dx[i]:dx[i] + W]
            img = (img.flip(-1) if flip[i] else img).float() / 255
            img[:, max(0, top[i]):max(0, top[i] + size), max(0, left[i]):max(0, left[i] + size)] = 0.5
            assert torch.equal(x[i], img), (b, i)
        assert torch.equal(y, ds.labels[sel])
    assert b == 2


def test_draw_then_apply_is_augment_batch_on_any_batch():
    x = _data("tinyimagenet", n=6, size=16).images
    params = draw_augment(6, "tinyimagenet", (16, 16), torch.Generator().manual_seed(9), cutout_size=6)
    assert sorted(params) == sorted(["dy", "dx", "flip", "brightness", "contrast", "saturation", "cut_top", "cut_left"])
    assert all(v.shape == (6,) for v in params.values())
    assert float(params["brightness"].min()) >= 0.8 and float(params["brightness"].max()) <= 1.2
    assert torch.equal(apply_augment(x, "tinyimagenet", params, cutout_size=6),
                       augment_batch(x, "tinyimagenet", torch.Generator().manual_seed(9), cutout_size=6))


# ------------------------------------------------------------------ training through it

class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.2),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x):
        return self.body(x)


RECIPE = Recipe("tiny", "sgd", 0.2, 1e-4, 3, "onecycle", nesterov=True, batch_size=4, cutout=4)


def _train(out, ds, **kw):
    model = _Tiny()
    meta = loop.train_model(model, mode="cnn", recipe=RECIPE, train_set=ds, test_set=None, out_dir=out,
                            meta={"arch": "tiny", "dataset": ds.name}, seed=5, log=lambda s: None, **kw)
    return model.state_dict(), meta


def test_training_equals_per_batch_augmentation_and_resumes_bit_identically(tmp_path, monkeypatch):
    ds = _data("tinyimagenet", n=10, size=12)   # jitter and cutout: every kind of draw; 2 steps per epoch
    planned, meta = _train(tmp_path / "planned", ds)
    assert len(meta["history"]) == 3

    # the same run with each batch augmented as it comes (augment_batch on the loader's generator)
    real_loader = loop.TensorLoader

    def per_batch_loader(dataset, *, augment, cutout, **kw):
        assert augment is True and cutout == RECIPE.cutout
        return real_loader(dataset, augment=lambda x, g: augment_batch(x, dataset.name, g, cutout_size=cutout), **kw)

    monkeypatch.setattr(loop, "TensorLoader", per_batch_loader)
    per_batch, meta_b = _train(tmp_path / "per-batch", ds)
    monkeypatch.setattr(loop, "TensorLoader", real_loader)
    assert all(torch.equal(planned[k], per_batch[k]) for k in planned)
    assert [h["loss"] for h in meta_b["history"]] == [h["loss"] for h in meta["history"]]

    # killed right after epoch 2's checkpoint, then resumed
    real_save = loop.save_checkpoint

    def save_then_die(directory, model, opt, info):
        real_save(directory, model, opt, info)
        if info["epoch"] == 2:
            raise KeyboardInterrupt

    killed = tmp_path / "killed"
    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _train(killed, ds)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert json.loads((killed / "checkpoint.json").read_text())["epoch"] == 2
    resumed, meta_r = _train(killed, ds, resume=True)
    assert all(torch.equal(planned[k], resumed[k]) for k in planned)
    assert [h["loss"] for h in meta_r["history"]] == [h["loss"] for h in meta["history"]]


def test_compile_option_trains_the_compiled_net(tmp_path, monkeypatch):
    """`compile=True` hands the training net to torch.compile (here a stand-in that returns it
    unchanged, as compiling is slow on a CPU); the saved model is the plain one."""
    ds = _data("cifar10", n=8, size=8)
    compiled = []

    def fake_compile(net, **kw):
        compiled.append(net)
        return net

    monkeypatch.setattr(torch, "compile", fake_compile)
    plain, _ = _train(tmp_path / "plain", ds)
    assert compiled == []
    comp, _ = _train(tmp_path / "compiled", ds, compile=True)
    assert len(compiled) == 1 and isinstance(compiled[0], _Tiny)
    assert all(torch.equal(plain[k], comp[k]) for k in plain)


# ------------------------------------------------------------------ speed defaults

def _resolved(tmp_path, monkeypatch, model=None, **kw):
    """(channels_last, compile) as train_model hands them to the training run."""
    seen = []
    monkeypatch.setattr(loop, "_train", lambda model, **kw: seen.append((kw["channels_last"], kw["compile"])) or {})
    loop.train_model(model or _Tiny(), mode="cnn", recipe=RECIPE, train_set=_data("cifar10", n=8, size=8), test_set=None,
                     out_dir=tmp_path / "o", meta={}, log=lambda s: None, **kw)
    return seen[0]


def test_channels_last_defaults(tmp_path, monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")   # the CUDA run itself is not started here
    resnet, vit = create_model("resnet56", sdn=True), create_model("vit", sdn=True)
    assert _resolved(tmp_path, monkeypatch, resnet, device=cpu) == (True, False)
    assert _resolved(tmp_path, monkeypatch, vit, device=cpu) == (True, False)       # every model on CPU, as before
    assert _resolved(tmp_path, monkeypatch, resnet, device=cuda) == (True, False)   # conv nets on CUDA
    assert _resolved(tmp_path, monkeypatch, vit, device=cuda) == (False, False)


def test_speed_arguments_reach_the_training_run(tmp_path, monkeypatch):
    assert _resolved(tmp_path, monkeypatch) == (True, False)
    assert _resolved(tmp_path, monkeypatch, channels_last=False, compile=True) == (False, True)


def test_cli_speed_flags_and_amp_default(tmp_path, monkeypatch):
    import deepsloth.device
    import deepsloth.experiments.training as training
    from deepsloth.cli.main import main

    seen = []
    monkeypatch.setattr(training, "run_training",
                        lambda cfg, **kw: seen.append((cfg.amp, (cfg.channels_last, cfg.compile))))
    base = ["train", "--arch", "resnet56", "--device", "cpu", "--out", str(tmp_path / "m")]
    assert main(base) == 0
    assert main(base + ["--compile", "--channels-last", "off"]) == 0
    assert main(base + ["--channels-last", "on", "--amp", "auto"]) == 0
    assert seen == [("off", (None, False)), ("off", (False, True)), ("auto", (True, False))]
    # on CUDA (stood in for: the run itself is not started) --amp defaults to auto, bf16 on a GPU with it
    seen.clear()
    monkeypatch.setattr(deepsloth.device, "resolve_device", lambda name="auto": torch.device("cuda"))
    base[base.index("cpu")] = "cuda"
    assert main(base) == 0 and main(base + ["--amp", "off"]) == 0
    assert [amp for amp, _ in seen] == ["auto", "off"]
