"""On real CIFAR-10 test images: the batch-1 early-exit runtime and the batched evaluation
give the same exit index and prediction for every input.

Two models: a tiny SDN trained here in seconds (always runs), and the shipped ResNet-56 SDN
(`resnet56_sdn_cifar10` from the zoo, or the model directory in $DEEPSLOTH_TEST_SDN;
skipped when neither exists). The only disagreement allowed is a near-threshold tie: a
batch-1 and a batched convolution may differ in the last bit of a logit, which can flip
`max softmax >= q` only when the batched confidence is within 1e-5 of q. Such ties are
counted and reported; any other mismatch fails.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from deepsloth.data import load_dataset
from deepsloth.errors import DeepslothError
from deepsloth.exits.calibrate import calibrate_thresholds
from deepsloth.exits.evaluate import evaluate_exits, exit_costs_for
from deepsloth.exits.forward import collect_exit_outputs, to_float01
from deepsloth.exits.runtime import EarlyExitRunner, compare_with_batched
from deepsloth.models.backbones import Backbone, PoolLinear
from deepsloth.models.sdn import build_sdn

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

N_EVAL = 500
ZOO_NAME = "resnet56_sdn_cifar10"


@pytest.fixture(scope="module")
def cifar_test(cifar10_test_root):
    return load_dataset("cifar10", "test", cifar10_test_root)


def tiny_sdn() -> nn.Module:
    torch.manual_seed(0)

    def cbr(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    return build_sdn(Backbone(cbr(3, 16, 1), [cbr(16, 32, 2), cbr(32, 32, 1), cbr(32, 64, 2), cbr(64, 64, 1)],
                              PoolLinear(64, 10)), 10, 32)


@pytest.fixture(scope="module")
def tiny_trained(cifar_test):
    """A 5-exit SDN trained jointly for a few epochs on test images 5000-6999 (disjoint from
    the first 500, which are evaluated)."""
    model = tiny_sdn()
    x = to_float01(cifar_test.images[5000:7000])
    y = cifar_test.labels[5000:7000]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(4):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 100):
            idx = order[i:i + 100]
            loss = sum(nn.functional.cross_entropy(z, y[idx]) for z in model(x[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def check_agreement(model, images, labels, thresholds, batch_sizes=(1,)):
    outputs = collect_exit_outputs(model, images, batch_size=250)
    ties, used = 0, set()
    for q in thresholds:
        for bs in batch_sizes:
            res = EarlyExitRunner(model, q).run(images, batch_size=bs)
            report = compare_with_batched(res, outputs, q)
            assert report["unexplained"] == 0, (q, bs, report)
            ties += report["near_threshold_ties"]
            used.update(res.exit_index.tolist())
            # the runtime's histogram is the evaluation's histogram
            ev = evaluate_exits(outputs, labels, [1.0] * outputs.num_exits, {"q": q})["rad"]["q"]
            if report["mismatch"] == 0:
                assert res.exit_counts(outputs.num_exits) == ev["exit_counts"]
    return outputs, ties, used


def test_tiny_trained_sdn_runtime_matches_batched_evaluation(cifar_test, tiny_trained, record_property):
    images, labels = cifar_test.images[:N_EVAL], cifar_test.labels[:N_EVAL]
    outputs = collect_exit_outputs(tiny_trained, images)
    acc = outputs.accuracy(labels)
    assert acc[-1] > 0.3, acc   # it learned something, so the exits are informative
    cal = calibrate_thresholds(outputs, labels, rads=(5, 15, 30))
    qs = sorted({v["threshold"] for v in cal.values()} | {0.5, 0.7, 0.9})
    _, ties, used = check_agreement(tiny_trained, images, labels, qs, batch_sizes=(1, 64))
    record_property("near_threshold_ties", ties)
    assert ties <= 2
    assert len(used) >= 3, used   # several exits were exercised


@pytest.fixture(scope="module")
def trained_resnet56():
    """The shipped ResNet-56 SDN (zoo), or $DEEPSLOTH_TEST_SDN."""
    from deepsloth.models.zoo import zoo_names
    from deepsloth.models import create_model
    spec = os.environ.get("DEEPSLOTH_TEST_SDN")
    if not spec:
        if ZOO_NAME not in zoo_names():
            pytest.skip(f"zoo model {ZOO_NAME!r} is not installed (zoo: {', '.join(zoo_names()) or 'empty'}); "
                        f"set DEEPSLOTH_TEST_SDN=DIR to run this test on another trained SDN")
        spec = ZOO_NAME
    model = create_model(spec, device="cpu")
    meta, path = model.meta, model.model_dir
    if meta.get("mode") == "cnn":
        pytest.skip(f"{path} is a CNN, not a multi-exit SDN")
    return model, meta, path


def test_trained_resnet56_sdn_runtime_matches_batched_evaluation(cifar_test, trained_resnet56, record_property):
    model, meta, path = trained_resnet56
    images, labels = cifar_test.images[:N_EVAL], cifar_test.labels[:N_EVAL]
    outputs = collect_exit_outputs(model, images)
    try:
        cal = calibrate_thresholds(outputs, labels, rads=(5, 15))
        qs = sorted({v["threshold"] for v in cal.values()})
    except DeepslothError:
        qs = [0.8, 0.6]
    _, ties, used = check_agreement(model, images, labels, qs, batch_sizes=(1,))
    record_property("near_threshold_ties", ties)
    assert ties <= 2
    assert len(used) >= 3
    costs = exit_costs_for(model, meta, (3, 32, 32))
    assert len(costs.ops) == outputs.num_exits
