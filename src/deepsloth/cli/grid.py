"""`deepsloth grid --model M [M ...] [--attacks all|LIST] [--norms ...] [--n N] [--out DIR]`.

Every cell of the paper's attack grid (clean; PGD, PGD-avg, PGD-max, UAP in l_inf; DeepSloth in
l_inf / l_2 / l_1 x per-sample / universal / class-universal), one comparison file per cell under
`<out>/<model>/`. Finished cells are skipped, so a killed grid resumes where it stopped; render the
tables with `deepsloth report <out>`.
"""
from __future__ import annotations

import sys

from ..errors import DeepslothError
from .attack import add_amp, add_batch_size
from .common import (DEFAULT_RESULTS, add_context, add_json, add_seed, amp_from, context_from, dist_from, nonempty,
                     print_json,
                     writable_dir)


def run(args) -> int:
    from ..experiments.craft import DEFAULT_BATCH, crafting_batch
    from ..experiments.grid import grid_specs, run_grid

    out = writable_dir(args.out)
    rows_all = {}
    dist = dist_from(args)   # under torchrun: per-sample cells split across ranks, rank 0 writes
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    if not dist.is_main:
        log = lambda s: None  # noqa: E731
    # Every model, its inputs and its attack list are checked before the first cell runs: a bad
    # second model must not be found only after the first model's grid was written.
    plans = []
    for model in args.model:
        ctx = context_from(args, model, device=dist.device)
        plans.append((ctx, grid_specs(args.attacks, norms=args.norms, dataset=ctx.dataset,
                                      amp=amp_from(args, ctx.device), device=ctx.device)))
    names = [ctx.name for ctx, _ in plans]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DeepslothError(f"two models would share the results folder {out / twice[0]}: "
                             f"give models with different directory names")
    for ctx, specs in plans:
        log(f"grid on {ctx.name}: {len(specs) + 1} cells, {ctx.n} test images -> {out / ctx.name}")
        batch = args.batch_size
        if batch is None and dist.active:   # the ranks split batches: every rank takes rank 0's layout
            batch = dist.broadcast(min([crafting_batch(ctx, s) for s in specs if s.scope == "sample"]
                                       or [DEFAULT_BATCH]))
        rows_all[ctx.name] = run_grid(ctx, specs, out, seed=args.seed, batch_size=batch, log=log, dist=dist)
    dist.close()
    if not dist.is_main:
        return 0
    if args.json:
        print_json(rows_all)
    else:
        print(f"done; tables: deepsloth report {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("grid", help="run the paper's attack grid on one or more models (resumable)",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    add_context(p, several_models=True)
    p.add_argument("--attacks", nargs="+", default=["all"],
                   help="all, or attack names (deepsloth = every DeepSloth cell; cells like deepsloth-l2-class)")
    p.add_argument("--norms", nargs="+", default=None, choices=("linf", "l2", "l1"), help="keep only these norms")
    add_amp(p)
    add_seed(p)
    add_batch_size(p)
    p.add_argument("--out", default=DEFAULT_RESULTS, type=nonempty,
                   help=f"results folder (default: ./{DEFAULT_RESULTS})")
    add_json(p)
    p.set_defaults(func=run)
