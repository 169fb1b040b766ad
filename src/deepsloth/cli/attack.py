"""`deepsloth attack --model M --attack A [--norm N] [--scope S] ...`: craft, save, compare.

Per-sample attacks run on the first `--n` test images; universal / class-universal ones are crafted
on training images and applied to them. Results go to `<out>/<model>/adversarial/<cell>-<key>` (the
key hashes the weights, the resolved attack, the inputs and the seed, so different settings never
share a file and a rerun reuses the result) and the comparison to `<out>/<model>/<cell>-<key>.json`.
A killed per-sample run resumes from its finished batches (experiments.craft).
"""
from __future__ import annotations

import argparse

from .common import (AMP_CHOICES, DEFAULT_RESULTS, add_context, add_json, add_seed, context_from, dist_from, emit,
                     model_dataset, nonempty,
                     positive_int, positive_number, writable_dir)
from .text import print_comparison

ATTACKS = ("deepsloth", "pgd", "pgd-avg", "pgd-max", "uap")


def spec_options(args) -> dict:
    """Attack hyper-parameters given on the command line (None: the default of docs/method.md §5)."""
    opts = {"eps": args.eps, "steps": args.steps, "step_size": args.step_size}
    if args.attack.startswith("uap"):   # DeepFool iterations; UAP has no step size
        opts["max_iter_df"] = opts.pop("steps")
    if getattr(args, "random_start", None) is not None:
        opts["random_start"] = {"yes": True, "no": False, "reference": "reference"}[args.random_start]
    if getattr(args, "amp", "off") != "off":
        opts["amp"] = args.amp
    for flag in ("craft_n", "epochs", "preset"):
        value = getattr(args, flag, None)
        if value is not None:
            opts["n_images" if flag == "craft_n" else "max_passes" if (flag == "epochs" and args.attack.startswith("uap"))
                 else flag] = value
    return {k: v for k, v in opts.items() if v is not None}


def run(args) -> int:
    from ..attacks.registry import resolve_spec
    from ..experiments.grid import model_dir, run_cell

    spec = resolve_spec(args.attack, norm=args.norm, scope=args.scope, dataset=model_dataset(args.model),
                        device=args.device, **spec_options(args))
    out = writable_dir(args.out)
    dist = dist_from(args)   # under torchrun: batches split across ranks, rank 0 writes and prints
    ctx = context_from(args, device=dist.device)
    folder = model_dir(out, ctx)
    rec, path, existed = run_cell(ctx, spec, folder, seed=args.seed, batch_size=args.batch_size, dist=dist,
                                  log=lambda s: print(s, flush=True) if not args.json and dist.is_main else None)
    dist.close()
    if not dist.is_main:
        return 0
    rec = dict(rec, file=str(path))
    return emit(rec, args.json, lambda r: (print_comparison(r), print(f"  wrote {r['file']}"
                                                                        + (" (existed)" if existed else ""))))


def add_attack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attack", default="deepsloth",
                   help=f"{', '.join(ATTACKS)}, or <attack>-<norm>-<scope> (default: deepsloth)")
    p.add_argument("--norm", default=None, choices=("linf", "l2", "l1"), help="default: linf")
    p.add_argument("--scope", default=None, choices=("sample", "universal", "class"),
                   help="sample (default), universal or class (class-universal); uap is universal")
    p.add_argument("--eps", type=positive_number, default=None, help="perturbation budget, e.g. 8/255")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="iterations (per batch for universal DeepSloth; DeepFool iterations for uap)")
    p.add_argument("--step-size", type=positive_number, default=None, help="step size / learning rate")
    p.add_argument("--random-start", default=None, choices=("yes", "no", "reference"),
                   help="DeepSloth/PGD random start; reference: DeepSloth's original [-0.002, 0.002] start")
    p.add_argument("--craft-n", type=positive_int, default=None,
                   help="universal/class attacks: training images to craft on (DeepSloth 250, uap 100)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="universal DeepSloth: passes over the crafting images (1); uap: at most this many passes")
    p.add_argument("--preset", default=None, choices=("reference", "strong"),
                   help="universal/class DeepSloth data schedule: reference (250 images, 1 epoch) or strong "
                        "(2500 images, 2 epochs)")
    add_amp(p)
    add_seed(p)
    p.add_argument("--batch-size", type=positive_int, default=128, help="per-sample crafting batch")


def add_amp(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amp", default="off", choices=AMP_CHOICES,
                   help="bf16: craft under bf16 autocast (about 2x faster for VGG16-BN / ResNet-56 on AMX CPUs and "
                        "on GPUs; none for MobileNet on CPU; many times slower on CPUs without native bf16); auto: "
                        "bf16 only where the device has it natively. Part of the attack spec; evaluation stays fp32")


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
