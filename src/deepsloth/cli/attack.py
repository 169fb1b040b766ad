"""`deepsloth attack --model M --attack A [--norm N] [--scope S] ...`: craft, save, compare.

Per-sample attacks run on the first `--n` test images; universal / class-universal ones are crafted
on training images and applied to them. Results go to `<out>/<model>/adversarial/<cell>-<key>` (the
key hashes the weights, the resolved attack, the inputs and the seed, so different settings never
share a file and a rerun reuses the result) and the comparison to `<out>/<model>/<cell>-<key>.json`.
A killed per-sample run resumes from its finished batches (experiments.craft).
"""
from __future__ import annotations

import argparse

from .common import (AMP_CHOICES, DEFAULT_RESULTS, add_context, add_json, add_seed, amp_from, context_from, dist_from,
                     emit, model_dataset, nonempty,
                     nonneg_float, positive_int, positive_number, writable_dir)
from ..errors import DeepslothError
from .text import print_comparison

# How each attack option flag reads its value; which option of which attack it sets, and its help, come from the
# attacks' declarations (deepsloth.attacks.params)
FLAG_TYPES = {"--eps": positive_number, "--steps": positive_int, "--step-size": positive_number,
              "--random-start": {"yes": True, "no": False, "reference": "reference"},
              "--craft-n": positive_int, "--epochs": positive_int, "--preset": ("reference", "strong"),
              "--defence": nonempty, "--eot": positive_int, "--detector-weight": nonneg_float}


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def spec_options(args) -> dict:
    """Attack hyper-parameters given on the command line (None: the default of docs/method.md §5), mapped to the
    options of the attack named by --attack through its declaration."""
    from ..attacks.registry import CLASSES, parse_name

    attack = parse_name(args.attack)[0]
    flags = CLASSES[attack].PARAMS.flags()
    opts = {}
    for flag, kind in FLAG_TYPES.items():
        value = getattr(args, _dest(flag), None)
        if value is None:
            continue
        if flag not in flags:
            raise DeepslothError(f"{attack} takes no {flag}")
        opts[flags[flag][0]] = kind[value] if isinstance(kind, dict) else value
    amp = amp_from(args)   # not given: auto (bf16 where native) on CUDA, off elsewhere
    if amp != "off":
        opts["amp"] = amp
    return opts


def run(args) -> int:
    from ..attacks.registry import resolve_spec
    from ..experiments.craft import crafting_batch
    from ..experiments.grid import model_dir, run_cell

    opts = spec_options(args)
    ctx = None
    if opts.get("defence") is not None:
        from ..defences import parse_defence
        cap = parse_defence(opts["defence"])
        if cap.kind == "cap" and cap.cap is None:   # a cost or latency cap: the exit it stops at, for this model
            from ..experiments.deployment import resolve_cap
            dist = dist_from(args)
            ctx = context_from(args, device=dist.device)
            opts["defence"] = resolve_cap(cap, ctx)[0].spec
    spec = resolve_spec(args.attack, norm=args.norm, scope=args.scope, dataset=model_dataset(args.model),
                        device=args.device, **opts)
    out = writable_dir(args.out)
    if ctx is None:
        dist = dist_from(args)   # under torchrun: batches split across ranks, rank 0 writes and prints
        ctx = context_from(args, device=dist.device)
    folder = model_dir(out, ctx)
    batch = args.batch_size
    if batch is None and dist.active:   # the ranks split the batches: every rank takes rank 0's layout
        batch = dist.broadcast(crafting_batch(ctx, spec))
    rec, path, existed = run_cell(ctx, spec, folder, seed=args.seed, batch_size=batch, dist=dist,
                                  log=lambda s: print(s, flush=True) if not args.json and dist.is_main else None)
    dist.close()
    if not dist.is_main:
        return 0
    rec = dict(rec, file=str(path))
    return emit(rec, args.json, lambda r: (print_comparison(r), print(f"  wrote {r['file']}"
                                                                        + (" (existed)" if existed else ""))))


def flag_help() -> dict:
    """Per flag: the help text of every attack that takes it, from the declarations."""
    from ..attacks.registry import CLASSES

    out: dict = {}
    for name, cls in CLASSES.items():
        if name in ("pgd-avg", "pgd-max"):   # the PGD class, as pgd
            continue
        inherited = set(CLASSES["deepsloth"].PARAMS.params.values()) if name == "adaptive-deepsloth" else set()
        for p in cls.PARAMS:
            if p.flag and p not in inherited:
                out.setdefault(p.flag, []).append(f"{name}: {p.help}")
    return {flag: "; ".join(texts) for flag, texts in out.items()}


def add_attack_options(p: argparse.ArgumentParser) -> None:
    from ..attacks.registry import ATTACKS, SCOPES

    p.add_argument("--attack", default="deepsloth",
                   help=f"{', '.join(ATTACKS)}, or <attack>-<norm>-<scope> (default: deepsloth)")
    p.add_argument("--norm", default=None, choices=("linf", "l2", "l1"), help="default: linf")
    p.add_argument("--scope", default=None, choices=SCOPES,
                   help="sample (default), universal or class (class-universal); uap is universal")
    helps = flag_help()
    for flag, kind in FLAG_TYPES.items():
        if isinstance(kind, (dict, tuple)):
            p.add_argument(flag, default=None, choices=tuple(kind), help=helps[flag])
        else:
            p.add_argument(flag, type=kind, default=None, help=helps[flag])
    add_amp(p)
    add_seed(p)
    add_batch_size(p)


def add_batch_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="per-sample crafting batch, part of the result's key (default: 128 on CPU; on CUDA the largest "
                        "power of two up to 4096 that fits the free GPU memory)")


def add_amp(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amp", default=None, choices=AMP_CHOICES,
                   help="bf16: craft under bf16 autocast (about 2x faster for VGG16-BN / ResNet-56 on AMX CPUs and "
                        "on GPUs; none for MobileNet on CPU; many times slower on CPUs without native bf16); auto: "
                        "bf16 only where the device has it natively; off: fp32 (default: auto on CUDA, off elsewhere). Part "
                        "of the attack spec; evaluation stays fp32")


def register(sub) -> None:
    p = sub.add_parser(
        "attack", help="craft adversarial inputs or perturbations and compare clean vs attacked",
        description="Run an attack (PGD family, UAP or DeepSloth) against a multi-exit model and compare clean "
                    "and attacked inputs under the clean-calibrated thresholds (efficacy, accuracy, exits, "
                    "IoT latency). Results are content-named under --out; a killed run resumes.")
    add_context(p)
    add_attack_options(p)
    p.add_argument("--out", default=DEFAULT_RESULTS, type=nonempty,
                   help=f"results folder (default: ./{DEFAULT_RESULTS})")
    add_json(p)
    p.set_defaults(func=run)
