"""What fits the device: the automatic batch size (`device.auto_batch`), the CUDA precision and memory
layout defaults, their use by crafting and evaluation, and crafting on the BatchNorm-folded model.

No GPU is needed: the CUDA choices are computed from injected free-memory and per-input numbers, and
the folded network is compared with the model as trained on the CPU. On a CPU nothing changes
(batch 128 for crafting, 500 for evaluation, fp32, the same result keys)."""
from __future__ import annotations

import argparse

import pytest
import torch
from conftest import synthetic_sdn
from torch import nn

import deepsloth.device as device_mod
import deepsloth.experiments.context as context_mod
import deepsloth.experiments.craft as craft_mod
from deepsloth.attacks import PGD, UAP, DeepSloth
from deepsloth.attacks.base import frozen
from deepsloth.attacks.objectives import final_ce, mean_ce, uniform_ic_loss
from deepsloth.attacks.registry import resolve_spec
from deepsloth.cli.common import amp_from
from deepsloth.cli.main import build_parser
from deepsloth.device import AUTO_BATCH_CAP, MEMORY_SHARE, auto_batch, prefers_channels_last
from deepsloth.errors import DeepslothError
from deepsloth.experiments.context import EVAL_BATCH, eval_batch, load_context
from deepsloth.experiments.craft import (AUTO_RULE, DEFAULT_BATCH, craft, craft_identity, craft_key,
                                         crafting_batch)
from deepsloth.io import json_sha256
from deepsloth.models.backbones import Backbone, PoolLinear
from deepsloth.models.fold import for_input_gradients
from deepsloth.models.sdn import build_sdn
from deepsloth.precision import default_amp

pytestmark = pytest.mark.usefixtures("one_thread")
MB = 1 << 20


def never():
    raise AssertionError("the memory probe must not run here")


# ------------------------------------------------------------------ auto_batch

@pytest.mark.parametrize("per_item, free, expected", [
    (5 * MB, 20_000 * MB, 2048),     # 0.7 * 20000 / 5 = 2800 inputs fit: the power of two below
    (5 * MB, 80_000 * MB, AUTO_BATCH_CAP),   # 11200 fit: the cap
    (5 * MB, 100 * MB, 8),           # 14 fit
    (5 * MB, 1 * MB, 1),             # not even one fits: one at a time
    (0, 1 * MB, AUTO_BATCH_CAP),     # nothing per input: the cap
])
def test_auto_batch_is_the_largest_power_of_two_that_fits(per_item, free, expected):
    got = auto_batch("cuda", default=128, per_item_bytes=per_item, free_bytes=free)
    assert got == expected
    assert got & (got - 1) == 0 and 1 <= got <= AUTO_BATCH_CAP
    if per_item and got > 1:
        assert got * per_item <= MEMORY_SHARE * free
    if per_item and got < AUTO_BATCH_CAP and got > 1:
        assert 2 * got * per_item > MEMORY_SHARE * free


def test_auto_batch_cap_share_and_given():
    assert auto_batch("cuda", default=128, per_item_bytes=1, free_bytes=10 ** 12, cap=3000) == 2048
    assert auto_batch("cuda", default=128, per_item_bytes=MB, free_bytes=1000 * MB, share=0.5) == 256
    # a given batch wins everywhere and nothing is measured
    assert auto_batch("cuda", default=128, per_item_bytes=never, given=96) == 96
    assert auto_batch("cpu", default=128, per_item_bytes=never, given=7) == 7
    with pytest.raises(DeepslothError, match=">= 1"):
        auto_batch("cuda", default=128, per_item_bytes=MB, given=0)


def test_auto_batch_keeps_the_cpu_default_without_measuring():
    assert auto_batch("cpu", default=128, per_item_bytes=never) == 128
    assert auto_batch(torch.device("cpu"), default=500, per_item_bytes=never, free_bytes=1) == 500


def test_auto_batch_measures_once_and_reads_free_memory_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(device_mod, "free_memory", lambda dev: 1000 * MB)

    def probe():
        calls.append(1)
        return 3 * MB
    assert auto_batch("cuda", default=128, per_item_bytes=probe) == 128   # 0.7 * 1000 / 3 = 233
    assert len(calls) == 1


# ------------------------------------------------------------------ precision and layout defaults

def test_default_amp_is_auto_on_cuda_and_off_elsewhere():
    assert default_amp("cuda") == "auto" and default_amp(torch.device("cuda:1")) == "auto"
    assert default_amp("cpu") == "off"
    assert amp_from(argparse.Namespace(amp=None, device="cpu")) == "off"
    assert amp_from(argparse.Namespace(amp="bf16", device="cpu")) == "bf16"
    assert amp_from(argparse.Namespace(amp="off", device="cuda")) == "off"   # fp32 stays available


def tiny_sdn(seed: int = 0) -> nn.Module:
    """A 5-exit SDN with BatchNorm statistics far from the identity (so folding changes the weights)."""
    torch.manual_seed(seed)

    def cbr(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
    model = build_sdn(Backbone(cbr(3, 8, 1), [cbr(8, 16, 2), cbr(16, 16, 1), cbr(16, 32, 2), cbr(32, 32, 1)],
                               PoolLinear(32, 10)), 10, 32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
        for lin in [ic.linear for ic in model.ics] + [model.head.fc]:
            lin.weight.mul_(8)   # confident enough exits that the objectives have real gradients
    return model.eval()


def test_channels_last_for_convolutional_models_on_every_device():
    sdn = tiny_sdn()
    patchy = nn.Sequential(nn.Conv2d(3, 16, 4, 4), nn.Flatten(), nn.Linear(16 * 64, 64), nn.Linear(64, 10))
    assert prefers_channels_last(sdn, "cpu") and prefers_channels_last(sdn, "cuda")
    assert prefers_channels_last(patchy, "cpu")          # CPU: as before, every model
    assert not prefers_channels_last(patchy, "cuda")     # one patch convolution: a transformer-like model
    assert not prefers_channels_last(sdn, "meta")        # other devices keep the model's layout


# ------------------------------------------------------------------ crafting and evaluation use them

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root, model_dir, _ = synthetic_sdn(tmp_path_factory.mktemp("device-defaults"), 20, 8)
    return root, model_dir


def cpu_context(setup, **kw):
    root, model_dir = setup
    return load_context(model_dir, n=6, device="cpu", data_root=root, **kw)


def test_cli_leaves_the_evaluation_batch_to_the_device():
    args = build_parser().parse_args(["evaluate", "--model", "m"])
    assert args.eval_batch_size is None
    assert build_parser().parse_args(["evaluate", "--model", "m", "--eval-batch-size", "64"]).eval_batch_size == 64


def test_cpu_defaults_and_keys_are_unchanged(setup):
    ctx = cpu_context(setup)
    assert ctx.batch_size == EVAL_BATCH == 500 and ctx.channels_last
    assert cpu_context(setup, batch_size=32).batch_size == 32
    spec = resolve_spec("deepsloth", dataset="cifar10", steps=2)
    assert crafting_batch(ctx, spec) == DEFAULT_BATCH == 128
    key = craft_key(ctx, spec, 0)
    assert key == craft_key(ctx, spec, 0, 128) == json_sha256(craft_identity(ctx, spec, 0, 128))
    assert key != craft_key(ctx, spec, 0, 4)
    auto, given = craft(ctx, spec, seed=0), craft(ctx, spec, seed=0, batch_size=128)
    assert torch.equal(auto.inputs, given.inputs)
    assert auto.record["batch_size"] == 128 and "compute" not in auto.record and auto.record["key"] == key
    with pytest.raises(DeepslothError, match=">= 1"):
        craft(ctx, spec, seed=0, batch_size=0)


def test_cuda_choice_of_the_crafting_batch(setup, monkeypatch):
    """On CUDA (simulated: the device is only read, nothing runs there) the crafting batch is measured
    once per precision, is part of the key and of the record, and a given batch still wins."""
    ctx = cpu_context(setup)
    ctx.device = torch.device("cuda")
    probes = []

    def fake_step_bytes(c, amp):
        probes.append(amp)
        return 3 * MB if amp is None else 1 * MB
    monkeypatch.setattr(craft_mod, "_attack_step_bytes", fake_step_bytes)
    monkeypatch.setattr(device_mod, "free_memory", lambda dev: 10_000 * MB)
    fp32 = resolve_spec("deepsloth", dataset="cifar10")
    bf16 = resolve_spec("deepsloth", dataset="cifar10", amp="bf16")
    assert crafting_batch(ctx, fp32) == 2048          # 0.7 * 10000 / 3 = 2333
    assert crafting_batch(ctx, fp32) == 2048 and probes == [None]   # measured once per context
    assert crafting_batch(ctx, bf16) == AUTO_BATCH_CAP and probes == [None, "bf16"]   # 7000 fit: the cap
    assert crafting_batch(ctx, fp32, 100) == 100
    assert crafting_batch(ctx, resolve_spec("deepsloth-universal", dataset="cifar10")) == DEFAULT_BATCH
    assert len(probes) == 2
    key = craft_key(ctx, fp32, 0)
    assert key == craft_key(ctx, fp32, 0, 2048) != craft_key(ctx, fp32, 0, 128)
    rec = craft_mod._record(ctx, fp32, 0, key, 2048, True)
    assert rec["batch_size"] == 2048 and rec["key"] == key
    assert rec["compute"] == {"amp": None, "channels_last": True, "bn_folded": True, "batch_size": 2048,
                              "batch_size_rule": AUTO_RULE}
    rec = craft_mod._record(ctx, resolve_spec("deepsloth-universal", dataset="cifar10", amp="bf16"), 0, key, 128,
                            False)
    assert rec["compute"] == {"amp": "bf16", "channels_last": True, "bn_folded": True}


def test_cuda_choice_of_the_evaluation_batch(monkeypatch):
    monkeypatch.setattr(context_mod, "peak_bytes_per_item", lambda step, dev: 1 * MB)
    monkeypatch.setattr(device_mod, "free_memory", lambda dev: 1000 * MB)
    model, cuda = tiny_sdn(), torch.device("cuda")
    assert eval_batch(model, (3, 32, 32), cuda) == 512              # 0.7 * 1000 / (1 MB + 15 kB) = 689
    assert eval_batch(model, (3, 32, 32), cuda, given=64) == 64
    monkeypatch.setattr(device_mod, "free_memory", lambda dev: 100_000 * MB)
    assert eval_batch(model, (3, 32, 32), cuda) == AUTO_BATCH_CAP
    monkeypatch.setattr(context_mod, "peak_bytes_per_item", lambda step, dev: never())
    assert eval_batch(model, (3, 32, 32), torch.device("cpu")) == EVAL_BATCH


# ------------------------------------------------------------------ attacks on the folded network

@pytest.fixture(scope="module")
def folded():
    model = tiny_sdn()
    net = for_input_gradients(model, "cuda")   # the network crafting runs on CUDA (folding itself runs anywhere)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    return model, net, x, y


def test_only_cuda_crafts_on_the_folded_copy(folded):
    model, net, _, _ = folded
    assert for_input_gradients(model, "cpu") is model
    assert net is not model and not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())   # the model itself is untouched


@pytest.mark.parametrize("objective", [uniform_ic_loss, final_ce, mean_ce])
def test_folded_input_gradients_match(folded, objective):
    model, net, x, y = folded
    grads = []
    for m in (model, net):
        with frozen(m), torch.enable_grad():
            xi = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(objective(m(xi), y).sum(), xi)
        grads.append(g)
    scale = grads[0].abs().max()
    assert scale > 0
    assert (grads[0] - grads[1]).abs().max() <= 1e-4 * scale


def same_pixels(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() <= 1e-6).float().mean())


@pytest.mark.parametrize("name", ["deepsloth-linf", "deepsloth-l1", "pgd", "pgd-avg", "pgd-max", "class"])
def test_sign_step_attacks_on_the_folded_copy_match(folded, name):
    model, net, x, y = folded

    def run(m):
        if name.startswith("deepsloth"):
            return DeepSloth(m, norm=name.split("-")[1], steps=5, seed=3)(x)
        if name == "class":
            return DeepSloth(m, scope="class", steps=5, n_images=8, batch_size=8, seed=3)(x, y % 3)
        return PGD(m, objective={"pgd": "final", "pgd-avg": "avg", "pgd-max": "max"}[name], steps=5, seed=3)(x, y)
    a, b = run(model), run(net)
    assert (a if name == "class" else a - x).abs().max() > 0   # the attack moved its output
    assert same_pixels(a, b) >= 0.99   # a sign step flips only where a gradient entry is ~0


def test_l2_attack_and_deepfool_step_on_the_folded_copy_match(folded):
    model, net, x, _ = folded
    a, b = DeepSloth(model, norm="l2", steps=10, seed=3)(x), DeepSloth(net, norm="l2", steps=10, seed=3)(x)
    assert (a - x).flatten(1).norm(dim=1).min() > 0.01
    assert (a - b).abs().max() <= 1e-3
    steps = []
    for m in (model, net):
        uap = UAP(m, max_iter_df=1)
        with frozen(m), torch.enable_grad():
            steps.append(uap.deepfool(x, uap.predict(x)))
    (r1, f1), (r2, f2) = steps
    assert r1.abs().max() > 0 and torch.equal(f1, f2)
    assert torch.allclose(r1, r2, rtol=1e-3, atol=1e-6 * float(r1.abs().max()))
