"""`deepsloth audit`: clean vs. attacked efficacy, accuracy and latency of a multi-exit model."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..experiments.audit import DEFAULT_N, AuditConfig, format_table, run_audit
from ..models.zoo import DEFAULT_MODEL
from .common import add_data_root, add_device, add_json, positive_int, print_json


def run(args) -> int:
    cfg = AuditConfig(model=args.model, data=args.data, n=args.n, rads=tuple(args.rad), seed=args.seed,
                      batch_size=args.batch_size, device=args.device, data_root=args.data_root)
    out = Path(args.out) if args.out else Path("deepsloth-audit")
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    report = run_audit(cfg, out, log=log)
    if args.json:
        print_json(report)
        return 0
    print()
    print(format_table(report))
    print()
    rad = next(iter(report["thresholds"]))
    ds = report["sets"].get("deepsloth")
    if ds:
        print(f"per-sample DeepSloth cuts efficacy at RAD {rad}% by {ds['rad'][rad]['efficacy_reduction'] * 100:.1f}% "
              f"and multiplies the expected IoT latency by {ds['rad'][rad]['latency_amplification']:.2f}x")
    print(f"report: {out / 'report.md'} (JSON: {out / 'report.json'}, plot: {out / 'eec.png'}); "
          f"wall time {report['wall_seconds']} s")
    return 0


def register(sub) -> None:
    p = sub.add_parser("audit", help="audit a multi-exit model's slowdown robustness (the main job)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Calibrate exit thresholds on clean inputs, then compare clean inputs with "
                                   "per-sample DeepSloth, universal DeepSloth and PGD: final and early-exit "
                                   "accuracy, efficacy, efficacy reduction and IoT latency amplification.")
    p.add_argument("--model", default=DEFAULT_MODEL, help="zoo model name or model directory")
    p.add_argument("--data", default="bundled", choices=["bundled", "cifar10", "tinyimagenet"],
                   help="bundled: the 1,000-image CIFAR-10 test subset shipped with the package")
    p.add_argument("--n", type=positive_int, default=DEFAULT_N, help="audit the first N test images")
    p.add_argument("--rad", type=float, nargs="+", default=[5.0, 15.0],
                   help="relative accuracy drop budgets (%%) for threshold calibration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=125, help="attack batch size")
    p.add_argument("--out", default=None, help="report directory (default: ./deepsloth-audit)")
    add_json(p)
    add_device(p)
    add_data_root(p)
    p.set_defaults(func=run)
