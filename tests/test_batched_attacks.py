"""The attacks that batch work a plain loop would do one call at a time give the loop's results.

* PGD-max runs its K chains as one stacked batch; a chain-after-chain reference written here (same
  generator, same random starts) must give the same output and keep the same chain per input, on
  every kind of multi-exit model (opaque, `MultiExitNet`, attached exits), every norm, targeted,
  batch-mean reduction, without a random start, with input normalisation, and when the chains run in
  groups.
* UAP's DeepFool takes all candidate classes' gradients from one backward; a reference taking one
  backward per candidate class must make the same steps, and a UAP built on it the same perturbation.
"""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepsloth.attacks.pgd as pgd_module
from deepsloth.attacks import PGD, UAP, frozen, lp_norm, sum_ce
from deepsloth.attacks.norms import clip_to_ball, random_in_ball, steepest_direction
from deepsloth.models import MultiExitNet, attach_exits, build_sdn
from deepsloth.models.backbones import Backbone

from test_attacks import TinyExits, batch

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5
EPS = {"linf": 8 / 255, "l2": 0.5, "l1": 8.0}
STEP = {"linf": 2 / 255, "l2": 0.1, "l1": 1.0}


# --------------------------------------------------------------------------- models

def opaque_model(classes: int = 10) -> nn.Module:
    """Only `forward(x) -> [exits]` is known: the stacked batch runs the whole network."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TinyExits(classes).eval()


def sdn_model(classes: int = 10) -> MultiExitNet:
    """A 4-exit `MultiExitNet` (three blocks with an IC each, and the head)."""
    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())
    with torch.random.fork_rng():
        torch.manual_seed(1)
        backbone = Backbone(block(3, 8, 1), [block(8, 8, 2), block(8, 12, 2), block(12, 16, 2)],
                            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes)))
        for m in backbone.modules():   # BN statistics that are not the identity
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        return build_sdn(backbone, classes, 32).eval()


def attached_model(classes: int = 10) -> nn.Module:
    """Exits attached by forward hooks to a plain sequential CNN (3 exits and the final one)."""
    with torch.random.fork_rng():
        torch.manual_seed(2)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                            nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(16, classes))
    return attach_exits(net, at=["1", "3", "5"], num_classes=classes, input_shape=(3, 32, 32), seed=3).eval()


MODELS = {"opaque": opaque_model, "sdn": sdn_model, "attached": attached_model}


def test_the_models_take_the_paths_they_are_meant_to():
    from deepsloth.exits.runtime import supports_early_exit
    assert not supports_early_exit(opaque_model())
    assert isinstance(sdn_model(), MultiExitNet) and supports_early_exit(sdn_model())
    assert supports_early_exit(attached_model()) and not isinstance(attached_model(), MultiExitNet)


# --------------------------------------------------------------------------- PGD-max

def reference_pgd_max(model, x, y, *, norm, eps, step_size, steps, seed=0, random_start=True,
                      targeted=False, reduction="sum", normalization=None):
    """PGD-max as docs/method.md §5.1 states it: one chain per exit i maximising CE_i, run one after
    another from the same generator; per input the chain with the largest summed CE over all exits.
    Returns (output, index of the kept chain per input, every chain's result)."""
    g = torch.Generator().manual_seed(seed)

    def run(z):
        if normalization is not None:
            z = (z - normalization[0]) / normalization[1]
        return model(z)

    with frozen(model):
        with torch.no_grad():
            k = len(run(x[:1]))
        chains = []
        for i in range(k):
            if random_start:
                x_adv = clip_to_ball(x + random_in_ball(x.shape, norm, eps, g), x, norm, eps)
            else:
                x_adv = x.clone()
            for _ in range(steps):
                xi = x_adv.detach().requires_grad_(True)
                ce = F.cross_entropy(run(xi)[i].float(), y, reduction="none")
                (grad,) = torch.autograd.grad(ce.mean() if reduction == "mean" else ce.sum(), xi)
                step = steepest_direction(grad, norm, 99.0)
                x_adv = clip_to_ball(x_adv + (-step_size if targeted else step_size) * step, x, norm, eps)
            chains.append(x_adv.detach())
        with torch.no_grad():
            scores = torch.stack([sum_ce(run(c), y) for c in chains])      # [K, N]
    best = torch.zeros(x.shape[0], dtype=torch.long)
    best_score = torch.full((x.shape[0],), -float("inf"))
    for i in range(k):   # the first chain reaching the largest score is kept
        better = scores[i] > best_score
        best[better], best_score[better] = i, scores[i][better]
    return torch.stack(chains)[best, torch.arange(x.shape[0])], best, torch.stack(chains)


def set_stack_limit(monkeypatch, elements: int) -> None:
    """PGD-max stacks at most `elements` input elements at once, on every device."""
    monkeypatch.setattr(pgd_module, "MAX_STACKED_ELEMENTS", {"cpu": elements, "cuda": elements})


def kept_chain(x_adv, chains):
    """Which chain each output row is (the nearest one)."""
    return (chains - x_adv.unsqueeze(0)).flatten(2).abs().amax(dim=2).argmin(dim=0)


def check_against_reference(atk, model, x, y, **ref_options):
    out = atk(x, y)
    ref, best, chains = reference_pgd_max(model, x, y, norm=atk.norm, eps=atk.eps, step_size=atk.step_size,
                                          steps=atk.steps, seed=atk.seed, **ref_options)
    assert float((out - ref).abs().max()) <= TOL
    assert torch.equal(kept_chain(out, chains), best)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    achieved = lp_norm(out.double() - x.double(), atk.norm)
    assert float(achieved.max()) <= atk.eps * (1 + 1e-5)
    return best


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_pgd_max_equals_chains_run_one_after_another(kind, norm):
    model = MODELS[kind]()
    x, y = batch(6)
    atk = PGD(model, objective="max", norm=norm, eps=EPS[norm], step_size=STEP[norm], steps=3, seed=4)
    check_against_reference(atk, model, x, y)


def test_pgd_max_keeps_different_chains_for_different_inputs(monkeypatch):
    """The selection itself is exercised: here the kept chain is not the same for every input."""
    model = attached_model()
    x, y = batch(12, seed=0)
    atk = PGD(model, objective="max", step_size=2 / 255, steps=3, seed=0)
    best = check_against_reference(atk, model, x, y)
    assert len(set(best.tolist())) > 1, best
    for chains_at_once in (1, 2):   # and in groups of chains
        set_stack_limit(monkeypatch, chains_at_once * x.numel())
        assert torch.equal(check_against_reference(atk, model, x, y), best)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_pgd_max_options_equal_the_reference(kind):
    model = MODELS[kind]()
    x, y = batch(5, seed=2)
    targeted = PGD(model, objective="max", steps=2, step_size=2 / 255, targeted=True, seed=1)
    check_against_reference(targeted, model, x, y, targeted=True)
    mean = PGD(model, objective="max", norm="l2", eps=0.5, step_size=0.1, steps=2, reduction="mean", seed=1)
    check_against_reference(mean, model, x, y, reduction="mean")
    still = PGD(model, objective="max", norm="l1", eps=8.0, step_size=1.0, steps=2, random_start=False)
    check_against_reference(still, model, x, y, random_start=False)
    mu, sd = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    normed = PGD(model, objective="max", steps=2, step_size=2 / 255, seed=2).set_normalization_used(mu, sd)
    check_against_reference(normed, model, x, y, normalization=(mu, sd))


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("chains_at_once", [1, 2, 3])
def test_pgd_max_in_groups_of_chains_equals_all_at_once(kind, chains_at_once, monkeypatch):
    model = MODELS[kind]()
    x, y = batch(4, seed=3)
    atk = PGD(model, objective="max", steps=2, step_size=2 / 255, seed=7)
    together = atk(x, y)
    set_stack_limit(monkeypatch, chains_at_once * x.numel())
    grouped = atk(x, y)
    assert float((grouped - together).abs().max()) <= TOL
    check_against_reference(atk, model, x, y)


def test_pgd_max_batch_larger_than_the_stacking_limit(monkeypatch):
    """A batch bigger than the limit runs one chain at a time (no chain is split)."""
    model = sdn_model()
    x, y = batch(4, seed=6)
    set_stack_limit(monkeypatch, 10)
    check_against_reference(PGD(model, objective="max", steps=2, step_size=2 / 255), model, x, y)


def test_pgd_max_is_seeded_and_the_seed_matters():
    model = sdn_model()
    x, y = batch(4)
    a = PGD(model, objective="max", steps=2, seed=0)(x, y)
    assert torch.equal(PGD(model, objective="max", steps=2, seed=0)(x, y), a)
    assert not torch.equal(PGD(model, objective="max", steps=2, seed=1)(x, y), a)


# --------------------------------------------------------------------------- DeepFool / UAP

def reference_deepfool(self, x0, label, logits0=None):
    """DeepFool with one backward per candidate class (the textbook loop); returns what
    `UAP.deepfool` returns. It computes its own starting logits (`logits0` is ignored)."""
    b = x0.shape[0]
    with torch.no_grad():
        start = self.final_logits(x0)
    k = min(self.candidates, start.shape[-1])
    others = start.scatter(1, label.view(-1, 1), float("-inf")).topk(k - 1, dim=-1).indices
    rows = torch.arange(b)
    r_tot = torch.zeros_like(x0)
    active = torch.ones(b, dtype=torch.bool)
    for it in range(self.max_iter_df + 1):
        xp = (x0 + (1 + self.overshoot) * r_tot).requires_grad_(True)
        out = self.final_logits(xp)
        active = active & (out.detach().argmax(dim=-1) == label)
        if it == self.max_iter_df or not bool(active.any()):
            break
        best_pert = torch.full((b,), float("inf"))
        best_w = torch.zeros_like(x0)
        for j in range(k - 1):
            f = out[rows, others[:, j]] - out[rows, label]
            (w,) = torch.autograd.grad(f.sum(), xp, retain_graph=True)
            w_norm = w.flatten(1).norm(dim=1).clamp_min(1e-12)
            pert = f.detach().abs() / w_norm
            closer = pert < best_pert
            best_pert[closer] = pert[closer]
            best_w[closer] = (w / w_norm.view(-1, 1, 1, 1))[closer]
        r_tot = r_tot + ((best_pert.view(-1, 1, 1, 1) + 1e-4) * best_w) * active.view(-1, 1, 1, 1)
    return (1 + self.overshoot) * r_tot, ~active


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("candidates", [3, 10])
def test_deepfool_makes_the_steps_of_one_backward_per_candidate(kind, candidates):
    model = MODELS[kind]()
    x, _ = batch(6, seed=8)
    atk = UAP(model, max_iter_df=1, candidates=candidates)
    with frozen(model):
        label = atk.predict(x)
        # the steps one by one: DeepFool stopped after 1, 2, ... iterations agrees with the reference
        for iterations in range(1, 6):
            atk.max_iter_df = iterations
            dr, flipped = atk.deepfool(x, label)
            ref_dr, ref_flipped = reference_deepfool(atk, x, label)
            assert torch.equal(flipped, ref_flipped)
            assert float((dr - ref_dr).abs().max()) <= TOL * max(1.0, float(ref_dr.abs().max()))
        assert flipped.any()
        # the starting logits given by the caller are the ones it would compute
        with torch.no_grad():
            given = atk.final_logits(x)
        dr_given, flipped_given = atk.deepfool(x, label, given)
        assert torch.equal(flipped_given, flipped) and float((dr_given - dr).abs().max()) <= TOL


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("batch_size", [1, 3])
def test_uap_equals_uap_with_one_backward_per_candidate(kind, batch_size):
    model = MODELS[kind]()
    x, _ = batch(12, seed=10)
    # 4 of the 10 classes are DeepFool's candidates: which ones comes from the starting logits
    options = dict(n_images=10, max_passes=3, batch_size=batch_size, max_iter_df=4, target_fooling=1.0,
                   candidates=4, seed=3)
    atk = UAP(model, **options)
    ref = UAP(model, **options)
    ref.deepfool = types.MethodType(reference_deepfool, ref)
    delta, ref_delta = atk(x), ref(x)
    assert float((delta - ref_delta).abs().max()) <= TOL
    assert atk.last_info == ref.last_info
    assert float(delta.abs().max()) <= 8 / 255 + 1e-6 and float(delta.abs().max()) > 0
