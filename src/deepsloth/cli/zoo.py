"""`deepsloth zoo list|train`: the pretrained models shipped with the package (experiments.zoo)."""
from __future__ import annotations

import argparse

from .common import (AMP_CHOICES, add_data_root, add_device, add_json, nonempty, positive_int, print_json,
                     writable_dir)


def run_list(args) -> int:
    from ..experiments.zoo import summaries
    from ..models.zoo_recipes import ZOO_RECIPES

    rows = summaries()
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no pretrained models installed")
    else:
        print(f"{'name':28s} {'arch':10s} {'dataset':8s} {'exits':>5s} {'final acc':>9s} {'MB':>5s} {'train h':>7s}  stages")
    for r in rows:
        acc = f"{r['final_accuracy'] * 100:.2f}%" if r["final_accuracy"] is not None else "-"
        print(f"{r['name']:28s} {r['arch']:10s} {r['dataset']:8s} {r['exits']:>5} {acc:>9s} "
              f"{r['size_bytes'] / 1e6:5.1f} {r['train_seconds'] / 3600:7.2f}  {' -> '.join(r['stages'])}")
    for name in sorted(set(ZOO_RECIPES) - {r["name"] for r in rows}):
        print(f"{name:28s} (not shipped; reproduce with `deepsloth zoo train {name.split('_')[0]}`)")
    return 0


def run_train(args) -> int:
    from ..experiments.zoo import train_zoo_model, zoo_target

    name = zoo_target(args.name, args.dataset)
    writable_dir(args.out or f"runs/{name}")   # before any work
    train_zoo_model(args.name, out=args.out, recipe=args.recipe, device=args.device, data_root=args.data_root,
                    install_it=args.install, dataset=args.dataset, epochs=args.epochs, ic_epochs=args.ic_epochs,
                    amp=args.amp)
    return 0


def run_sweep(args) -> int:
    from ..experiments.zoo import clean_sweep

    r = clean_sweep(args.name, n=args.n, device=args.device, data_root=args.data_root)
    if args.json:
        print_json(r)
        return 0
    m, d = r["model"], r["data"]
    print(f"clean threshold sweep of {m['name']} ({m['arch']}, {m['exits']} exits) on {d['n']} {m['dataset']} test "
          f"images; final-exit accuracy {r['final_accuracy'] * 100:.2f}%")
    paper = any(row["paper_accuracy"] is not None for row in r["rows"])
    print("   q   EE acc %   cost" + ("   | paper VGG16-BN: EE acc %   cost" if paper else ""))
    for row in r["rows"]:
        line = f"{row['q']:5.2f}  {row['accuracy'] * 100:8.2f}  {row['cost']:.4f}"
        if row["paper_accuracy"] is not None:
            line += f"   |                 {row['paper_accuracy'] * 100:8.2f}  {row['paper_cost']:.4f}"
        print(line)
    print("thresholds: " + ", ".join(f"RAD {k}%: q = {v:.2f}" for k, v in r["thresholds"].items()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("zoo", help="pretrained models: list them, or reproduce one")
    zsub = p.add_subparsers(dest="zoo_command", metavar="SUBCOMMAND")
    pl = zsub.add_parser("list", help="list the pretrained models shipped with the package")
    add_json(pl)
    pl.set_defaults(func=run_list)
    pt = zsub.add_parser("train", help="reproduce a zoo model: CNN training, then IC-only training",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pt.add_argument("name", type=nonempty,
                    help="zoo model name or architecture (resnet56, mobilenet, vgg16bn, msdnet)")
    pt.add_argument("--recipe", choices=["paper", "fast"], default=None,
                    help="override the zoo recipe (default: the recipe the shipped model was made with)")
    pt.add_argument("--dataset", choices=["cifar10", "tinyimagenet"], default=None,
                    help="train the architecture on this dataset instead (as <arch>_sdn_<dataset>; the paper's "
                         "schedule unless --recipe fast)")
    pt.add_argument("--epochs", type=positive_int, default=None, help="one CNN stage of this many epochs")
    pt.add_argument("--ic-epochs", type=positive_int, default=None, help="IC-only epochs")
    pt.add_argument("--out", default=None, type=nonempty, help="work directory (default: runs/<name>); resumable")
    pt.add_argument("--install", action="store_true", help="copy the result into the package zoo")
    pt.add_argument("--amp", choices=AMP_CHOICES, default=None,
                    help="bf16: train under bf16 autocast (about 2x faster on AMX CPUs and GPUs); auto: bf16 only "
                         "where the device has it natively; default: the recipe's, as auto")
    add_device(pt)
    add_data_root(pt)
    pt.set_defaults(func=run_train)
    ps = zsub.add_parser("sweep", help="a model's 19-threshold clean sweep, next to the paper's VGG16-BN one",
                         description="Early-exit accuracy and cost (1 - efficacy) at q = 0.05 .. 0.95 on the clean "
                                     "test split; for a CIFAR-10 VGG16-BN SDN, the paper's numbers beside them.")
    ps.add_argument("name", type=nonempty, help="zoo name or model directory")
    ps.add_argument("--n", type=positive_int, default=None, help="first N test images (default: all)")
    add_json(ps)
    add_device(ps)
    add_data_root(ps)
    ps.set_defaults(func=run_sweep)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
