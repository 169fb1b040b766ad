"""The model zoo's training pipeline and summaries (`deepsloth zoo train | list`).

`train_zoo_model(name)` runs a recipe of `models.zoo_recipes`: the CNN stages in order (each later
one continuing the previous under a fresh schedule), the weight average of the last stages with
BatchNorm re-estimated where the recipe says so, then IC-only training. Every stage is resumable
and records its lineage in `model.json`. `install` copies a trained SDN into the package zoo.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from ..data import load_dataset
from ..device import resolve_device
from ..errors import DeepslothError
from ..io import write_json
from ..models.io import META, save_model_dir
from ..models.lineage import lineage, parent_record
from ..models.registry import attach_ics, create_model, zoo_name_for
from ..models.zoo import ZOO_DIR, zoo_entries
from ..models.zoo_recipes import ZOO_RECIPES
from ..train.average import average_model_dirs
from ..train.loop import train_model
from ..train.recipes import default_recipe


def find_recipe(name: str) -> str:
    """The zoo name for a zoo name or an architecture (resnet56, mobilenet, vgg16bn)."""
    matches = [k for k in ZOO_RECIPES if k == name or k.split("_")[0] == name]
    if len(matches) != 1:
        raise DeepslothError(f"unknown zoo model {name!r}; choose from {', '.join(ZOO_RECIPES)}")
    return matches[0]


def summary(name: str, meta: dict) -> dict:
    acc = meta.get("accuracy", {})
    stages, seconds = lineage(meta)
    return {"name": name, "arch": meta["arch"], "dataset": meta["dataset"], "mode": meta["mode"],
            "exits": meta.get("exits"), "final_accuracy": acc.get("final"),
            "per_exit_accuracy": acc.get("per_exit"), "recipe": meta.get("recipe", {}).get("name"),
            "stages": stages, "train_seconds": round(seconds, 1),
            "data_source": meta.get("data_source"), "path": str(ZOO_DIR / name),
            "size_bytes": (ZOO_DIR / name / "model.safetensors").stat().st_size
            if (ZOO_DIR / name / "model.safetensors").is_file() else 0}


def summaries() -> List[dict]:
    """One summary per shipped zoo model."""
    return [summary(n, m) for n, m in zoo_entries().items()]


def zoo_target(name: str, dataset: Optional[str] = None) -> str:
    """The zoo name a `train_zoo_model(name, dataset=...)` run produces (`<arch>_sdn_<dataset>`)."""
    base = find_recipe(name)
    return base if dataset in (None, ZOO_RECIPES[base]["dataset"]) else zoo_name_for(ZOO_RECIPES[base]["arch"], dataset)


def stage_amp(stage: Dict[str, Any], recipe: Dict[str, Any], amp: Optional[str] = None) -> Optional[str]:
    """The precision a zoo training stage asks for: an explicit `amp` wins; else the stage's own, else
    the recipe's. A recipe's "bf16" (how the shipped model was made) becomes "auto", bf16 only where the
    device computes it natively: emulated bf16 is many times slower than fp32 (docs/method.md §3.7)."""
    if amp is not None:
        return amp
    asked = stage.get("amp", recipe.get("amp"))
    return "auto" if asked == "bf16" else asked


def train_zoo_model(name: str, *, out: Optional[Path | str] = None, recipe: Optional[str] = None,
                    device: str = "auto", data_root: Optional[str] = None, install_it: bool = False,
                    dataset: Optional[str] = None, epochs: Optional[int] = None, ic_epochs: Optional[int] = None,
                    amp: Optional[str] = None, log: Callable[[str], None] = print) -> Path:
    """Run (or resume) every stage of a zoo recipe; returns the SDN directory.

    `dataset` other than the recipe's trains the same architecture on that dataset (for example
    the paper's Tiny ImageNet models: `dataset="tinyimagenet"`), by default with the paper's
    schedule (`recipe="paper"`, docs/method.md §3); `epochs` / `ic_epochs` replace the CNN
    stages by one stage of that many epochs and set the IC-only epochs. `amp="bf16"` trains every
    stage under bf16 autocast (`deepsloth.precision`; default: each stage's own `amp` in the recipe,
    else the recipe's, else fp32; a recipe's bf16 is taken as "auto": bf16 only on a device with
    native bf16)."""
    base_name = find_recipe(name)
    spec = dict(ZOO_RECIPES[base_name])
    name = zoo_target(base_name, dataset)
    if name != base_name:   # another dataset: the paper's schedule unless told (one CNN stage, no averaging)
        spec["dataset"] = dataset
        recipe = recipe or "paper"
    device = resolve_device(device)
    arch, dataset, seed = spec["arch"], spec["dataset"], spec["seed"]
    out = Path(out or f"runs/{name}")
    sdn_dir = out / "sdn"
    train_set = load_dataset(dataset, "train", data_root)
    test_set = load_dataset(dataset, "test", data_root)
    base = {"arch": arch, "dataset": dataset, "num_classes": train_set.num_classes,
            "input_size": train_set.image_size}
    if "joint" in spec:   # built with its exits (MSDNet): joint stages, each continuing the previous
        stages = [{"recipe": recipe}] if recipe else list(spec["joint"])
        if epochs is not None:
            stages = [dict(stages[0], epochs=epochs)]
        sdn_dir = _train_stages(stages, "sdn", out, spec, base, train_set, test_set, device=device, amp=amp)
        log(f"trained {name}: {sdn_dir}")
        if install_it:
            install(sdn_dir, name, spec.get("store_dtype", "float32"), test_set=test_set, device=device)
            log(f"installed into the package zoo as {name}")
        return sdn_dir
    # The CNN may be made in several stages: the first from scratch, each later one continuing
    # the previous under a fresh schedule (how the CPU-trained models were made).
    cnn_stages = spec["cnn"] if isinstance(spec["cnn"], list) else [spec["cnn"]]
    ic_stage = dict(spec["ic-only"])
    if recipe:
        cnn_stages = [{"recipe": recipe}]
        ic_stage = {"recipe": recipe}
    if epochs is not None:
        cnn_stages = [dict(cnn_stages[0], epochs=epochs)]   # the first stage's settings, `epochs` long
    if ic_epochs is not None:
        ic_stage["epochs"] = ic_epochs
    prev_dir = _train_stages(cnn_stages, "cnn", out, spec, base, train_set, test_set, device=device, amp=amp)
    avg = spec.get("average") if not recipe and epochs is None else None
    if avg:   # mean of the last CNN stages' weights, BatchNorm re-estimated (train/average.py)
        avg_dir = out / "cnn-avg"
        if not (avg_dir / "model.json").exists():
            sources = [_stage_dir(out, "cnn", i) for i in range(len(cnn_stages) - avg["last"], len(cnn_stages))]
            average_model_dirs(sources, avg_dir, train_set, test_set, n_images=avg["bn_images"],
                               seed=seed, device=device)
        prev_dir = avg_dir
    cnn = create_model(prev_dir)
    parent = cnn.meta
    r = default_recipe(arch, "ic-only", ic_stage["recipe"], epochs=ic_stage.get("epochs"), lr=ic_stage.get("lr"))
    meta = dict(base, zoo_name=name, parent=parent_record(prev_dir, parent))
    train_model(attach_ics(cnn, dataset, seed=seed), mode="ic-only", recipe=r, train_set=train_set,
                test_set=test_set, out_dir=sdn_dir, meta=meta, seed=seed, device=device, resume=True,
                amp=stage_amp(ic_stage, spec, amp))
    log(f"trained {name}: {sdn_dir}")
    if install_it:
        install(sdn_dir, name, spec.get("store_dtype", "float32"), test_set=test_set, device=device)
        log(f"installed into the package zoo as {name}")
    return sdn_dir


STAGE_PREFIX = {"cnn": "cnn", "sdn": "joint"}


def _stage_dir(out: Path, mode: str, i: int) -> Path:
    """`out/cnn`, `out/cnn2`, ... for CNN stages; `out/joint`, `out/joint2`, ... for joint ones."""
    prefix = STAGE_PREFIX[mode]
    return out / (prefix if i == 0 else f"{prefix}{i + 1}")


def _train_stages(stages: List[Dict[str, Any]], mode: str, out: Path, spec: Dict[str, Any], base: Dict[str, Any],
                  train_set, test_set, *, device, amp: Optional[str]) -> Path:
    """Train (or resume) `stages` of `mode` ("cnn", or "sdn" for joint training): the first from scratch,
    each later one continuing the previous under a fresh schedule. Returns the last stage's directory."""
    arch, dataset, seed = spec["arch"], spec["dataset"], spec["seed"]
    prev_dir = None
    for i, stage in enumerate(stages):
        stage_dir = _stage_dir(out, mode, i)
        if not (stage_dir / "model.json").exists() or (stage_dir / "checkpoint.json").exists():
            r = default_recipe(arch, mode, stage["recipe"], epochs=stage.get("epochs"), lr=stage.get("lr"),
                               cutout=stage.get("cutout"))
            if prev_dir is None:
                model, meta = create_model(arch, dataset, sdn=mode != "cnn", seed=seed), dict(base)
            else:
                model = create_model(prev_dir)
                meta = dict(base, parent=parent_record(prev_dir, model.meta))
            train_model(model, mode=mode, recipe=r, train_set=train_set, test_set=test_set, out_dir=stage_dir,
                        meta=meta, seed=seed, device=device, resume=True, amp=stage_amp(stage, spec, amp))
        prev_dir = stage_dir
    return prev_dir


def install(model_dir: Path, name: str, store_dtype: str = "float32", *, test_set=None,
            device: str = "cpu") -> Path:
    """Copy a trained model directory into the package zoo (optionally stored as fp16).

    With `test_set`, the recorded accuracy is re-measured from the stored file (what ships, fp16
    rounding included); the trained directory's own measurement is kept as `accuracy_before_store`."""
    from ..exits.forward import collect_exit_outputs

    model = create_model(model_dir)

    meta = model.meta
    dest = ZOO_DIR / name
    if dest.exists():
        shutil.rmtree(dest)
    meta = {k: v for k, v in meta.items() if k not in ("format", "package_version", "saved")}
    meta["zoo_name"] = name
    meta["stored_dtype"] = store_dtype
    save_model_dir(dest, model, meta, dtype=torch.float16 if store_dtype == "float16" else None)
    if test_set is not None:   # only model.json changes: the weights are written once
        shipped = create_model(dest)
        stored = shipped.meta
        acc = collect_exit_outputs(shipped, test_set.images, device=device, desc="test (as stored)").accuracy(
            test_set.labels)
        stored["accuracy_before_store"] = stored.get("accuracy")
        stored["accuracy"] = {"split": "test", "n": len(test_set), "per_exit": [round(a, 4) for a in acc],
                              "final": round(acc[-1], 4), "measured_from": f"the stored {store_dtype} weights"}
        write_json(dest / META, stored)
    return dest


# The paper's clean threshold sweep of its VGG16-BN IC-only SDN on CIFAR-10 (docs/method.md §8.2):
# q -> (early-exit accuracy %, cost = 1 - efficacy). q = 0.05 .. 0.15 share one row in the paper.
PAPER_VGG16BN_SWEEP = {
    0.05: (57.27, .0030), 0.10: (57.27, .0030), 0.15: (57.27, .0030), 0.20: (57.38, .0033),
    0.25: (58.11, .0056), 0.30: (60.05, .0115), 0.35: (62.40, .0208), 0.40: (65.36, .0342),
    0.45: (68.63, .0503), 0.50: (72.22, .0698), 0.55: (75.67, .0902), 0.60: (78.61, .1129),
    0.65: (81.55, .1386), 0.70: (84.20, .1664), 0.75: (86.59, .1969), 0.80: (88.50, .2313),
    0.85: (90.14, .2707), 0.90: (91.38, .3215), 0.95: (92.16, .3942)}


def clean_sweep(model: str, *, n: Optional[int] = None, device: str = "auto",
                data_root: Optional[str] = None) -> Dict:
    """The 19-threshold clean sweep of a model on its test split (first n images; default all):
    per q the early-exit accuracy and cost = 1 - efficacy, next to the paper's VGG16-BN sweep."""
    from ..metrics.efficacy import efficacy
    from .context import load_context

    ctx = load_context(model, n=n, device=device, data_root=data_root)
    cal = ctx.calibration
    rows = []
    for row in cal["sweep"]:
        q = round(row["threshold"], 2)
        paper = PAPER_VGG16BN_SWEEP.get(q) if ctx.meta.get("arch") == "vgg16bn" and ctx.dataset == "cifar10" else None
        rows.append({"q": q, "accuracy": row["accuracy"], "cost": 1.0 - efficacy(row["exit_counts"], ctx.costs.normalised),
                     "paper_accuracy": paper[0] / 100 if paper else None, "paper_cost": paper[1] if paper else None})
    return {"model": ctx.model_record(), "data": ctx.data_record(), "final_accuracy": cal["reference_accuracy"],
            "per_exit_accuracy": cal["per_exit_accuracy"], "rows": rows,
            "thresholds": {k: v["threshold"] for k, v in ctx.thresholds.items()}}


__all__ = ["train_zoo_model", "stage_amp", "install", "summary", "summaries", "find_recipe", "clean_sweep",
           "PAPER_VGG16BN_SWEEP"]
