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

With `--batched` it prints only how the attacks that batch work a plain loop would do one call at a
time compare with that loop, on the same inputs and seed (sequential_time / our_time, and the
largest difference between the two outputs, which should be float rounding at most):
PGD-max (its K chains stacked into one batch, against one chain after another) and UAP (DeepFool's
candidate-class gradients from one backward, against one backward per candidate class).

With `--adaptive DEFENCE` (e.g. `jpeg:quality=75`, `resize-pad:shrink=4`, `exit-cap:k=13`, or the folder of a
detector `deepsloth defend` saved) it prints only the adaptive DeepSloth step (`adaptive-deepsloth`,
docs/defences.md) against its own floor: the same bare loop of forward and backward to the input through the
defended deployment (the transform, repeated over the attack's EOT draws; for a cap, the network up to the exits
the attack reads; for a detector, its score too). Target >= 0.85, as for the others.

With `--amp` it prints only the speed-up of crafting under bf16 autocast (`--amp bf16` on `attack`
and `grid`, docs/method.md §3.7): the same DeepSloth step in fp32 and in bf16 on a channels-last
model (as `attack` and `grid` run it on CPU), fp32_time / bf16_time.

    python benchmarks/attack_speed.py [--model DIR|zoo-name] [--arch resnet56] [--batch 128] [--steps 10]
                                      [--repeats 3] [--threads N] [--device auto] [--amp]
                                      [--batched [--uap-images 4]] [--adaptive DEFENCE]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from deepsloth.attacks import PGD, UAP, DeepSloth, exit_ce, frozen, sum_ce, uniform_ic_loss
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
    ap.add_argument("--arch", default="resnet56",
                    help="architecture of the untrained model when --model is not given (e.g. msdnet, vit)")
    ap.add_argument("--amp", action="store_true", help="only: DeepSloth step in fp32 vs under bf16 autocast")
    ap.add_argument("--batched", action="store_true",
                    help="only: PGD-max and UAP against their one-call-at-a-time loops")
    ap.add_argument("--uap-images", type=int, default=4, help="--batched: UAP crafting images (one pass)")
    ap.add_argument("--adaptive", default=None, metavar="DEFENCE",
                    help="only: the adaptive DeepSloth step against the defended deployment's floor")
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
        from deepsloth.models.registry import MULTI_EXIT
        model = create_model(args.arch, "cifar10", sdn=True, seed=0).to(device)
        kind = "multi-exit" if args.arch in MULTI_EXIT else "SDN"
        size, what = 32, f"{args.arch} {kind}, CIFAR-10 shape, untrained weights"
    model.eval()
    x = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    atk = DeepSloth(model, norm="linf", steps=args.steps, seed=0)
    if args.amp:
        amp_report(model, x, atk, args, device, what)
        return
    if args.batched:
        batched_report(model, x, args, device, what)
        return
    if args.adaptive:
        adaptive_report(model, x, args, device, what)
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


def pgd_max_sequential(atk: PGD, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PGD-max as a loop: one chain per exit after another, then the best chain per input."""
    g = torch.Generator().manual_seed(atk.seed)
    x = atk.prepare(x)
    with frozen(atk.model), torch.enable_grad():
        with torch.no_grad():
            k = len(atk.logits(x[:1]))
        best, best_score = x.clone(), torch.full((len(x),), -float("inf"), device=x.device)
        for i in range(k):
            cand = atk.chain(x, y, exit_ce(i, k), g)
            with torch.no_grad():
                score = sum_ce(atk.logits(cand), y)
            better = score > best_score
            best = torch.where(better.view(-1, 1, 1, 1), cand, best)
            best_score = torch.where(better, score, best_score)
    return best


class SequentialDeepFoolUAP(UAP):
    """UAP whose DeepFool takes each candidate class's gradient with its own backward (and computes
    its own starting logits)."""

    def deepfool(self, x0, label, logits0=None):
        b = x0.shape[0]
        with torch.no_grad():
            logits0 = self.final_logits(x0)
        k = min(self.candidates, logits0.shape[-1])
        others = logits0.scatter(1, label.view(-1, 1), float("-inf")).topk(k - 1, dim=-1).indices
        rows = torch.arange(b, device=x0.device)
        r_tot = torch.zeros_like(x0)
        active = torch.ones(b, dtype=torch.bool, device=x0.device)
        flat = (-1,) + (1,) * (x0.dim() - 1)
        for it in range(self.max_iter_df + 1):
            xp = (x0 + (1 + self.overshoot) * r_tot).requires_grad_(True)
            out = self.final_logits(xp)
            active = active & (out.detach().argmax(dim=-1) == label)
            if it == self.max_iter_df or not bool(active.any()):
                break
            fs, ws = [], []
            for j in range(k - 1):
                f = out[rows, others[:, j]] - out[rows, label]
                (w,) = torch.autograd.grad(f.sum(), xp, retain_graph=j < k - 2)
                fs.append(f.detach())
                ws.append(w)
            f, w = torch.stack(fs, 1), torch.stack(ws, 1)                  # [B, m], [B, m, ...]
            w_norm = w.flatten(2).norm(dim=2).clamp_min(1e-12)
            pert = f.abs() / w_norm
            best = pert.argmin(dim=1)
            step = (pert[rows, best].view(flat) + 1e-4) * w[rows, best] / w_norm[rows, best].view(flat)
            r_tot = r_tot + step * active.view(flat)
        return (1 + self.overshoot) * r_tot, ~active


def adaptive_report(model, x, args, device, what) -> None:
    """The adaptive DeepSloth step against the floor of the defended forward it differentiates."""
    from deepsloth.attacks import AdaptiveDeepSloth

    atk = AdaptiveDeepSloth(model, defence=args.adaptive, steps=args.steps, seed=0)
    d = atk.defence

    def floor():
        gen = torch.Generator().manual_seed(0)
        with frozen(model):
            for _ in range(args.steps):
                xi = x.detach().requires_grad_(True)
                z = xi.repeat(atk.eot, 1, 1, 1) if atk.eot > 1 else xi
                if d.transform is not None:
                    z = d.transform(z, generator=gen)
                if d.cap is not None and hasattr(model, "forward_exits"):
                    out = model.forward_exits(z, max(0, d.cap - 1))
                else:
                    out = model(z)
                total = sum(o.float().sum() for o in out)
                if d.detector is not None:   # the detector's score is part of the defended loss
                    total = total + d.detector.score(z if d.detector.name == "input" else list(out)).float().sum()
                (g,) = torch.autograd.grad(total, xi)

    def ours():
        atk(x)

    AdaptiveDeepSloth(model, defence=args.adaptive, steps=2, seed=0)(x)   # warm up
    timed(floor, device)
    times = {"floor": [], "ours": []}
    for _ in range(args.repeats):
        times["floor"].append(timed(floor, device))
        times["ours"].append(timed(ours, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"adaptive DeepSloth l_inf per-sample step against {d.spec} (EOT {atk.eot}) on {what}: batch "
          f"{args.batch}, {args.steps} steps x {args.repeats} repeats, {device}, {torch.get_num_threads()} threads")
    print(f"  ratio floor/ours = {med['floor'] / med['ours']:.3f}  (target >= 0.85; floor: forward+backward to the "
          f"input through the defended deployment)")


def batched_report(model, x, args, device, what) -> None:
    """PGD-max and UAP against their one-call-at-a-time loops: speed ratio and largest output difference."""
    y = torch.arange(len(x), device=device) % 10
    pgd = PGD(model, objective="max", steps=args.steps, step_size=2 / 255, seed=0)
    xu = x[:args.uap_images]
    uap, uap_seq = (cls(model, n_images=len(xu), max_passes=1, seed=0) for cls in (UAP, SequentialDeepFoolUAP))
    runs = {"pgd-max": (lambda: pgd(x, y), lambda: pgd_max_sequential(pgd, x, y)),
            "uap": (lambda: uap(xu), lambda: uap_seq(xu))}
    print(f"Batched attacks against their sequential loops on {what}, {device}, {torch.get_num_threads()} threads")
    for name, (ours, sequential) in runs.items():
        diff = float((ours() - sequential()).abs().max())     # also the warm-up
        times = {"ours": [], "sequential": []}
        for _ in range(args.repeats):
            times["ours"].append(timed(ours, device))
            times["sequential"].append(timed(sequential, device))
        med = {k: statistics.median(v) for k, v in times.items()}
        size = (f"batch {len(x)}, {args.steps} steps" if name == "pgd-max"
                else f"{len(xu)} images, 1 pass")
        print(f"  {name} ({size}): ratio sequential/ours = {med['sequential'] / med['ours']:.3f}, "
              f"max |ours - sequential| = {diff:.2e}")


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
