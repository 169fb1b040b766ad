"""Adversarial training step vs. its floor (docs/method.md §10.3).

ours  : one step of `train_model`'s loop with an adversarial term (`AdversarialTraining`): crafting
        k attack steps against the model, the clean and adversarial forwards, one backward, one
        optimizer step;
floor : the same work as bare loops: one clean training step on the batch plus k forward+backward
        passes to the input (parameters frozen) plus one forward+backward of the adversarial batch.

Prints floor/ours (1.0 = no overhead beyond the attack's passes), for PGD on a CNN and for
IC-only training with DeepSloth, as ratios measured in one run.

    python benchmarks/adv_train_speed.py [--arch resnet56] [--batch 64] [--steps 5] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from deepsloth.attacks.objectives import uniform_ic_loss
from deepsloth.models import create_model
from deepsloth.train.adversarial import AdversarialTraining
from deepsloth.train.loop import build_optimizer, make_loss, set_train_mode, trainable_parameters
from deepsloth.train.recipes import default_recipe


def outs_of(model, x):
    out = model(x)
    return out if isinstance(out, list) else [out]


def ours_step(model, opt, loss_fn, adv, x, y, mode):
    set_train_mode(model, mode)
    outs = outs_of(model, x)
    loss = loss_fn(outs, y, 0)
    x_adv, y_adv = adv.inputs(model, x, y, seed=0)
    loss = loss + adv.loss(outs_of(model, x_adv), y_adv)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def floor_step(model, opt, loss_fn, x, y, mode, steps, objective):
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    xa = x.clone()
    for _ in range(steps):
        xi = xa.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(objective(outs_of(model, xi), y).sum(), xi)
        xa = (xi.detach() + 0.001 * g.sign()).clamp(0, 1)
    for p, f in flags:
        p.requires_grad_(f)
    set_train_mode(model, mode)
    loss = loss_fn(outs_of(model, x), y, 0) + sum(F.cross_entropy(o, y) for o in outs_of(model, xa))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def measure(arch, mode, attack, steps, batch, repeats):
    model = create_model(arch, "cifar10", sdn=mode != "cnn", seed=0)
    recipe = default_recipe(arch, mode, "fast")
    opt = build_optimizer(trainable_parameters(model, mode), recipe)
    loss_fn = make_loss(mode, recipe, None)
    adv = AdversarialTraining(attack, mode=mode, steps=steps)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(batch, 3, 32, 32, generator=g), torch.arange(batch) % 10
    if attack == "deepsloth":
        objective = lambda outs, _: -uniform_ic_loss(outs)   # noqa: E731
    else:
        objective = lambda outs, labels: F.cross_entropy(outs[-1], labels, reduction="none")   # noqa: E731
    ours_step(model, opt, loss_fn, adv, x, y, mode)   # warm-up
    times = {"ours": [], "floor": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        floor_step(model, opt, loss_fn, x, y, mode, steps, objective)
        times["floor"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours_step(model, opt, loss_fn, adv, x, y, mode)
        times["ours"].append(time.perf_counter() - t0)
    return statistics.median(times["floor"]) / statistics.median(times["ours"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet56")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"adversarial training step vs floor: {args.arch}, batch {args.batch}, {args.steps} attack steps, "
          f"{torch.get_num_threads()} threads")
    for mode, attack in (("cnn", "pgd"), ("ic-only", "deepsloth")):
        r = measure(args.arch, mode, attack, args.steps, args.batch, args.repeats)
        print(f"  {mode:8s} + {attack:9s}: ratio floor/ours = {r:.3f}  (1.0 = only the attack's passes on top of a "
              f"clean step)")


if __name__ == "__main__":
    main()
