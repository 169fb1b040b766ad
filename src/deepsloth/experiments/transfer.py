"""Black-box transfer (docs/method.md §10.2): craft on a surrogate, evaluate on the victim.

    rows = run_transfer(victim_ctx, "surrogate_dir", ["deepsloth-linf-sample", "deepsloth-linf-universal"], out)

The adversarial inputs are crafted on the surrogate from the victim's own clean test inputs (per
sample) or from the surrogate's training pool (universal / class-universal), then compared on the
victim with the victim's clean-calibrated thresholds. Each result is a comparison record (so
`deepsloth report` renders it) with a `transfer` block naming both models and the white-box
reference: the same attack crafted on the victim itself.

Label-based attacks (PGD, UAP, class-universal DeepSloth) need the surrogate to predict the
victim's labels: a surrogate trained on other classes (`--classes`) has other labels, so only
label-free per-sample and universal DeepSloth transfer across class sets; `run_transfer` refuses
the others for such pairs.

Scenarios: `surrogate_fraction` (1: the surrogate saw a share of the victim's training data) and
`class_subsets` (2: victim and surrogate see different class subsets sharing some classes) train
(or reuse) the models they need with `experiments.training`.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..attacks.registry import resolve_spec
from ..errors import DeepslothError
from ..io import write_json
from .compare import compare
from .context import Context, load_context
from .craft import craft
from .grid import comparison_key, run_cell

LABEL_FREE = ("deepsloth-linf-sample", "deepsloth-l2-sample", "deepsloth-l1-sample", "deepsloth-linf-universal",
              "deepsloth-l2-universal", "deepsloth-l1-universal")


def surrogate_context(victim: Context, surrogate: str) -> Context:
    """The surrogate model on the victim's clean inputs (same test images and labels)."""
    ctx = load_context(surrogate, n=None, device=victim.device, data_root=victim.data_root, data=victim.data_kind,
                       batch_size=victim.batch_size)
    if tuple(ctx.test.images.shape[1:]) != tuple(victim.test.images.shape[1:]):
        raise DeepslothError(f"surrogate {surrogate} takes {tuple(ctx.test.images.shape[1:])} inputs, the victim "
                             f"{tuple(victim.test.images.shape[1:])}")
    ctx.test = victim.test   # craft on the victim's inputs; labels stay the victim's
    ctx._cache.pop("data", None)
    ctx._cache.pop("clean", None)
    ctx._cache.pop("clean_out", None)
    return ctx


def same_classes(a: Context, b: Context) -> bool:
    return (a.meta.get("class_subset") or {}).get("classes") == (b.meta.get("class_subset") or {}).get("classes") \
        and a.meta.get("num_classes") == b.meta.get("num_classes")


def run_transfer(victim: Context, surrogate: str, cells: Sequence[str], out_dir: Path | str, *, seed: int = 0,
                 batch_size: int = 128, log: Callable[[str], None] = lambda s: None,
                 extra: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """One transfer record per attack (written to `<out>/<victim>/transfer/`), with white-box references."""
    specs = [resolve_spec(cell, dataset=victim.dataset) for cell in cells]   # bad names fail before any work
    sur = surrogate_context(victim, surrogate)
    if sur.weights_sha256 == victim.weights_sha256:
        raise DeepslothError("the surrogate and the victim are the same model (that is the white-box case)")
    out = Path(out_dir) / victim.name
    rows = []
    for spec in specs:
        if not same_classes(sur, victim) and spec.cell not in LABEL_FREE:
            raise DeepslothError(f"{spec.cell} needs labels the surrogate does not share with the victim (other "
                                 f"classes); use a label-free attack: {', '.join(LABEL_FREE)}")
        white, _, _ = run_cell(victim, spec, out, seed=seed, batch_size=batch_size, log=log)
        crafted = craft(sur, spec, seed=seed, batch_size=batch_size, out_dir=out / "transfer" / sur.name / "adversarial",
                        log=log)
        # the surrogate's context holds the victim's inputs and labels, so `crafted` already
        # holds the victim's adversarial inputs (universal and class-universal deltas applied to them)
        rec = compare(victim, crafted, label=f"{spec.label} from {sur.name}")
        rec["cell"] = f"transfer:{sur.name}:{spec.cell}"
        rec["transfer"] = {"victim": victim.model_record(), "surrogate": sur.model_record(),
                           "white_box": {k: white["rad"][k]["attacked"] | {"efficacy_reduction":
                                                                           white["rad"][k]["efficacy_reduction"]}
                                         for k in white["rad"]},
                           "white_box_final_accuracy": white["attacked"]["final_accuracy"]}
        rec.update(extra or {})
        path = out / "transfer" / f"{sur.name}-{spec.cell}-{comparison_key(victim, crafted.record['key'])[:12]}.json"
        write_json(path, rec)
        r5 = next(iter(rec["rad"]))
        log(f"{spec.cell} from {sur.name}: efficacy reduction {rec['rad'][r5]['efficacy_reduction'] * 100:.1f}% "
            f"(white-box {white['rad'][r5]['efficacy_reduction'] * 100:.1f}%) at RAD {r5}%")
        rows.append(rec)
    return rows


def scenario2_subsets(num_classes: int, c: int, shared: int, seed: int = 0) -> Tuple[List[int], List[int]]:
    """Victim and surrogate class subsets of size c sharing exactly `shared` classes (scenario 2).

    Rule (documented, seeded): shuffle the classes with `random.Random(seed * 1000 + c)`; the victim
    takes the first c; the surrogate takes the first `shared` of the victim's and the next c - shared
    classes after the victim's. The victim does not depend on `shared`, so for one c every surrogate
    attacks the same victim and only the surrogate's knowledge varies. Needs 2c - shared <= number
    of classes."""
    if not 0 <= shared <= c:
        raise DeepslothError(f"shared must be in 0..{c}, got {shared}")
    if 2 * c - shared > num_classes:
        raise DeepslothError(f"{c} classes sharing {shared} need {2 * c - shared} distinct classes, the dataset has "
                             f"{num_classes}")
    order = list(range(num_classes))
    random.Random(seed * 1000 + c).shuffle(order)
    victim = order[:c]
    surrogate = victim[:shared] + order[c:c + (c - shared)]
    return victim, surrogate




def train_sdn(out: Path, *, arch: str, dataset: str, recipe: str, epochs: Optional[int], ic_epochs: Optional[int],
              seed: int, device: str, data_root: Optional[str], log: Callable[[str], None],
              data_fraction: Optional[float] = None, subset_seed: int = 0,
              classes: Optional[List[int]] = None) -> Path:
    """CNN then IC-only SDN under `out` (reused when finished, resumed when interrupted)."""
    from .training import TrainConfig, run_training
    common = dict(arch=arch, dataset=dataset, recipe=recipe, seed=seed, device=device, data_root=data_root)
    for mode, sub, extra in (("cnn", "cnn", dict(epochs=epochs, data_fraction=data_fraction,
                                                  subset_seed=subset_seed, classes=classes)),
                             ("ic-only", "sdn", dict(epochs=ic_epochs, init_from=str(out / "cnn"),
                                                     data_fraction=data_fraction, subset_seed=subset_seed))):
        d = out / sub
        if (d / "model.json").is_file() and not (d / "checkpoint.json").is_file():
            continue
        log(f"training {mode} -> {d}")
        run_training(TrainConfig(out=str(d), mode=mode, resume=(d / "checkpoint.json").is_file(), **common, **extra),
                     log=log)
    return out / "sdn"


def training_summary(out: Path) -> Dict[str, Any]:
    """Both stages of a `train_sdn` run: test accuracies, training images and seconds (CNN + IC-only)."""
    from ..io import read_json
    cnn, sdn = read_json(out / "cnn" / "model.json"), read_json(out / "sdn" / "model.json")
    return {"cnn_final_accuracy": (cnn.get("accuracy") or {}).get("final"),
            "sdn_final_accuracy": (sdn.get("accuracy") or {}).get("final"),
            "sdn_per_exit_accuracy": (sdn.get("accuracy") or {}).get("per_exit"),
            "train_images": cnn.get("train_images"), "cnn_epochs": len(cnn.get("history") or []),
            "ic_epochs": len(sdn.get("history") or []),
            "train_seconds": round((cnn.get("train_seconds") or 0) + (sdn.get("train_seconds") or 0), 1)}


def scenario1(victim: Context, arch: str, fractions: Sequence[float], out_dir: Path | str, *, cells: Sequence[str],
              recipe: str = "fast", epochs: Optional[int] = None, ic_epochs: Optional[int] = None, seed: int = 0,
              subset_seed: int = 0, log: Callable[[str], None] = lambda s: None) -> List[Dict[str, Any]]:
    """Surrogates trained on `fractions` (percent) of the victim's training data, then transfer."""
    rows = []
    for f in fractions:
        tag = f"{arch}-{recipe}-e{epochs}-ic{ic_epochs}-frac{f:g}-s{seed}-ss{subset_seed}"
        sdn = train_sdn(Path(out_dir) / "surrogates" / tag, arch=arch, dataset=victim.dataset, recipe=recipe,
                        epochs=epochs, ic_epochs=ic_epochs, seed=seed, device=str(victim.device),
                        data_root=victim.data_root, log=log, data_fraction=f / 100, subset_seed=subset_seed)
        rows += run_transfer(victim, str(sdn), cells, out_dir, seed=seed, log=log,
                             extra={"scenario": {"name": "scenario1", "fraction_percent": f,
                                                 "surrogate_training": training_summary(sdn.parent)}})
    return rows


def scenario2(arch: str, class_counts: Sequence[int], shared: Sequence[int], out_dir: Path | str, *, dataset: str,
              cells: Sequence[str], recipe: str = "fast", epochs: Optional[int] = None,
              ic_epochs: Optional[int] = None, seed: int = 0, n: Optional[int] = None, device: str = "auto",
              data_root: Optional[str] = None, log: Callable[[str], None] = lambda s: None) -> List[Dict[str, Any]]:
    """For each (c, shared): a victim on one class subset, a surrogate on another sharing `shared`."""
    from ..data.registry import DATASETS
    k = DATASETS[dataset].num_classes
    pairs = [(c, s) for c in class_counts for s in shared if 0 <= s <= c and 2 * c - s <= k]
    if not pairs:   # let the subset rule say why
        scenario2_subsets(k, class_counts[0], shared[0], seed)
    for c, s in [(c, s) for c in class_counts for s in shared if (c, s) not in pairs]:
        log(f"scenario 2: skipping c={c}, shared={s} ({2 * c - s} distinct classes needed, {k} exist)")
    rows = []
    for c, s in pairs:
        v_cls, s_cls = scenario2_subsets(k, c, s, seed)
        base = Path(out_dir) / "scenario2" / f"{arch}-{recipe}-e{epochs}-ic{ic_epochs}-c{c}-s{seed}"
        common = dict(arch=arch, dataset=dataset, recipe=recipe, epochs=epochs, ic_epochs=ic_epochs, seed=seed,
                      device=device, data_root=data_root, log=log)
        v = train_sdn(base / "victim", classes=v_cls, **common)   # one victim per c, reused across `shared`
        sur = train_sdn(base / f"surrogate-shared{s}", classes=s_cls, **common)
        ctx = load_context(str(v), n=n, device=device, data_root=data_root)
        rows += run_transfer(ctx, str(sur), cells, base, seed=seed, log=log, extra={"scenario": {
            "name": "scenario2", "classes": c, "shared": s, "victim_classes": v_cls, "surrogate_classes": s_cls,
            "victim_training": training_summary(v.parent), "surrogate_training": training_summary(sur.parent)}})
    return rows


__all__ = ["run_transfer", "surrogate_context", "scenario2_subsets", "scenario1", "scenario2", "train_sdn",
           "training_summary", "LABEL_FREE"]
