"""`deepsloth evaluate --model M [--inputs RESULT] [--n N] [--rad 5 15] [--plot PNG] [--out JSON]`.

Clean inputs: early-exit accuracy, efficacy, exit histogram and mean cost per RAD budget, with the
thresholds calibrated on clean test images (cached by content). With `--inputs` (an attack result):
the clean-vs-attacked comparison of experiments.compare. Everything comes from batched all-exit
forwards.
"""
from __future__ import annotations

from .common import add_context, add_json, context_from, dist_from, emit, nonempty, writable_file
from .text import pct, print_comparison


def run(args) -> int:
    from ..experiments.evaluate import evaluate_clean, evaluate_result

    for flag in ("plot", "out"):
        if getattr(args, flag):
            writable_file(getattr(args, flag), f"--{flag}")
    dist = dist_from(args)   # under torchrun: the forwards are split across ranks, rank 0 reports
    ctx = context_from(args, device=dist.device)
    if dist.active:
        from ..experiments.compare import compare
        from ..experiments.results import load_result
        from ..experiments.sharded import outputs_sharded
        crafted = load_result(ctx, args.inputs) if args.inputs else None
        clean = outputs_sharded(ctx, ctx.test.images, dist, desc="clean forward")
        adv = outputs_sharded(ctx, crafted.inputs, dist, desc="attacked forward") if crafted else None
        dist.close()
        if not dist.is_main:
            return 0
        ctx._cache["clean_out"] = clean
        rec = compare(ctx, crafted, adv_outputs=adv)
        if crafted is not None:
            rec["crafting"]["file"] = str(args.inputs)
    else:
        rec = evaluate_result(ctx, args.inputs) if args.inputs else evaluate_clean(ctx)
    if args.plot:
        from ..experiments.figures import plot_eec_grid
        from ..experiments.report import group_by_model
        plot_eec_grid(group_by_model([rec]), args.plot)
        rec["plot"] = str(args.plot)
    if args.out:
        from ..io import write_json
        write_json(args.out, rec)
    return emit(rec, args.json, print_clean if not args.inputs else print_comparison)


def print_clean(r: dict) -> None:
    m, d, cal = r["model"], r["data"], r["calibration"]
    print(f"{m['name']} ({m['arch']}, {m['mode']}, {m['exits']} exits) on {d['n']} clean {m['dataset']} test images")
    print(f"thresholds: {r['policy']['name']} policy, calibrated on {cal['n']} clean test images "
          f"({'reused' if cal['cached'] else 'new'}; {cal['file'] or 'not cached'})")
    print(f"final-exit accuracy  {pct(r['clean']['final_accuracy'])}")
    print("per-exit accuracy %  " + " ".join(f"{a * 100:.1f}" for a in r["clean"]["per_exit_accuracy"]))
    for k, e in r["rad"].items():
        c = e["clean"]
        print(f"RAD {k:>4}%: threshold {e['threshold']:g}  accuracy {pct(c['accuracy'])}  efficacy "
              f"{c['efficacy']:.3f}  mean cost {c['mean_cost']:.3f}")
        print("           exits    " + " ".join(str(x) for x in c["exit_counts"]))
    if r.get("plot"):
        print(f"EEC plot: {r['plot']}")


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="early-exit accuracy, efficacy and exits per RAD budget (clean or attacked)",
                       description="Evaluate a multi-exit model with early exit on clean test images or on an attack "
                                   "result. Thresholds are calibrated on clean test images (the smallest q whose "
                                   "early-exit accuracy stays above (1 - RAD) x the final exit's; docs/method.md §4.2).")
    add_context(p)
    p.add_argument("--inputs", default=None, type=nonempty,
                   help="attack result (.safetensors/.json) to compare with the clean inputs")
    p.add_argument("--plot", default=None, type=nonempty, metavar="PNG", help="write the EEC curves")
    p.add_argument("--out", default=None, type=nonempty, metavar="JSON", help="also write the result to this JSON file")
    add_json(p)
    p.set_defaults(func=run)
