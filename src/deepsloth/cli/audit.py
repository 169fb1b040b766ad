"""`deepsloth audit`: clean vs. attacked efficacy, accuracy and latency of a multi-exit model."""
from __future__ import annotations

import argparse
import sys

from .attack import add_amp, add_batch_size
from .common import (add_data_root, add_device, add_json, add_rad, add_seed, nonempty, positive_int, print_json,
                     writable_dir)

DEFAULT_MODEL = "resnet56_sdn_cifar10"
DEFAULT_N = 250


def run(args) -> int:
    from ..experiments.audit import AuditConfig, format_table, run_audit
    from ..experiments.report import ceiling_note

    cfg = AuditConfig(model=args.model, data=args.data, n=args.n, rads=tuple(args.rad), seed=args.seed,
                      batch_size=args.batch_size, device=args.device, data_root=args.data_root, amp=args.amp)
    cfg.check()
    out = writable_dir(args.out)
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    report = run_audit(cfg, out, log=log)
    if args.json:
        print_json(report)
        return 0
    print()
    print(format_table(report))
    print()
    rad = next(iter(report["thresholds"]))
    ds = report["comparisons"].get("deepsloth-linf-sample")
    if ds:
        r = ds["rad"][rad]
        print(f"per-sample DeepSloth cuts efficacy at RAD {rad}% by {r['efficacy_reduction'] * 100:.1f}% "
              f"and multiplies the expected IoT latency by {r['latency_amplification']:.2f}x")
        note = ceiling_note(ds, rad)
        if note:
            print(note)
    print(f"report: {out / 'report.md'} (JSON: {out / 'report.json'}, plots: {out / 'eec.png'}, "
          f"{out / 'examples.png'}); wall time {report['wall_seconds']} s")
    return 0


def register(sub) -> None:
    p = sub.add_parser("audit", help="audit a multi-exit model's slowdown robustness (the main job)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Calibrate exit thresholds on clean inputs, then compare clean inputs with "
                                   "per-sample DeepSloth, universal DeepSloth and PGD: final and early-exit "
                                   "accuracy, efficacy, efficacy reduction and IoT latency amplification.")
    p.add_argument("--model", default=DEFAULT_MODEL, type=nonempty, help="zoo model name or model directory")
    p.add_argument("--data", default="bundled", choices=["bundled", "test"],
                   help="bundled: the 1,000-image CIFAR-10 test subset shipped with the package; test: the "
                        "model's dataset test split (imported with `deepsloth data import`)")
    p.add_argument("--n", type=positive_int, default=DEFAULT_N, help="audit the first N test images")
    add_rad(p)
    add_seed(p)
    add_batch_size(p)
    add_amp(p)
    p.add_argument("--out", default="deepsloth-audit", type=nonempty, help="report directory")
    add_json(p)
    add_device(p)
    add_data_root(p)
    p.set_defaults(func=run)
