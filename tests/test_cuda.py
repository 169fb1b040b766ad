"""CUDA: every attack family agrees with the CPU, crafting's GPU defaults (automatic batch, bf16,
channels-last, BatchNorm folding) are used and recorded, and the early-exit runtime really stops on
the GPU and matches the batched evaluation. Skipped without CUDA.

Agreement is fp32 against fp32: TF32 (PyTorch's default for cuDNN convolutions) is switched off for
this module. A sign step (l_inf, l_1) can still flip where a gradient entry is within rounding of
zero, so those compare the share of equal pixels; continuous attacks compare values."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import colour_images, synthetic_sdn
from test_device_defaults import same_pixels, tiny_sdn

from deepsloth.attacks import PGD, UAP, DeepSloth
from deepsloth.attacks.base import frozen
from deepsloth.attacks.objectives import uniform_ic_loss
from deepsloth.attacks.registry import resolve_spec
from deepsloth.device import AUTO_BATCH_CAP, free_memory, prefers_channels_last
from deepsloth.exits.forward import collect_exit_outputs
from deepsloth.exits.runtime import EarlyExitRunner, compare_with_batched
from deepsloth.experiments.context import load_context
from deepsloth.experiments.craft import AUTO_RULE, craft, craft_key
from deepsloth.precision import default_amp, native_bf16, resolve_amp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True, scope="module")
def strict_fp32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def models():
    cpu = tiny_sdn()
    return cpu, copy.deepcopy(cpu).cuda().eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)


def both(models, make, *args):
    """The attack `make(model)` run on the CPU model and on its CUDA copy (inputs on the CPU; the
    attack moves them and returns its output on the inputs' device)."""
    cpu, gpu = models
    a, b = make(cpu)(*args), make(gpu)(*args)
    assert a.device.type == b.device.type == "cpu"
    return a, b


SIGN_STEP = {
    "deepsloth-linf": lambda m: DeepSloth(m, norm="linf", steps=5, seed=3),
    "deepsloth-l1": lambda m: DeepSloth(m, norm="l1", steps=5, seed=3),
    "pgd": lambda m: PGD(m, steps=5, seed=3),
    "pgd-avg": lambda m: PGD(m, objective="avg", steps=5, seed=3),
    "pgd-max": lambda m: PGD(m, objective="max", steps=5, seed=3),
}


@pytest.mark.parametrize("name", list(SIGN_STEP))
def test_sign_step_attacks_agree(models, batch, name):
    x, y = batch
    args = (x,) if name.startswith("deepsloth") else (x, y)
    a, b = both(models, SIGN_STEP[name], *args)
    assert (a - x).abs().max() > 0
    assert same_pixels(a, b) >= 0.98
    if name.startswith("deepsloth"):   # and they reach the same loss
        la, lb = (uniform_ic_loss(models[0](z)).mean() for z in (a, b))
        assert abs(float(la - lb)) <= 1e-2 * abs(float(la))


def test_l2_attack_agrees(models, batch):
    x, _ = batch
    a, b = both(models, lambda m: DeepSloth(m, norm="l2", steps=10, seed=3), x)
    assert (a - x).flatten(1).norm(dim=1).min() > 0.01
    assert (a - b).abs().max() <= 1e-3


@pytest.mark.parametrize("scope", ["universal", "class"])
def test_universal_deepsloth_agrees(models, batch, scope):
    x, y = batch
    make = lambda m: DeepSloth(m, scope=scope, steps=5, n_images=8, batch_size=8, seed=3)   # noqa: E731
    a, b = both(models, make, *((x,) if scope == "universal" else (x, y % 3)))
    assert a.shape == b.shape and a.abs().max() > 0
    assert same_pixels(a, b) >= 0.98


def test_uap_deepfool_step_and_uap_agree(models, batch):
    x, _ = batch
    steps = []
    for m in models:
        uap = UAP(m, max_iter_df=1)
        xm = x.to(next(m.parameters()).device)
        with frozen(m), torch.enable_grad():
            r, flipped = uap.deepfool(xm, uap.predict(xm))
        steps.append((r.cpu(), flipped.cpu()))
    (r1, f1), (r2, f2) = steps
    assert r1.abs().max() > 0 and torch.equal(f1, f2)
    assert torch.allclose(r1, r2, rtol=1e-3, atol=1e-6 * float(r1.abs().max()))
    a, b = both(models, lambda m: UAP(m, max_passes=1, n_images=16, seed=3), x)
    assert a.shape == (3, 32, 32) and a.abs().max() <= 8 / 255 + 1e-6
    assert float(((a - b).abs() <= 1e-4).float().mean()) >= 0.95


def test_bf16_crafting_works_like_fp32(models, batch):
    """bf16 autocast (the CUDA default where the GPU has it) lowers the DeepSloth loss as much as fp32."""
    if not native_bf16("cuda"):
        pytest.skip("this GPU has no native bf16")
    _, gpu = models
    x = batch[0].cuda()
    fp32 = DeepSloth(gpu, steps=10, seed=3)(x)
    bf16 = DeepSloth(gpu, steps=10, seed=3, amp="bf16")(x)
    assert (bf16 - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        clean, l32, l16 = (float(uniform_ic_loss(gpu(z)).mean()) for z in (x, fp32, bf16))
    assert l32 < clean and l16 < clean
    assert abs(l16 - l32) <= 0.1 * (clean - l32)


# ------------------------------------------------------------------ crafting's CUDA defaults

@pytest.fixture(scope="module")
def sdn_dir(tmp_path_factory):
    return synthetic_sdn(tmp_path_factory.mktemp("cuda-sdn"), 20, 12)[:2]


def test_gpu_defaults_of_a_context(sdn_dir):
    root, model_dir = sdn_dir
    ctx = load_context(model_dir, n=12, device="cuda", data_root=root)
    assert ctx.device.type == "cuda" and ctx.channels_last and prefers_channels_last(ctx.model, "cuda")
    assert 1 <= ctx.batch_size <= AUTO_BATCH_CAP and ctx.batch_size & (ctx.batch_size - 1) == 0
    conv = next(m for m in ctx.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert free_memory("cuda") > 0
    assert default_amp("cuda") == "auto"
    assert resolve_amp("auto", "cuda") == ("bf16" if native_bf16("cuda") else None)


def test_crafting_on_cuda_matches_the_cpu_and_records_what_ran(sdn_dir, tmp_path):
    root, model_dir = sdn_dir
    gpu = load_context(model_dir, n=12, device="cuda", data_root=root)
    cpu = load_context(model_dir, n=12, device="cpu", data_root=root)
    spec = resolve_spec("deepsloth", dataset="cifar10", steps=3)
    assert craft_key(gpu, spec, 0, 4) == craft_key(cpu, spec, 0, 4)   # the same batches: the same result
    a = craft(cpu, spec, seed=0, batch_size=4)
    b = craft(gpu, spec, seed=0, batch_size=4, out_dir=tmp_path)
    assert same_pixels(a.inputs, b.inputs) >= 0.98
    assert "compute" not in a.record
    assert b.record["compute"] == {"amp": None, "channels_last": True, "bn_folded": True, "batch_size": 4,
                                   "batch_size_rule": "given"}
    auto = craft(gpu, spec, seed=0, out_dir=tmp_path)            # the batch left to the device
    bs = auto.record["batch_size"]
    assert 1 <= bs <= AUTO_BATCH_CAP and bs & (bs - 1) == 0
    assert auto.record["compute"]["batch_size_rule"] == AUTO_RULE
    assert auto.record["key"] == craft_key(gpu, spec, 0, bs) == craft_key(gpu, spec, 0)
    assert auto.path.is_file() and craft(gpu, spec, seed=0, batch_size=bs, out_dir=tmp_path).reused


# ------------------------------------------------------------------ the early-exit runtime on the GPU

def clear_thresholds(confidence: torch.Tensor, quantiles) -> list:
    """Thresholds near the given quantiles of the ICs' confidences, each in the middle of the widest gap
    between neighbouring confidences nearby (so float rounding cannot move an input across it)."""
    conf = confidence.flatten().sort().values
    w, out = max(1, len(conf) // 8), []
    for q in quantiles:
        i = int(q * (len(conf) - 1))
        j = max(range(max(0, i - w), min(len(conf) - 1, i + w)), key=lambda k: float(conf[k + 1] - conf[k]))
        assert conf[j + 1] - conf[j] >= 1e-4
        out.append(float(conf[j] + conf[j + 1]) / 2)
    return out


@pytest.mark.parametrize("batch_size", [1, 16])
def test_early_exit_runtime_stops_early_on_cuda_and_matches_batched(models, batch_size):
    _, gpu = models
    images, _ = colour_images(64, seed=5)
    outputs = collect_exit_outputs(gpu, images)
    k = outputs.num_exits
    for q in clear_thresholds(outputs.confidence[:-1], (0.25, 0.5, 0.75)):
        runner = EarlyExitRunner(gpu, q)
        assert runner.device.type == "cuda"
        stages = list(runner.model.blocks) + [runner.model.head]
        rows = [0] * len(stages)   # inputs entering each block, and the final exit's head
        hooks = [st.register_forward_pre_hook(lambda m, inp, i=i: rows.__setitem__(i, rows[i] + inp[0].shape[0]))
                 for i, st in enumerate(stages)]
        try:
            res = runner.run(images, batch_size=batch_size, warmup=0)
        finally:
            for h in hooks:
                h.remove()
        assert res.early_exit and len(res) == len(images)
        report = compare_with_batched(res, outputs, q)
        assert report["mismatch"] == 0, report
        counts = res.exit_counts(k)
        assert len(rows) == k and counts[-1] < len(images)   # some inputs left before the final exit ...
        # ... and what follows their exit never saw them: block i (and the head, i = K-1) runs the
        # inputs not answered by the ICs before it
        assert rows == [int((res.exit_index >= i).sum()) for i in range(k)]
        assert rows[-1] == counts[-1]
