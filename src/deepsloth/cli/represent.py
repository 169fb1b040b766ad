"""`deepsloth represent --model M [--class C] [--n N] [--out DIR]`: internal representations of clean,
PGD and per-sample DeepSloth inputs of one class, per exit (experiments.represent)."""
from __future__ import annotations

from .common import (add_data_root, add_device, add_json, add_seed, nonempty, nonneg_int, positive_int, print_json,
                     writable_dir)


def run(args) -> int:
    from ..experiments.context import load_context
    from ..experiments.represent import represent

    out = writable_dir(args.out)
    ctx = load_context(args.model, n=args.n, label=args.cls, device=args.device, data_root=args.data_root,
                       data=args.data)
    rec = represent(ctx, out, seed=args.seed, batch_size=args.batch_size)
    if args.json:
        print_json(rec)
        return 0
    print(f"{rec['model']['name']}: {rec['data']['n']} test images of class {rec['class']} ({rec['class_name']})")
    print("exit  max-softmax median: clean / PGD / DeepSloth   entropy median: clean / PGD / DeepSloth")
    for e in rec["exits"]:
        ms = " / ".join(f"{e[s]['max_softmax']['median']:.2f}" for s in ("clean", "PGD", "DeepSloth"))
        en = " / ".join(f"{e[s]['entropy']['median']:.2f}" for s in ("clean", "PGD", "DeepSloth"))
        print(f"{e['exit']:4d}  {ms:>38s}   {en:>30s}")
    print(f"wrote {out}/represent.json, summary.png, images.png and exit-01..{len(rec['exits']):02d}.png")
    return 0


def register(sub) -> None:
    p = sub.add_parser("represent", help="per-exit confidence, entropy and features of clean / PGD / DeepSloth inputs",
                       description=__doc__.replace("\n", " "))
    p.add_argument("--model", required=True, type=nonempty, help="model directory or zoo name")
    p.add_argument("--class", dest="cls", type=nonneg_int, default=0, help="class index (default: 0)")
    p.add_argument("--n", type=positive_int, default=100, help="test images of that class (default: 100)")
    p.add_argument("--data", default="test", choices=("test", "bundled"), help="test split or the bundled subset")
    add_seed(p)
    p.add_argument("--batch-size", type=positive_int, default=128, help="crafting batch size")
    p.add_argument("--out", default="deepsloth-represent", type=nonempty, help="output folder")
    add_json(p)
    add_device(p)
    add_data_root(p)
    p.set_defaults(func=run)
