"""`deepsloth transfer`: black-box transfer from a surrogate to a victim (experiments.transfer).

    deepsloth transfer --surrogate A --victim B [--attacks ...] [--n N]
    deepsloth transfer scenario1 --victim V --arch A --fractions 10 25 50 100
    deepsloth transfer scenario2 --arch A --classes 5 6 7 --shared 0 2 4
"""
from __future__ import annotations

import sys

from .common import (DEFAULT_RESULTS, add_data_root, add_device, add_json, add_seed, nonempty, positive_float,
                     positive_int, print_json, rad_value, writable_dir)


def run(args) -> int:
    from ..errors import DeepslothError
    from ..experiments import transfer as tr
    from ..experiments.context import load_context

    out = writable_dir(args.out)
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    cells = args.attacks
    common = dict(recipe=args.recipe, epochs=args.epochs, ic_epochs=args.ic_epochs, seed=args.seed, log=log)
    if args.scenario is None:
        if not (args.surrogate and args.victim):
            raise DeepslothError("transfer needs --surrogate and --victim (or a scenario: scenario1, scenario2)")
        victim = load_context(args.victim, n=args.n, device=args.device, data_root=args.data_root, rads=args.rad)
        rows = tr.run_transfer(victim, args.surrogate, cells, out, seed=args.seed, log=log)
    elif args.scenario == "scenario1":
        if not (args.victim and args.arch and args.fractions):
            raise DeepslothError("scenario1 needs --victim, --arch and --fractions")
        victim = load_context(args.victim, n=args.n, device=args.device, data_root=args.data_root)
        rows = tr.scenario1(victim, args.arch, args.fractions, out, cells=cells, **common)
    else:
        if not (args.arch and args.classes and args.shared is not None):
            raise DeepslothError("scenario2 needs --arch, --classes and --shared")
        rows = tr.scenario2(args.arch, args.classes, args.shared, out, dataset=args.dataset, cells=cells, n=args.n,
                            device=args.device, data_root=args.data_root, **common)
    if args.json:
        print_json(rows)
    else:
        print(f"done: {len(rows)} transfer results under {out}; tables: deepsloth report {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("transfer", help="black-box transfer from a surrogate to a victim, and the two scenarios",
                       description="Craft on a surrogate, evaluate on the victim with the victim's clean-calibrated "
                                   "thresholds, next to the white-box reference (docs/method.md §10.2).")
    p.add_argument("scenario", nargs="?", choices=("scenario1", "scenario2"), default=None,
                   help="scenario1: surrogates on a share of the victim's data; scenario2: different class subsets")
    p.add_argument("--surrogate", type=nonempty, default=None, help="surrogate model (zoo name or directory)")
    p.add_argument("--victim", type=nonempty, default=None, help="victim model (zoo name or directory)")
    p.add_argument("--attacks", nargs="+", default=["deepsloth-linf-sample", "deepsloth-linf-universal"],
                   help="attack cells (default: per-sample and universal DeepSloth, l_inf)")
    p.add_argument("--n", "--first-n", dest="n", type=positive_int, default=None, help="first N victim test images")
    p.add_argument("--rad", type=rad_value, nargs="+", default=[5.0, 15.0], metavar="R",
                   help="relative accuracy drop budgets in percent, each in (0, 100) (default: 5 15)")
    p.add_argument("--arch", default=None, help="scenarios: architecture of the trained models")
    p.add_argument("--fractions", type=positive_float, nargs="+", default=None, help="scenario1: percent of the data")
    p.add_argument("--classes", type=positive_int, nargs="+", default=None, help="scenario2: class counts c")
    p.add_argument("--shared", type=int, nargs="+", default=None, help="scenario2: shared class counts")
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "tinyimagenet"), help="scenario2's dataset")
    p.add_argument("--recipe", default="fast", choices=("fast", "paper"), help="scenarios: training recipe")
    p.add_argument("--epochs", type=positive_int, default=None, help="scenarios: CNN epochs")
    p.add_argument("--ic-epochs", type=positive_int, default=None, help="scenarios: IC-only epochs")
    add_seed(p)
    p.add_argument("--out", default=DEFAULT_RESULTS, help=f"results folder (default: ./{DEFAULT_RESULTS})")
    add_json(p)
    add_device(p)
    add_data_root(p)
    p.set_defaults(func=run)
