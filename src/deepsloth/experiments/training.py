"""`deepsloth train` as a library function: data selection, model, adversarial term, distribution.

    run_training(TrainConfig(arch="mobilenet", mode="cnn", out="runs/m", recipe="fast", adv="pgd"))

Data selection (`deepsloth.data.selection`; recorded in model.json under "data_selection"):
`data_fraction` F with `subset_seed` S trains on a seeded F share of every class; `classes`
trains on those classes only, relabelled 0..c-1 (model.json `class_subset`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..data import load_dataset
from ..data.selection import check_classes, fraction_indices, indices_sha256, subset_dataset
from ..device import resolve_device
from ..errors import DeepslothError
from ..models.io import read_model_meta
from ..models.lineage import parent_record
from ..models.attach import attach_exits
from ..models.registry import CUSTOM, MULTI_EXIT, attach_ics, create_model, parse_name
from ..models.zoo import resolve_model
from ..train.adversarial import AdversarialTraining
from ..train.loop import train_model
from ..train.recipes import MODES, default_recipe


@dataclass
class TrainConfig:
    arch: Optional[str]             # None: the --from model's (a model directory naming its builder has no other)
    out: str
    mode: str = "cnn"
    dataset: str = "cifar10"
    init_from: Optional[str] = None
    recipe: str = "paper"
    epochs: Optional[int] = None
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    cutout: Optional[int] = None    # cutout square side in px (deepsloth.data.augment.cutout)
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    train_n: Optional[int] = None
    test_n: Optional[int] = None
    data_fraction: Optional[float] = None
    subset_seed: int = 0
    classes: Optional[List[int]] = None
    adv: Optional[str] = None
    adv_eps: Optional[float] = None
    adv_steps: Optional[int] = None
    adv_step_size: Optional[float] = None
    adv_share: float = 1.0
    adv_fast: bool = False
    sync_bn: bool = False
    amp: Optional[str] = None       # "bf16": forwards under bf16 autocast (deepsloth.precision)
    device: str = "auto"
    data_root: Optional[str] = None
    exit_points: Optional[List[str]] = None   # ic-only from your own model: the modules the exits read
    channels_last: Optional[bool] = None      # None: channels-last on CPU, and on CUDA for convolutional networks
    compile: bool = False                     # torch.compile the training passes (deepsloth.train.loop)


def _arch_of(cfg: TrainConfig) -> str:
    """The architecture trained: --arch, or the --from model's; a model directory naming its builder
    (models.registry.export_model) is the custom architecture."""
    parent = read_model_meta(resolve_model(cfg.init_from)) if cfg.init_from else {}
    if parent.get("builder"):
        if cfg.arch not in (None, CUSTOM):
            raise DeepslothError(f"--from {cfg.init_from} is your own model (built by {parent['builder']}); "
                                 f"leave out --arch")
        return CUSTOM
    if cfg.arch is None:
        if not parent:
            raise DeepslothError("--arch is needed (or --from MODEL to continue from)")
        return parent["arch"]
    return parse_name(cfg.arch)[0]


def run_training(cfg: TrainConfig, dist=None, log: Callable[[str], None] = print) -> Dict[str, Any]:
    device = dist.device if dist is not None else resolve_device(cfg.device)
    arch = _arch_of(cfg)
    if cfg.mode not in MODES:
        raise DeepslothError(f"unknown training mode {cfg.mode!r}; choose from {', '.join(MODES)}")
    recipe = default_recipe(arch, cfg.mode, cfg.recipe, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                            cutout=cfg.cutout)
    if cfg.mode == "ic-only" and not cfg.init_from:
        raise DeepslothError("--mode ic-only needs --from MODEL, a trained CNN or SDN (its backbone is used)")
    if cfg.init_from and cfg.mode == "sdn":
        raise DeepslothError("--from is only used with --mode ic-only (the CNN to attach ICs to) "
                             "or --mode cnn (a CNN to continue training)")
    if arch == CUSTOM and cfg.mode == "ic-only" and not cfg.exit_points:
        raise DeepslothError("--mode ic-only on your own model needs --exit-points: the modules the exits read "
                             "(names as in model.named_modules())")
    if cfg.exit_points and not (arch == CUSTOM and cfg.mode == "ic-only"):
        raise DeepslothError("--exit-points places exits on your own model (--from a model directory naming its "
                             "builder, --mode ic-only); the toolkit's architectures have theirs")
    adversarial = None
    if cfg.adv:
        adversarial = AdversarialTraining(cfg.adv, mode=cfg.mode, eps=cfg.adv_eps, steps=cfg.adv_steps,
                                          step_size=cfg.adv_step_size, share=cfg.adv_share, fast=cfg.adv_fast,
                                          dataset=cfg.dataset)
    out = Path(cfg.out)
    if (out / "model.json").exists() and not (out / "checkpoint.json").exists() and not cfg.overwrite:
        raise DeepslothError(f"{out} already holds a trained model; pass --overwrite to replace it")
    train_set = load_dataset(cfg.dataset, "train", cfg.data_root)
    test_set = load_dataset(cfg.dataset, "test", cfg.data_root)
    selection: Dict[str, Any] = {}
    classes_given = cfg.classes
    if cfg.init_from and cfg.classes is None:   # continue on the parent's classes
        parent_subset = read_model_meta(resolve_model(cfg.init_from)).get("class_subset")
        if parent_subset:
            classes_given = parent_subset["classes"]
    if classes_given is not None:
        classes = check_classes(classes_given, train_set.num_classes)
        train_set, test_set = subset_dataset(train_set, classes), subset_dataset(test_set, classes)
        selection["classes"] = classes
    if cfg.data_fraction is not None:
        idx = fraction_indices(train_set.labels, cfg.data_fraction, cfg.subset_seed)
        train_set = subset_dataset(train_set, indices=idx)
        selection.update(fraction=cfg.data_fraction, subset_seed=cfg.subset_seed, train_images=len(idx),
                         indices_sha256=indices_sha256(idx))
    for flag, n, ds in (("--train-n", cfg.train_n, train_set), ("--test-n", cfg.test_n, test_set)):
        if n and n > len(ds):
            raise DeepslothError(f"{flag} {n} exceeds the {len(ds)} {ds.split} images of {ds.name} ({ds.source})")
    if cfg.train_n:
        train_set = train_set.subset(cfg.train_n)
    if cfg.test_n:
        test_set = test_set.subset(cfg.test_n)
    meta: Dict[str, Any] = {"arch": arch, "dataset": cfg.dataset, "num_classes": train_set.num_classes,
                            "input_size": train_set.image_size}
    if selection:
        meta["data_selection"] = selection
    if classes_given is not None:
        meta["class_subset"] = {"classes": selection["classes"], "names": list(train_set.classes)}
    if cfg.init_from:
        model = create_model(cfg.init_from)
        parent = model.meta
        if arch == CUSTOM:   # the builder and its arguments travel with the weights
            meta.update(arch=CUSTOM, builder=parent["builder"], builder_kwargs=parent.get("builder_kwargs") or {})
            if cfg.mode == "ic-only":
                meta["exit_points"] = list(cfg.exit_points)
        if parent["arch"] != arch or parent["dataset"] != cfg.dataset or arch in MULTI_EXIT:
            raise DeepslothError(f"--from {cfg.init_from} is a {parent['mode']} {parent['arch']} on "
                                 f"{parent['dataset']}, not a {arch} CNN or SDN on {cfg.dataset}")
        if parent["mode"] != "cnn":   # an SDN: its backbone CNN (the same weights, without its ICs)
            model = model.backbone()
        if (parent.get("class_subset") or {}).get("classes") != (meta.get("class_subset") or {}).get("classes"):
            raise DeepslothError(f"--from {cfg.init_from} was trained on other classes than --classes")
        meta["parent"] = parent_record(cfg.init_from, parent)
        if cfg.mode == "ic-only" and arch == CUSTOM:
            size = meta["input_size"]
            try:
                model = attach_exits(model, cfg.exit_points, meta["num_classes"], (3, size, size), seed=cfg.seed)
            except ValueError as exc:
                raise DeepslothError(str(exc)) from None
        elif cfg.mode == "ic-only":
            model = attach_ics(model, cfg.dataset, num_classes=meta["num_classes"], seed=cfg.seed)
    else:
        model = create_model(arch, cfg.dataset, sdn=cfg.mode == "sdn", seed=cfg.seed,
                             num_classes=meta["num_classes"])
    return train_model(model, mode=cfg.mode, recipe=recipe, train_set=train_set, test_set=test_set, out_dir=out,
                       meta=meta, seed=cfg.seed, device=device, resume=cfg.resume, log=log,
                       adversarial=adversarial, dist=dist, sync_bn=cfg.sync_bn, amp=cfg.amp,
                       channels_last=cfg.channels_last, compile=cfg.compile)


__all__ = ["TrainConfig", "run_training"]
