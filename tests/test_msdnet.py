"""MSDNet: structure and parameter counts, the multi-exit contract, real early exit, cost, strict
loading and resumable joint training."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import deepsloth.train.loop as loop
from conftest import check_runtime_agrees, colour_images

from deepsloth.cli.main import main
from deepsloth.errors import DeepslothError
from deepsloth.exits.cost import measure_exit_costs
from deepsloth.exits.runtime import EarlyExitRunner
from deepsloth.models import count_parameters, create_model, save_model_dir
from deepsloth.models.msdnet import MSDNetConfig, msdnet, scale_shapes
from deepsloth.train.recipes import default_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

# The documented sizes (docs/method.md §2.4)
CIFAR_PARAMS = 2_986_690
TINY_PARAMS = 3_158_260


def test_cifar_configuration_is_the_papers_anytime_msdnet():
    cfg = MSDNetConfig()
    assert cfg.layers == 16
    # "max" pruning: three runs of layers over 3, 2 and 1 scales; the layer that drops a scale reads it
    assert [cfg.layer_scales(n) for n in (1, 6, 7, 8, 12, 13, 14, 16)] == \
        [(3, 3), (3, 3), (3, 2), (2, 2), (2, 2), (2, 1), (1, 1), (1, 1)]
    model = create_model("msdnet", "cifar10", seed=0)
    assert count_parameters(model) == CIFAR_PARAMS and model.num_exits == 7
    shapes = scale_shapes(model, 32)
    assert shapes[0] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]        # first layer, growth factors 1-2-4
    assert shapes[1] == [(40, 32, 32), (80, 16, 16), (160, 8, 8)]       # block 1: 4 layers of growth 6
    assert shapes[3] == [(70, 16, 16), (140, 8, 8)]                     # finest scale dropped, compressed 0.5
    assert shapes[-1] == [(200, 8, 8)]
    outs = model(torch.rand(3, 3, 32, 32))
    assert len(outs) == 7 and all(o.shape == (3, 10) for o in outs)


def test_tiny_imagenet_configuration():
    model = create_model("msdnet", "tinyimagenet", seed=0)
    assert count_parameters(model) == TINY_PARAMS and model.num_exits == 7
    # a stride-2 first conv: the three scales run at 32/16/8 as on CIFAR
    assert scale_shapes(model, 64)[0] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    outs = model(torch.rand(2, 3, 64, 64))
    assert len(outs) == 7 and all(o.shape == (2, 200) for o in outs)
    with pytest.raises(DeepslothError, match="no plain-CNN form"):
        create_model("msdnet_cnn", "cifar10")
    with pytest.raises(DeepslothError, match="32x32 and 64x64"):
        create_model("msdnet", "cifar10", input_size=48)


def test_cumulative_cost_increases_strictly_and_ends_at_one():
    cost = measure_exit_costs(create_model("msdnet", "cifar10", seed=0), (3, 32, 32))
    c = cost.normalised
    assert len(c) == 7 and c[-1] == 1.0
    assert all(a < b for a, b in zip(c, c[1:]))
    assert 0.15 < c[0] < 0.25   # the first exit already pays for the three-scale first layer


@pytest.fixture(scope="module")
def tiny_msdnet():
    """A small MSDNet (4 exits, scale dropping at layers 3 and 5) trained for a few steps."""
    torch.manual_seed(0)
    cfg = MSDNetConfig(blocks=4, base=2, step=1, growth=4, base_channels=8, classifier_channels=16)
    model = msdnet(num_classes=4, input_size=32, cfg=cfg)
    x, y = colour_images(256)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(12):
        xb, yb = x[step * 16 % 256:][:64].float() / 255, y[step * 16 % 256:][:64]
        loss = sum(F.cross_entropy(o, yb) for o in model(xb))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("batch_size", [1, 9, 40])
def test_runtime_stops_inside_msdnet_and_agrees_with_batched_evaluation(tiny_msdnet, batch_size):
    images, _ = colour_images(40, seed=1)
    assert len(check_runtime_agrees(tiny_msdnet, images, [0.2, 0.5, 0.8], batch_size)) >= 3


def test_later_blocks_are_not_run_for_inputs_that_exit(tiny_msdnet):
    model = tiny_msdnet
    images, _ = colour_images(30, seed=2)
    calls = []
    runner = EarlyExitRunner(model, 0.0)   # the first exit always fires
    folded = runner.model
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, b in enumerate(folded.blocks)]
    hooks.append(folded.head.register_forward_hook(lambda m, i, o: calls.append("head")))
    try:
        res = runner.run(images, batch_size=1, warmup=0)
    finally:
        for h in hooks:
            h.remove()
    assert res.exit_index.tolist() == [0] * 30 and calls == [0] * 30


def test_strict_loading_rejects_mismatched_weights(tmp_path):
    model = create_model("msdnet", "cifar10", seed=0)
    meta = {"arch": "msdnet", "dataset": "cifar10", "mode": "sdn", "num_classes": 10, "input_size": 32}
    save_model_dir(tmp_path / "ok", model, meta)
    back = create_model(tmp_path / "ok")
    _ = back.meta
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.eval()(x), back(x)))
    # the same weights declared as a Tiny ImageNet model (200 classes): shapes differ
    save_model_dir(tmp_path / "bad", model, dict(meta, dataset="tinyimagenet", num_classes=200, input_size=64))
    with pytest.raises(DeepslothError, match="shape"):
        create_model(tmp_path / "bad")


def test_msdnet_recipes():
    paper = default_recipe("msdnet", "sdn", "paper")
    assert (paper.optimizer, paper.lr, paper.batch_size, paper.epochs, paper.milestones, paper.exit_weights) == \
        ("sgd", 0.1, 64, 300, (150, 225), "equal")
    assert default_recipe("msdnet", "sdn", "fast").to_dict()["exit_weights"] == "equal"
    assert "exit_weights" not in default_recipe("resnet56", "sdn", "fast").to_dict()   # older records unchanged
    with pytest.raises(DeepslothError, match="jointly"):
        default_recipe("msdnet", "cnn")


def test_equal_exit_weights_in_the_joint_loss():
    outs = [torch.randn(5, 10) for _ in range(3)]
    y = torch.randint(0, 10, (5,))
    loss = loop.make_loss("sdn", default_recipe("msdnet", "sdn", "fast"), [0.2, 0.5, 1.0])(outs, y, 0)
    assert torch.allclose(loss, sum(F.cross_entropy(o, y) for o in outs))


@pytest.mark.slow
def test_killed_msdnet_training_resumes_bit_identically(cifar10_root, tmp_path, monkeypatch):
    def train(out, *extra):
        return main(["train", "--arch", "msdnet", "--mode", "sdn", "--recipe", "fast", "--epochs", "2",
                     "--train-n", "256", "--test-n", "100", "--data-root", str(cifar10_root), "--device", "cpu",
                     "--out", str(out), *extra])

    full, killed = tmp_path / "full", tmp_path / "killed"
    assert train(full) == 0
    real_save = loop.save_checkpoint

    def save_then_die(directory, model, opt, info):
        real_save(directory, model, opt, info)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    assert train(killed) == 130
    assert json.loads((killed / "checkpoint.json").read_text())["epoch"] == 1
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert train(killed, "--resume") == 0
    a = create_model(full)
    b = create_model(killed)
    meta_b = b.meta
    assert meta_b["exits"] == 7 and meta_b["recipe"]["exit_weights"] == "equal"
    assert len(meta_b["accuracy"]["per_exit"]) == 7
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
