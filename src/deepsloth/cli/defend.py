"""`deepsloth defend --model M [--defences D ...] [--n 500]`: each defence against the non-adaptive and the adaptive
attacker (experiments.defend, docs/defences.md)."""
from __future__ import annotations

import sys

from .attack import add_amp, add_batch_size
from .common import (DEFAULT_RESULTS, add_data_root, add_device, add_json, add_seed, amp_from, nonempty, positive_int,
                     print_json, rad_value, writable_dir)


def run(args) -> int:
    from ..defences import parse_defence
    from ..experiments.defend import run_defences
    from ..experiments.studies import defences_section

    for text in args.defences:   # a bad name stops here, before any model is loaded
        parse_defence(text)
    out = writable_dir(args.out)
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    rows = []
    for model in args.model:
        rows += run_defences(model, args.defences, n=args.n, out_dir=out, seed=args.seed, device=args.device,
                             amp=amp_from(args), rads=args.rad, fit_n=args.fit_n, probe_n=args.probe_n, eot=args.eot,
                             batch_size=args.batch_size, data_root=args.data_root, log=log)
    if args.json:
        print_json(rows)
    else:
        print("\n".join(defences_section(rows)))
        print(f"\nrecords under {out}; tables: deepsloth report {out}")
    return 0


def register(sub) -> None:
    from ..experiments.defend import DEFAULT_DEFENCES, STUDY_EOT

    p = sub.add_parser("defend", help="defences against slowdown, each against a non-adaptive and an adaptive attacker",
                       description="Per model and defence: the defended deployment's clean accuracy and efficacy, "
                                   "per-sample and universal DeepSloth (l_inf) crafted without and with knowledge of "
                                   "the defence, detection rates for detectors, PGD accuracy (docs/defences.md). "
                                   "Finished records are kept, so a killed study resumes.")
    p.add_argument("--model", nargs="+", required=True, type=nonempty, help="model directories or zoo names")
    p.add_argument("--defences", nargs="+", default=list(DEFAULT_DEFENCES), metavar="D",
                   help="defences as name[:param=value,...] (default: " + " ".join(DEFAULT_DEFENCES) + ")")
    p.add_argument("--n", "--first-n", dest="n", type=positive_int, default=500, help="first N test images (500)")
    p.add_argument("--rad", type=rad_value, nargs="+", default=[5.0, 15.0], metavar="R",
                   help="relative accuracy drop budgets in percent (default: 5 15)")
    p.add_argument("--fit-n", type=positive_int, default=500,
                   help="detectors: training images (and their attacked versions) they are fitted on; their "
                        "thresholds are set on clean test images after the first N (500)")
    p.add_argument("--probe-n", type=positive_int, default=100,
                   help="detectors: test images the adaptive attack's weight is searched on (100)")
    p.add_argument("--eot", type=positive_int, default=STUDY_EOT,
                   help=f"randomised transforms: draws the adaptive attack averages per step ({STUDY_EOT})")
    add_batch_size(p)
    add_amp(p)
    add_seed(p)
    p.add_argument("--out", default=DEFAULT_RESULTS, help=f"results folder (default: ./{DEFAULT_RESULTS})")
    add_json(p)
    add_device(p)
    add_data_root(p)
    p.set_defaults(func=run)
