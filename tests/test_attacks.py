"""Property tests of the attack library (deepsloth.attacks) on tiny multi-exit models.

Every attack and norm: outputs in [0, 1], within eps of the CLEAN input, same seed ->
identical output; universal perturbations are 3xHxW and do not depend on the batch they are
applied to; everything works on Tiny ImageNet-shaped inputs (64x64, 200 classes).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from deepsloth.attacks import (PGD, UAP, DeepSloth, apply_universal, deepsloth_defaults, exit_ce,
                               final_ce, frozen, lp_norm, mean_ce, norm_report, project,
                               project_l1, random_in_ball, sparse_sign, steepest_direction,
                               uniform_ic_loss)

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = {"linf": 1e-6, "l2": 1e-4, "l1": 1e-4}   # l_inf absolute, l_2 / l_1 relative


class TinyExits(nn.Module):
    """A 3-exit conv net for any input size and class count (seconds, not minutes)."""

    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.c1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.c2 = nn.Conv2d(width, width, 3, padding=1, stride=2)
        self.drop = nn.Dropout(0.5)
        self.h1 = nn.Linear(width, num_classes)
        self.h2 = nn.Linear(width, num_classes)
        self.h3 = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        a = torch.relu(self.bn(self.c1(x)))
        b = torch.relu(self.c2(a))
        return [self.h1(a.mean((2, 3))), self.h2(self.drop(b.mean((2, 3)))),
                self.h3(torch.cat([b.mean((2, 3)), b.amax((2, 3))], 1))]


def tiny(num_classes=10, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TinyExits(num_classes)


def batch(n=6, size=32, classes=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    x[0, :, :4] = 0.0      # some saturated pixels, so the [0, 1] clamp matters
    x[1, :, :4] = 1.0
    return x, torch.randint(0, classes, (n,), generator=g)


def assert_in_ball(x_adv, x, norm, eps):
    assert x_adv.shape == x.shape
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    achieved = lp_norm((x_adv.double() - x.double()), norm)
    limit = eps + TOL[norm] * (1 if norm == "linf" else eps)
    assert float(achieved.max()) <= limit, (norm, float(achieved.max()), eps)


# --------------------------------------------------------------------------- norms

@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_projection_lands_in_ball_and_keeps_inside_points(norm):
    g = torch.Generator().manual_seed(0)
    d = torch.randn(5, 3, 8, 8, generator=g) * 3
    eps = {"linf": 0.1, "l2": 1.5, "l1": 4.0}[norm]
    p = project(d, norm, eps)
    assert torch.all(lp_norm(p, norm) <= eps * (1 + 1e-6))
    small = project(d, norm, eps) * 0.5
    assert torch.equal(project(small, norm, eps), small)
    # a [N] tensor of radii works too
    radii = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0]) * eps
    assert torch.all(lp_norm(project(d, norm, radii), norm) <= radii * (1 + 1e-6))


def _l1_bisection(v: np.ndarray, eps: float) -> np.ndarray:
    """Reference projection: bisection on the soft threshold in float64."""
    if np.abs(v).sum() <= eps:
        return v
    lo, hi = 0.0, np.abs(v).max()
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.clip(np.abs(v) - mid, 0, None).sum() > eps:
            lo = mid
        else:
            hi = mid
    return np.sign(v) * np.clip(np.abs(v) - hi, 0, None)


def test_l1_projection_is_exact():
    g = torch.Generator().manual_seed(3)
    d = torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64)
    for eps in (0.5, 8.0, 100.0):
        p = project_l1(d, eps)
        for i in range(d.shape[0]):
            ref = _l1_bisection(d[i].flatten().numpy(), eps)
            np.testing.assert_allclose(p[i].flatten().numpy(), ref, atol=1e-9)
            if d[i].abs().sum() > eps:
                assert abs(float(p[i].abs().sum()) - eps) < 1e-9 * eps


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_random_start_in_ball_and_seeded(norm):
    eps = {"linf": 8 / 255, "l2": 0.5, "l1": 8.0}[norm]
    a = random_in_ball((4, 3, 16, 16), norm, eps, torch.Generator().manual_seed(5))
    b = random_in_ball((4, 3, 16, 16), norm, eps, torch.Generator().manual_seed(5))
    c = random_in_ball((4, 3, 16, 16), norm, eps, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.all(lp_norm(a, norm) <= eps * (1 + 1e-6))
    assert float(lp_norm(a, norm).min()) > 0


def test_sparse_sign_and_steepest_directions():
    g = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    s = sparse_sign(g, 99.0)
    nnz = (s != 0).flatten(1).sum(1)
    assert torch.all((nnz >= 30) & (nnz <= 32))            # top 1% of 3072 coordinates
    assert torch.allclose(s.abs().flatten(1).sum(1), torch.ones(3))
    kept = (s != 0)
    assert torch.all(torch.sign(s[kept]) == torch.sign(g[kept]))
    for row in range(3):     # the kept coordinates are exactly the largest |grad| of their row
        a, k = g[row].abs(), kept[row]
        assert float(a[k].min()) > float(a[~k].max())
    assert torch.allclose(lp_norm(steepest_direction(g, "l2"), "l2"), torch.ones(3))
    assert torch.equal(steepest_direction(g, "linf"), g.sign())
    assert torch.all(sparse_sign(torch.zeros(2, 3, 4, 4)) == 0)


def test_norm_report_measures_against_clean():
    x = torch.zeros(2, 3, 4, 4)
    xa = x.clone()
    xa[0, 0, 0, 0] = 0.5
    xa[1, 0, 0, :2] = 0.25
    r = norm_report(xa, x)
    assert r["linf"]["max"] == pytest.approx(0.5) and r["l1"]["mean"] == pytest.approx(0.5)
    assert r["l2"]["max"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- objectives

def test_objectives_shapes_and_values():
    torch.manual_seed(0)
    logits = [torch.randn(5, 7) for _ in range(4)]
    y = torch.randint(0, 7, (5,))
    ce = [nn.functional.cross_entropy(l, y, reduction="none") for l in logits]
    assert torch.allclose(final_ce(logits, y), ce[-1])
    assert torch.allclose(mean_ce(logits, y), torch.stack(ce).mean(0), atol=1e-6)
    assert torch.allclose(exit_ce(1)(logits, y), ce[1])
    uni = sum(-(torch.log_softmax(l, -1)).mean(-1) for l in logits[:-1])
    assert torch.allclose(uniform_ic_loss(logits), uni, atol=1e-6)
    # uniform logits reach the minimum log(C) per IC
    flat = [torch.zeros(2, 7)] * 4
    assert torch.allclose(uniform_ic_loss(flat), torch.full((2,), 3 * math.log(7)))


# --------------------------------------------------------------------------- per-sample attacks

SAMPLE_ATTACKS = {
    "pgd-linf": lambda m, s: PGD(m, objective="final", norm="linf", steps=3, seed=s),
    "pgd-avg-l2": lambda m, s: PGD(m, objective="avg", norm="l2", eps=0.4, steps=3, seed=s),
    "pgd-max-l1": lambda m, s: PGD(m, objective="max", norm="l1", eps=4.0, steps=2, seed=s),
    "pgd-max-linf": lambda m, s: PGD(m, objective="max", norm="linf", steps=2, step_size=2 / 255, seed=s),
    "pgd-avg-l1-nostart": lambda m, s: PGD(m, objective="avg", norm="l1", steps=3, random_start=False, seed=s),
    "deepsloth-linf": lambda m, s: DeepSloth(m, norm="linf", steps=4, seed=s),
    "deepsloth-l2": lambda m, s: DeepSloth(m, norm="l2", steps=12, seed=s),
    "deepsloth-l1": lambda m, s: DeepSloth(m, norm="l1", steps=20, step_size=1.0, eps=3.0, seed=s),
    "deepsloth-l1-start": lambda m, s: DeepSloth(m, norm="l1", steps=3, random_start=True, seed=s),
}


@pytest.mark.parametrize("name", sorted(SAMPLE_ATTACKS))
def test_per_sample_properties(name):
    model = tiny()
    x, y = batch()
    atk = SAMPLE_ATTACKS[name](model, 0)
    x_adv = atk(x, y)
    eps = atk.eps if isinstance(atk, PGD) else atk.params()["eps"]
    assert_in_ball(x_adv, x, atk.norm, eps)
    if isinstance(atk, DeepSloth) and atk.norm == "l2":   # the decayed budget holds too
        assert_in_ball(x_adv, x, "l2", atk.last_info["final_eps"])
        assert atk.last_info["final_eps"] < eps
    assert torch.equal(atk(x, y), x_adv)                              # same seed, same output
    assert torch.equal(SAMPLE_ATTACKS[name](model, 0)(x, y), x_adv)   # a fresh object too
    if "nostart" not in name and atk.config().get("random_start", True):
        assert not torch.equal(SAMPLE_ATTACKS[name](model, 1)(x, y), x_adv)
    assert not torch.equal(x_adv, x)


def test_attacks_improve_their_objectives():
    model = tiny()
    x, y = batch(8)
    with torch.no_grad():
        clean = model.eval()(x)
    x_pgd = PGD(model, steps=10, step_size=2 / 255)(x, y)
    x_sloth = DeepSloth(model, steps=10)(x)
    with torch.no_grad():
        assert final_ce(model(x_pgd), y).mean() > final_ce(clean, y).mean()
        assert uniform_ic_loss(model(x_sloth)).mean() < uniform_ic_loss(clean).mean()
    x_l2 = DeepSloth(model, norm="l2", steps=30)(x)
    x_l1 = DeepSloth(model, norm="l1", steps=30)(x)
    with torch.no_grad():
        assert uniform_ic_loss(model(x_l2)).mean() < uniform_ic_loss(clean).mean()
        assert uniform_ic_loss(model(x_l1)).mean() < uniform_ic_loss(clean).mean()


def test_pgd_max_keeps_best_chain_per_input():
    model = tiny()
    x, y = batch(5)
    atk = PGD(model, objective="max", steps=2, step_size=2 / 255)
    x_max = atk(x, y)
    from deepsloth.attacks import sum_ce
    with torch.no_grad():
        s_max = sum_ce(model.eval()(x_max), y)
    # each chain alone (same generator stream) scores no higher than the kept one
    g = torch.Generator().manual_seed(0)
    with frozen(model):
        for i in range(3):
            with torch.enable_grad():
                cand = atk.chain(x, y, exit_ce(i), g)
            with torch.no_grad():
                assert torch.all(sum_ce(model(cand), y) <= s_max + 1e-5)


def test_custom_objective_and_uint8_inputs():
    model = tiny()
    x, y = batch(4)
    target = torch.zeros(4, dtype=torch.long)
    # a targeted objective: maximise minus CE towards class 0 at every exit
    obj = lambda logits, labels: -mean_ce(logits, target)
    x_adv = PGD(model, objective=obj, steps=3)(x, y)
    assert_in_ball(x_adv, x, "linf", 8 / 255)
    xu = (x * 255).round().to(torch.uint8)
    x_adv_u = DeepSloth(model, steps=2)(xu)
    assert x_adv_u.dtype == torch.float32
    assert_in_ball(x_adv_u, xu.float() / 255, "linf", 8 / 255)
    custom = DeepSloth(model, steps=2, objective=lambda logits, labels: uniform_ic_loss(logits[:2]))
    assert "lambda" in custom.config()["objective"]
    custom(x)


def test_model_state_is_restored_and_no_parameter_grads():
    model = tiny()
    model.train()
    model.h1.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    x, y = batch(3)
    seen = {}

    def hook(module, inp, out):
        seen["training"] = module.training
        seen["param_grad"] = any(p.requires_grad for p in model.parameters())

    h = model.c1.register_forward_hook(hook)
    PGD(model, steps=1)(x, y)
    DeepSloth(model, steps=1)(x)
    h.remove()
    assert seen == {"training": False, "param_grad": False}
    assert model.training and model.bn.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_pgd_without_labels_uses_clean_predictions():
    model = tiny()
    x, _ = batch(4)
    with torch.no_grad():
        pred = model.eval()(x)[-1].argmax(-1)
    assert torch.equal(PGD(model, steps=2)(x), PGD(model, steps=2)(x, pred))


# --------------------------------------------------------------------------- universal attacks

@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_universal_deepsloth(norm):
    model = tiny()
    x, _ = batch(12)
    steps = {"linf": 3, "l2": 6, "l1": 4}[norm]
    atk = DeepSloth(model, norm=norm, scope="universal", steps=steps, n_images=8, batch_size=4, seed=0)
    delta = atk(x)
    eps = atk.params()["eps"]
    assert delta.shape == (3, 32, 32)
    assert float(lp_norm(delta[None], norm)) <= eps * (1 + TOL[norm])
    assert atk.last_info["n_images"] == 8 and atk.last_info["iterations"] == 2 * steps
    assert torch.equal(atk(x), delta)
    assert not torch.equal(DeepSloth(model, norm=norm, scope="universal", steps=steps, n_images=8,
                                     batch_size=4, seed=1)(x), delta)
    # applying it does not depend on the batch it is applied to
    x_test, _ = batch(5, seed=9)
    whole = apply_universal(x_test, delta)
    parts = torch.cat([apply_universal(x_test[:2], delta), apply_universal(x_test[2:], delta)])
    single = torch.cat([apply_universal(x_test[i:i + 1], delta) for i in range(5)])
    assert torch.equal(whole, parts) and torch.equal(whole, single)
    assert_in_ball(whole, x_test, norm, eps)


def test_universal_defaults_follow_spec():
    d = deepsloth_defaults("linf", "universal", "cifar10")
    assert (d["eps"], d["steps"], d["step_size"], d["n_images"], d["batch_size"], d["epochs"]) == \
        (8 / 255, 20, 0.005, 250, 250, 1)
    s = deepsloth_defaults("linf", "sample", "cifar10")
    assert (s["eps"], s["steps"], s["step_size"], s["random_start"]) == (8 / 255, 30, 0.002, True)
    l2c, l2t = deepsloth_defaults("l2", "sample", "cifar10"), deepsloth_defaults("l2", "sample", "tinyimagenet")
    assert (l2c["steps"], l2c["gamma"], l2t["gamma"]) == (550, 0.1, 0.05)
    assert 0.34 < 0.9 ** (549 // (550 // 11)) < 0.36 and 0.59 < 0.95 ** 10 < 0.61
    l1c, l1t = deepsloth_defaults("l1", "sample", "cifar10"), deepsloth_defaults("l1", "sample", "tinyimagenet")
    assert (l1c["eps"], l1c["step_size"], l1c["steps"]) == (8.0, 0.5, 250)
    assert (l1t["eps"], l1t["step_size"]) == (16.0, 1.0)
    strong = deepsloth_defaults("linf", "universal", "cifar10", preset="strong")
    assert strong["n_images"] > 250 and strong["epochs"] > 1
    # the dataset is guessed from the input size when not given
    atk = DeepSloth(tiny(), norm="l1")
    assert atk.params(image_size=64)["eps"] == 16.0 and atk.params(image_size=32)["eps"] == 8.0
    cfg = DeepSloth(tiny(), norm="l2", dataset="tinyimagenet").config()
    assert cfg["gamma"] == 0.05 and cfg["steps"] == 550 and cfg["seed"] == 0


def test_class_universal_covers_every_class():
    classes = 12
    model = tiny(classes)
    x, _ = batch(20, classes=classes)
    y = torch.arange(20) % 10         # classes 10 and 11 have no crafting data
    atk = DeepSloth(model, scope="class", steps=2, n_images=3, seed=0)
    deltas = atk(x, y)
    assert deltas.shape == (classes, 3, 32, 32)
    assert atk.last_info["num_classes"] == classes
    assert atk.last_info["classes_without_data"] == [10, 11]
    assert torch.all(deltas[10:] == 0) and torch.all(lp_norm(deltas[:10], "linf") > 0)
    assert torch.all(lp_norm(deltas, "linf") <= 8 / 255 + 1e-6)
    assert torch.equal(atk(x, y), deltas)
    # class c's perturbation depends only on class c's data
    keep = y != 3
    other = atk(x[keep], y[keep])
    assert torch.equal(other[5], deltas[5]) and torch.all(other[3] == 0)
    x_test, y_test = batch(6, classes=classes, seed=4)
    applied = apply_universal(x_test, deltas, y_test)
    assert torch.equal(applied[2], (x_test[2] + deltas[y_test[2]]).clamp(0, 1))
    with pytest.raises(ValueError):
        atk(x)


def test_uap_properties():
    model = tiny()
    x, _ = batch(30)
    atk = UAP(model, n_images=20, max_passes=2, seed=0)
    delta = atk(x)
    assert delta.shape == (3, 32, 32)
    assert float(delta.abs().max()) <= 8 / 255 + 1e-6 and float(delta.abs().max()) > 0
    assert torch.equal(atk(x), delta)
    info = atk.last_info
    assert info["n_images"] == 20 and 1 <= info["passes"] <= 2 and 0 <= info["fooling_rate"] <= 1
    fast = UAP(model, n_images=20, max_passes=1, batch_size=5, seed=0)(x)
    assert fast.shape == delta.shape and float(fast.abs().max()) <= 8 / 255 + 1e-6


def test_deepfool_flips_labels():
    model = tiny().eval()
    x, _ = batch(6)
    atk = UAP(model, overshoot=0.02, max_iter_df=50)
    with frozen(model):
        label = atk.predict(x)
        dr, flipped = atk.deepfool(x, label)
        with torch.no_grad():
            new = model(x + dr)[-1].argmax(-1)
    assert flipped.any()
    assert torch.all(new[flipped] != label[flipped])


# --------------------------------------------------------------------------- other shapes

def test_tiny_imagenet_shaped_model_all_attacks():
    model = tiny(200)
    x, y = batch(4, size=64, classes=200)
    for atk in (PGD(model, steps=2), PGD(model, objective="avg", norm="l2", steps=2),
                PGD(model, objective="max", steps=1), DeepSloth(model, steps=2),
                DeepSloth(model, norm="l2", steps=3), DeepSloth(model, norm="l1", steps=3)):
        x_adv = atk(x, y)
        eps = atk.eps if isinstance(atk, PGD) else atk.params()["eps"]
        assert_in_ball(x_adv, x, atk.norm, eps)
    assert DeepSloth(model, norm="l1").params(64)["eps"] == 16.0
    delta = DeepSloth(model, scope="universal", steps=2, n_images=4)(x)
    assert delta.shape == (3, 64, 64)
    deltas = DeepSloth(model, scope="class", steps=1, n_images=2)(x, y)
    assert deltas.shape == (200, 3, 64, 64)
    uap = UAP(model, n_images=4, max_passes=1)(x)
    assert uap.shape == (3, 64, 64)


def test_real_resnet56_sdn_tinyimagenet_shape():
    from deepsloth.models import create_model
    model = create_model("resnet56", "tinyimagenet", sdn=True, seed=0)
    x, y = batch(2, size=64, classes=200)
    x_adv = DeepSloth(model, steps=1)(x)
    assert_in_ball(x_adv, x, "linf", 8 / 255)
    delta = DeepSloth(model, scope="universal", steps=1, n_images=2)(x)
    assert delta.shape == (3, 64, 64)


def test_attack_on_plain_classifier_and_bad_arguments():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    x = torch.rand(3, 3, 8, 8)
    y = torch.tensor([0, 1, 2])
    assert_in_ball(PGD(net, steps=2)(x, y), x, "linf", 8 / 255)
    with pytest.raises(ValueError):
        PGD(net, norm="l3")
    with pytest.raises(ValueError):
        PGD(net, objective="nope")
    with pytest.raises(ValueError):
        DeepSloth(net, scope="galaxy")
