"""Adversarial training: the term is computed on inputs inside the norm ball, IC-only adversarial
training leaves the backbone (weights and BatchNorm statistics) bit-identical, every module's
training flag is restored after each crafting call, seeds reproduce, and a killed run resumes to the
same weights (tiny synthetic data, one or two epochs of a few steps)."""
from __future__ import annotations

import pytest
import torch
from conftest import synthetic_cifar10
from torch import nn

from deepsloth.experiments.training import TrainConfig, run_training
from deepsloth.models import create_model, save_model_dir
from deepsloth.train.adversarial import AdversarialTraining

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("adv")
    synthetic_cifar10(base / "data", 32, 8)
    cnn = create_model("resnet56", "cifar10", sdn=False, seed=0)
    save_model_dir(base / "cnn", cnn, {"arch": "resnet56", "dataset": "cifar10", "mode": "cnn", "num_classes": 10,
                                       "input_size": 32})
    return base


def cfg(env, out, **kw):
    base = dict(arch="resnet56", out=str(out), recipe="fast", epochs=1, batch_size=16, device="cpu",
                data_root=str(env / "data"), adv_steps=2)
    base.update(kw)
    return TrainConfig(**base)


def test_the_adversarial_term_sees_inputs_inside_the_ball_and_modes_are_restored(monkeypatch):
    model = create_model("resnet56", "cifar10", sdn=True, seed=0)
    model.train()
    for part in (model.stem, model.blocks, model.head):   # the IC-only pattern: a frozen backbone in eval mode
        part.eval()
        part.requires_grad_(False)
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    x = torch.rand(6, 3, 32, 32)
    y = torch.arange(6) % 10
    for attack in ("pgd", "pgd-avg", "pgd-max", "deepsloth", "mixed"):
        adv = AdversarialTraining(attack, mode="ic-only", steps=2, eps=4 / 255)
        x_adv, y_adv = adv.inputs(model, x, y, seed=1)
        assert x_adv.shape == x.shape and torch.equal(y_adv, y)
        assert float((x_adv - x).abs().max()) <= 4 / 255 + 1e-6 and float((x_adv - x).abs().max()) > 0
        assert {n: m.training for n, m in model.named_modules()} == modes, attack
        assert {n: p.requires_grad for n, p in model.named_parameters()} == flags, attack
        assert torch.equal(adv.inputs(model, x, y, seed=1)[0], x_adv)    # seeded
        loss = adv.loss(model(x_adv), y)
        assert loss.requires_grad and float(loss.detach()) > 0
    half = AdversarialTraining("pgd", mode="cnn", share=0.5, steps=1)
    assert len(half.inputs(model, x, y, seed=0)[0]) == 3
    fast = AdversarialTraining("pgd", mode="cnn", fast=True)
    assert fast.specs[0]["params"]["steps"] == 1 and fast.specs[0]["params"]["step_size"] == pytest.approx(1.25 * 8 / 255)
    with pytest.raises(Exception, match="one exit"):
        AdversarialTraining("deepsloth", mode="cnn")


def test_ic_only_adversarial_training_keeps_the_backbone(env, tmp_path):
    meta = run_training(cfg(env, tmp_path / "ic", mode="ic-only", init_from=str(env / "cnn"), adv="mixed"),
                        log=lambda s: None)
    assert meta["adversarial"]["attack"] == "mixed" and len(meta["adversarial"]["specs"]) == 2
    sdn = create_model(tmp_path / "ic")
    _ = sdn.meta
    cnn = create_model(env / "cnn")
    _ = cnn.meta
    before = cnn.state_dict()
    after = sdn.state_dict()
    for k, v in before.items():   # weights and BatchNorm running statistics of the backbone
        assert torch.equal(after[k], v), k
    assert any(not torch.equal(a, b) for a, b in zip(
        sdn.ics.parameters(), create_model("resnet56", "cifar10", sdn=True, seed=0).ics.parameters()))


def test_adversarial_cnn_training_is_seeded_and_resumes(env, tmp_path, monkeypatch):
    import deepsloth.train.loop as loop
    run_training(cfg(env, tmp_path / "a", adv="pgd", epochs=2), log=lambda s: None)
    run_training(cfg(env, tmp_path / "b", adv="pgd", epochs=2), log=lambda s: None)
    a = create_model(tmp_path / "a")
    meta = a.meta
    b = create_model(tmp_path / "b")
    _ = b.meta
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert meta["adversarial"]["loss"] == "CE(x) + CE(final(x_adv))"
    # killed after the first epoch's checkpoint, then resumed: the same weights
    original, calls = loop.save_checkpoint, {"n": 0}

    def dying(*args, **kw):
        original(*args, **kw)
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg(env, tmp_path / "c", adv="pgd", epochs=2), log=lambda s: None)
    monkeypatch.setattr(loop, "save_checkpoint", original)
    with pytest.raises(Exception, match="unfinished run"):
        run_training(cfg(env, tmp_path / "c", adv="pgd", epochs=2), log=lambda s: None)
    with pytest.raises(Exception, match="different run"):
        run_training(cfg(env, tmp_path / "c", adv="pgd", adv_steps=3, epochs=2, resume=True), log=lambda s: None)
    run_training(cfg(env, tmp_path / "c", adv="pgd", epochs=2, resume=True), log=lambda s: None)
    c = create_model(tmp_path / "c")
    _ = c.meta
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
