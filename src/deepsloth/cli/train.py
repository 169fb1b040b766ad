"""`deepsloth train`: CNN, IC-only SDN or joint SDN training into a model directory."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DeepslothError
from .common import add_data_root, add_device, positive_int

MODES = ("cnn", "ic-only", "sdn")


def run(args) -> int:
    from ..data import load_dataset
    from ..device import resolve_device
    from ..experiments.zoo import parent_record
    from ..models.io import load_model_dir
    from ..models.registry import attach_ics, create_model, parse_name
    from ..train.loop import train_model
    from ..train.recipes import default_recipe

    device = resolve_device(args.device)
    arch, _ = parse_name(args.arch)
    recipe = default_recipe(arch, args.mode, args.recipe, epochs=args.epochs, lr=args.lr,
                            batch_size=args.batch_size)
    train_set = load_dataset(args.dataset, "train", args.data_root)
    test_set = load_dataset(args.dataset, "test", args.data_root)
    if args.train_n:
        train_set = train_set.subset(args.train_n)
    if args.test_n:
        test_set = test_set.subset(args.test_n)
    meta = {"arch": arch, "dataset": args.dataset, "num_classes": train_set.num_classes,
            "input_size": train_set.image_size}
    if args.mode == "ic-only" and not args.init_from:
        raise DeepslothError("--mode ic-only needs --from DIR, a trained CNN model directory")
    if args.init_from:
        if args.mode == "sdn":
            raise DeepslothError("--from is only used with --mode ic-only (the CNN to attach ICs to) "
                                 "or --mode cnn (a CNN to continue training)")
        model, parent = load_model_dir(args.init_from)
        if parent["arch"] != arch or parent["dataset"] != args.dataset or parent["mode"] != "cnn":
            raise DeepslothError(f"--from {args.init_from} is a {parent['mode']} {parent['arch']} on "
                                 f"{parent['dataset']}, not a {arch} CNN on {args.dataset}")
        meta["parent"] = parent_record(args.init_from, parent)
        if args.mode == "ic-only":
            model = attach_ics(model, args.dataset, seed=args.seed)
        # else: a warm start, continuing the CNN under a new schedule (e.g. a second one-cycle
        # on a CPU budget); its recipe and history stay recorded under "parent".
    else:
        model = create_model(arch, args.dataset, sdn=args.mode == "sdn", seed=args.seed)
    out = Path(args.out)
    if (out / "model.json").exists() and not (out / "checkpoint.json").exists() and not args.overwrite:
        raise DeepslothError(f"{out} already holds a trained model; pass --overwrite to replace it")
    train_model(model, mode=args.mode, recipe=recipe, train_set=train_set, test_set=test_set,
                out_dir=out, meta=meta, seed=args.seed, device=device, resume=args.resume)
    print(f"saved {args.mode} model to {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a CNN, an IC-only SDN or a joint SDN",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train a model and write a model directory (model.safetensors + model.json). "
                                   "A checkpoint is written after every epoch; --resume continues a killed run.")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "tinyimagenet"])
    p.add_argument("--arch", required=True, help="vgg16bn, resnet56 or mobilenet")
    p.add_argument("--mode", default="cnn", choices=MODES,
                   help="cnn: final exit only; ic-only: freeze a trained CNN (--from) and train its ICs; "
                        "sdn: all exits jointly with the cost-weighted loss")
    p.add_argument("--from", dest="init_from", default=None, help="trained CNN model directory: ic-only attaches ICs to it; cnn continues training it")
    p.add_argument("--recipe", default="paper", choices=["paper", "fast"],
                   help="paper: the paper's schedules (docs/method.md §3.4; 100 / 25 epochs); fast: one-cycle for CPU budgets")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the recipe's epochs")
    p.add_argument("--lr", type=float, default=None, help="override the recipe's (peak) learning rate")
    p.add_argument("--batch-size", type=positive_int, default=None, help="override the batch size (128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--resume", action="store_true", help="continue from the last finished epoch in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a finished model in --out")
    p.add_argument("--train-n", type=positive_int, default=None, help="train on the first N training images")
    p.add_argument("--test-n", type=positive_int, default=None, help="measure accuracy on the first N test images")
    add_device(p)
    add_data_root(p)
    p.set_defaults(func=run)
