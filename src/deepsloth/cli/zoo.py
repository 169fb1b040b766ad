"""`deepsloth zoo list|train`: the pretrained models shipped with the package (experiments.zoo)."""
from __future__ import annotations

import argparse

from .common import add_data_root, add_device, add_json, print_json


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
    from ..experiments.zoo import train_zoo_model

    train_zoo_model(args.name, out=args.out, recipe=args.recipe, device=args.device, data_root=args.data_root,
                    install_it=args.install)
    return 0


def register(sub) -> None:
    p = sub.add_parser("zoo", help="pretrained models: list them, or reproduce one")
    zsub = p.add_subparsers(dest="zoo_command", metavar="SUBCOMMAND")
    pl = zsub.add_parser("list", help="list the pretrained models shipped with the package")
    add_json(pl)
    pl.set_defaults(func=run_list)
    pt = zsub.add_parser("train", help="reproduce a zoo model: CNN training, then IC-only training",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pt.add_argument("name", help="zoo model name or architecture (resnet56, mobilenet, vgg16bn)")
    pt.add_argument("--recipe", choices=["paper", "fast"], default=None,
                    help="override the zoo recipe (default: the recipe the shipped model was made with)")
    pt.add_argument("--out", default=None, help="work directory (default: runs/<name>); resumable")
    pt.add_argument("--install", action="store_true", help="copy the result into the package zoo")
    add_device(pt)
    add_data_root(pt)
    pt.set_defaults(func=run_train)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
