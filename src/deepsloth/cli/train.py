"""`deepsloth train`: CNN, IC-only SDN or joint SDN training into a model directory
(experiments.training); adversarial terms with --adv; DistributedDataParallel under torchrun."""
from __future__ import annotations

import argparse

from ..train.recipes import MODES
from .common import (AMP_CHOICES, add_data_root, add_device, add_seed, amp_from, nonempty, nonneg_int,
                     positive_float, positive_int, positive_number, writable_dir)

ADV = ("pgd", "pgd-avg", "pgd-max", "deepsloth", "mixed")


def run(args) -> int:
    from ..distributed import Dist
    from ..experiments.training import TrainConfig, run_training

    args.amp = amp_from(args)   # not given: auto (bf16) on CUDA, off (fp32) elsewhere
    args.channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    cfg = TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if hasattr(args, k)})
    writable_dir(cfg.out)   # before any work
    dist = Dist.from_env(cfg.device)
    try:
        run_training(cfg, dist=dist if dist.active else None, log=print if dist.is_main else (lambda s: None))
    except BaseException:
        dist.close(sync=False)
        raise
    dist.close()
    if dist.is_main:
        print(f"saved {cfg.mode} model to {cfg.out}" + (f" ({dist.world} processes)" if dist.active else ""))
    return 0


def class_list(text: str):
    try:
        return [int(c) for c in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class indices such as 0,2,5, got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser("train", help="train a CNN, an IC-only SDN or a joint SDN (adversarially, distributed)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train a model and write a model directory (model.safetensors + model.json). "
                                   "A checkpoint is written after every epoch; --resume continues a killed run. "
                                   "Under torchrun it runs DistributedDataParallel (docs/distributed.md).")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "tinyimagenet"])
    p.add_argument("--arch", default=None, type=nonempty,
                   help="vgg16bn, resnet56, mobilenet, msdnet or vit (default with --from: the --from model's)")
    p.add_argument("--mode", default="cnn", choices=MODES,
                   help="cnn: final exit only; ic-only: freeze a trained CNN (--from) and train its ICs; "
                        "sdn: all exits jointly with the cost-weighted loss")
    p.add_argument("--from", dest="init_from", default=None, type=nonempty,
                   help="trained CNN or SDN (model directory or zoo name; of an SDN its backbone CNN is used): "
                        "ic-only attaches new ICs to it; cnn continues training it. Your own model: a model "
                        "directory naming its builder (docs/byom.md)")
    p.add_argument("--exit-points", nargs="+", default=None, metavar="MODULE",
                   help="ic-only on your own model (--from a directory naming its builder): the modules whose "
                        "outputs the exits read, in forward order (docs/byom.md)")
    p.add_argument("--recipe", default="paper", choices=["paper", "fast"],
                   help="paper: the paper's schedules (docs/method.md §3.4; 100 / 25 epochs); fast: one-cycle for CPUs")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the recipe's epochs")
    p.add_argument("--lr", type=positive_float, default=None, help="override the recipe's (peak) learning rate")
    p.add_argument("--batch-size", type=positive_int, default=None, help="override the (global) batch size (128)")
    p.add_argument("--cutout", type=nonneg_int, default=None, metavar="PX",
                   help="also blank one PX x PX square per training image (cutout; default none)")
    add_seed(p)
    p.add_argument("--out", required=True, type=nonempty, help="output model directory")
    p.add_argument("--resume", action="store_true", help="continue from the last finished epoch in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a finished model in --out")
    p.add_argument("--train-n", type=positive_int, default=None, help="train on the first N training images")
    p.add_argument("--test-n", type=positive_int, default=None, help="measure accuracy on the first N test images")
    g = p.add_argument_group("data selection (transferability studies)")
    g.add_argument("--data-fraction", type=positive_number, default=None,
                   help="train on this share (0, 1] of every class, drawn with --subset-seed")
    g.add_argument("--subset-seed", type=nonneg_int, default=0, help="seed of the per-class draw")
    g.add_argument("--classes", type=class_list, default=None,
                   help="only these classes (e.g. 0,2,5), relabelled 0..c-1; evaluation uses them too")
    a = p.add_argument_group("adversarial training (docs/method.md §10.3)")
    a.add_argument("--adv", default=None, choices=ADV,
                   help="add an adversarial term: CNN: pgd (CE(x) + CE(x_adv)); IC-only / SDN: any (sum over "
                        "exits of CE(exit(x_adv), y)); mixed: DeepSloth and PGD inputs half and half")
    a.add_argument("--adv-eps", type=positive_number, default=None, help="budget (default 8/255)")
    a.add_argument("--adv-steps", type=positive_int, default=None, help="attack iterations (PGD default 10)")
    a.add_argument("--adv-step-size", type=positive_number, default=None, help="attack step (PGD default 2/255)")
    a.add_argument("--adv-share", type=positive_number, default=1.0, help="share of each batch attacked, in (0, 1]")
    a.add_argument("--adv-fast", action="store_true",
                   help="PGD as one step of 1.25 eps from a random start ('fast adversarial training'): ~steps x "
                        "cheaper, a weaker attack during training")
    p.add_argument("--sync-bn", action="store_true", help="under torchrun on CUDA: SyncBatchNorm over the global batch")
    p.add_argument("--amp", default=None, choices=AMP_CHOICES,
                   help="off: fp32; bf16: forward passes under bf16 autocast, about 2x faster on AMX CPUs and on GPUs, "
                        "many times slower on CPUs without native bf16 (weights, optimiser and evaluation stay fp32); "
                        "auto: bf16 only where the device has it natively (default: auto on CUDA, off elsewhere)")
    sp = p.add_argument_group("speed (the recipe, data and batches stay the same)")
    sp.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                    help="memory layout of the model and batches; auto: channels-last on CPU, and on CUDA for "
                         "convolutional networks")
    sp.add_argument("--compile", action="store_true",
                    help="run the training passes through torch.compile: fused kernels, far fewer launches per "
                         "step on CUDA; the first steps wait for the compilation (a minute or more)")
    add_device(p)
    add_data_root(p)
    p.set_defaults(func=run)
