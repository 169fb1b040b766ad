"""Per-step cost of DeepSloth (l_inf, per-sample) against the floor on a ResNet-56 SDN.

floor : a bare loop of one forward of all exits plus one backward to the input (parameters
        frozen, eval mode, same batch) -- what any input-gradient attack must pay per step;
ours  : `DeepSloth(model, norm="linf", steps=S)(x)`, timed as a whole (random start and
        projections included) and divided by S;
naive : the same loop with parameter gradients left on and `loss.backward()` (a
        torchattacks-style step that also computes weight gradients), for reference.

Prints ratios, not seconds: floor_time / our_time (target >= 0.85) and naive_time / our_time.

Final-exit PGD (`--pgd`, on by default): our PGD against a final-exit-only floor (a bare loop of
the backbone's forward and backward to the input, no internal classifiers; target >= 0.95), and
torchattacks' PGD on `exit_view(model)` against ours (when torchattacks is installed), plus the
saving of the exit-aware forward over running the whole SDN at every step.

With `--amp` it prints only the speed-up of crafting under bf16 autocast (`--amp bf16` on `attack`
and `grid`, docs/method.md §3.7): the same DeepSloth step in fp32 and in bf16 on a channels-last
model (as `attack` and `grid` run it on CPU), fp32_time / bf16_time.

    python benchmarks/attack_speed.py [--model DIR|zoo-name] [--arch resnet56] [--batch 128] [--steps 10]
                                      [--repeats 3] [--threads N] [--device auto] [--amp]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from deepsloth.attacks import PGD, DeepSloth, uniform_ic_loss
from deepsloth.device import resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def floor_loop(model, x, steps: int) -> None:
    for _ in range(steps):
        xi = x.detach().requires_grad_(True)
        out = model(xi)
        (g,) = torch.autograd.grad(sum(o.sum() for o in out), xi)


def naive_loop(model, x, steps: int) -> None:
    x_adv = x.clone()
    for _ in range(steps):
        xi = x_adv.detach().requires_grad_(True)
        model.zero_grad(set_to_none=True)
        loss = uniform_ic_loss(model(xi)).mean()
        loss.backward()
        x_adv = (x + (xi.detach() - 0.002 * xi.grad.sign() - x).clamp(-8 / 255, 8 / 255)).clamp(0, 1)


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory or zoo name (default: untrained ResNet-56 SDN)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    ap.add_argument("--no-pgd", action="store_true", help="skip the final-exit PGD comparison")
    ap.add_argument("--arch", default="resnet56", help="architecture of the untrained SDN when --model is not given")
    ap.add_argument("--amp", action="store_true", help="only: DeepSloth step in fp32 vs under bf16 autocast")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.model:
        from deepsloth.models import create_model
        model = create_model(args.model, device=device)
        meta, _ = model.meta, model.model_dir
        size, what = int(meta.get("input_size") or 32), f"{args.model} ({meta.get('arch')}, {meta.get('dataset')})"
    else:
        from deepsloth.models import create_model
        model = create_model(args.arch, "cifar10", sdn=True, seed=0).to(device)
        size, what = 32, f"{args.arch} SDN, CIFAR-10 shape, untrained weights"
    model.eval()
    x = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    atk = DeepSloth(model, norm="linf", steps=args.steps, seed=0)
    if args.amp:
        amp_report(model, x, atk, args, device, what)
        return

    def ours():
        atk(x)

    def floor():
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            floor_loop(model, x, args.steps)
        finally:
            for p in model.parameters():
                p.requires_grad_(True)

    def naive():
        naive_loop(model, x, args.steps)

    # warm up (allocator, kernels), then interleave the measurements
    DeepSloth(model, norm="linf", steps=2)(x)
    timed(floor, device)
    times = {"floor": [], "ours": [], "naive": []}
    for _ in range(args.repeats):
        times["floor"].append(timed(floor, device) / args.steps)
        times["ours"].append(timed(ours, device) / args.steps)
        if not args.no_naive:
            times["naive"].append(timed(naive, device) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"DeepSloth l_inf per-sample step on {what}: batch {args.batch}, {args.steps} steps x "
          f"{args.repeats} repeats, {device}, {torch.get_num_threads()} threads")
    print(f"  ratio floor/ours = {med['floor'] / med['ours']:.3f}  (target >= 0.85; 1.0 = as fast as a bare "
          f"forward+backward to the input)")
    if "naive" in med:
        print(f"  ratio naive/ours = {med['naive'] / med['ours']:.3f}  (naive: parameter gradients on, loss.backward())")
    if not args.no_pgd:
        pgd_report(model, x, args, device)


def amp_report(model, x, atk, args, device, what) -> None:
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    bf = DeepSloth(model, norm="linf", steps=args.steps, seed=0)
    bf.amp = "bf16"
    atk(x[:8])
    bf(x[:8])   # warm-up of both kernel sets
    times = {"fp32": [], "bf16": []}
    for _ in range(args.repeats):
        times["fp32"].append(timed(lambda: atk(x), device) / args.steps)
        times["bf16"].append(timed(lambda: bf(x), device) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"DeepSloth l_inf per-sample step on {what}: batch {args.batch}, {args.steps} steps x "
          f"{args.repeats} repeats, {device}, {torch.get_num_threads()} threads, channels-last on CPU")
    print(f"  ratio fp32/bf16 = {med['fp32'] / med['bf16']:.3f}  (the speed-up of --amp bf16)")


def pgd_report(model, x, args, device) -> None:
    """Final-exit PGD: ours vs the backbone-only floor, vs the whole SDN, vs torchattacks."""
    import torch.nn.functional as F
    from deepsloth.models import exit_view

    y = torch.arange(len(x), device=device) % 10
    backbone = exit_view(model)   # the final exit without the internal classifiers

    def floor():
        flags = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            for _ in range(args.steps):
                xi = x.detach().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(backbone(xi), y, reduction="sum"), xi)
        finally:
            for p, f in flags:
                p.requires_grad_(f)

    class WholeSDN(torch.nn.Module):   # hides forward_exits: every step runs every exit
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, z):
            return self.m(z)

    pgd = PGD(model, steps=args.steps, step_size=2 / 255, seed=0)
    whole = PGD(WholeSDN(model), steps=args.steps, step_size=2 / 255, seed=0)
    runs = {"floor": floor, "ours": lambda: pgd(x, y), "whole": lambda: whole(x, y)}
    try:
        import torchattacks
        ta = torchattacks.PGD(backbone, eps=8 / 255, alpha=2 / 255, steps=args.steps)
        runs["torchattacks"] = lambda: ta(x, y)
    except ImportError:
        pass
    runs["ours"]()
    times = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, fn in runs.items():
            times[k].append(timed(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"Final-exit PGD ({args.steps} steps, batch {len(x)}):")
    print(f"  ratio floor/ours = {med['floor'] / med['ours']:.3f}  (target >= 0.95; floor: backbone forward+backward "
          f"to the input, no ICs)")
    print(f"  ratio whole-SDN/ours = {med['whole'] / med['ours']:.3f}  (the same PGD running every exit at every step)")
    if "torchattacks" in med:
        print(f"  ratio torchattacks/ours = {med['torchattacks'] / med['ours']:.3f}  (torchattacks.PGD on exit_view(model))")


if __name__ == "__main__":
    main()
