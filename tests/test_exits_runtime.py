"""The early-exit runtime: it really stops, and agrees with the batched evaluation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deepsloth.exits.forward import collect_exit_outputs
from deepsloth.exits.policies import make_policy
from deepsloth.exits.runtime import (EarlyExitRunner, compare_with_batched, measure_exit_times,
                                     supports_early_exit)
from deepsloth.models.backbones import Backbone, PoolLinear
from deepsloth.models.sdn import build_sdn

pytestmark = pytest.mark.usefixtures("one_thread")


def make_images(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 images that differ in colour (random noise alone makes all inputs look alike)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.8 * torch.rand(n, 3, 1, 1, generator=g) + 0.2 * torch.rand(n, 3, 32, 32, generator=g)
    return (x * 255).to(torch.uint8)


@torch.no_grad()
def tiny_sdn(seed: int = 0) -> nn.Module:
    """A 5-exit SDN whose exits all have spread-out confidences (random weights, rescaled
    so every exit's logits have standard deviation ~2.5 on `test_images`)."""
    torch.manual_seed(seed)

    def cbr(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    model = build_sdn(Backbone(cbr(3, 8, 1), [cbr(8, 16, 2), cbr(16, 16, 1), cbr(16, 32, 2), cbr(32, 32, 1)],
                               PoolLinear(32, 10)), 10, 32).eval()
    logits = model(make_images(64, seed=99).float() / 255)
    for lin, z in zip([ic.linear for ic in model.ics] + [model.head.fc], logits):
        scale = 2.5 / (z - z.mean(0)).std()
        lin.weight.mul_(scale)
        lin.bias.zero_()
    return model


class Opaque(nn.Module):
    """A multi-exit model without the MultiExitNet layout: only forward() is known."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.fixture(scope="module")
def setup():
    model = tiny_sdn()
    images = make_images(48)
    return model, images, collect_exit_outputs(model, images, batch_size=50)


def thresholds_for(policy_name, outputs):
    if policy_name == "patience":
        return [1, 2, 3]
    # every threshold splits these inputs over several exits
    return [0.5, 0.7, 0.9, 0.99]


@pytest.mark.parametrize("policy", ["confidence", "entropy", "patience"])
@pytest.mark.parametrize("batch_size", [1, 7, 48])
def test_runtime_agrees_with_batched_evaluation(setup, policy, batch_size):
    model, images, outputs = setup
    used = set()
    for q in thresholds_for(policy, outputs):
        p = make_policy(policy, num_classes=10)
        res = EarlyExitRunner(model, q, policy=p).run(images, batch_size=batch_size, warmup=0)
        assert res.early_exit and len(res) == len(images)
        report = compare_with_batched(res, outputs, q, p)
        assert report["unexplained"] == 0, report
        assert report["mismatch"] <= 1, report  # near-threshold ties are rare by construction
        used.update(res.exit_index.tolist())
        assert (res.seconds > 0).all()
    assert len(used) >= 3  # the thresholds exercised several exits


def test_float_inputs_match_uint8_inputs(setup):
    model, images, outputs = setup
    a = EarlyExitRunner(model, 0.5).run(images, batch_size=16)
    b = EarlyExitRunner(model, 0.5).run(images.float() / 255, batch_size=16)
    assert torch.equal(a.exit_index, b.exit_index) and torch.equal(a.prediction, b.prediction)


def test_computation_really_stops(setup):
    model, images, _ = setup
    seen = {i: [] for i in range(len(model.blocks))}
    hooks = [b.register_forward_hook(lambda m, inp, out, i=i: seen[i].append(out.shape[0]))
             for i, b in enumerate(model.blocks)]
    head_calls = []
    hooks.append(model.head.register_forward_hook(lambda m, inp, out: head_calls.append(out.shape[0])))
    try:
        res = EarlyExitRunner(model, 0.0).run(images[:10], batch_size=1, warmup=0)  # the first IC always fires
        assert res.exit_index.tolist() == [0] * 10
        assert len(seen[0]) == 10 and all(not seen[i] for i in range(1, len(model.blocks)))
        assert not head_calls
        for v in seen.values():
            v.clear()
        res = EarlyExitRunner(model, 0.7).run(images, batch_size=len(images), warmup=0)
        sizes = [seen[i][0] if seen[i] else 0 for i in range(len(model.blocks))]
        counts = res.exit_counts(len(model.blocks) + 1)
        # finished inputs leave the batch: block i sees only those not answered before it
        expect = [len(images) - sum(counts[:i]) for i in range(len(model.blocks))]
        assert sizes == [e if e > 0 else 0 for e in expect]
        assert sizes[-1] < len(images)
    finally:
        for h in hooks:
            h.remove()


def test_generic_models_fall_back_to_a_full_forward(setup):
    model, images, outputs = setup
    opaque = Opaque(model)
    assert supports_early_exit(model) and not supports_early_exit(opaque)
    res = EarlyExitRunner(opaque, 0.5).run(images, batch_size=10)
    assert not res.early_exit
    assert compare_with_batched(res, outputs, 0.5)["mismatch"] == 0


def test_measured_exit_times(setup):
    model, images, _ = setup
    t = measure_exit_times(model, images[:4], warmup=1)
    assert t["method"] == "measured" and len(t["cumulative_seconds"]) == len(model.blocks) + 1
    assert all(b >= a for a, b in zip(t["cumulative_seconds"], t["cumulative_seconds"][1:]))
    costs = [0.25, 0.5, 0.75, 0.9, 1.0, 1.0]
    s = measure_exit_times(Opaque(model), images[:4], costs=costs, warmup=1)
    assert s["method"] == "scaled-by-ops"
    assert s["cumulative_seconds"][0] == pytest.approx(0.25 * s["cumulative_seconds"][-1])
