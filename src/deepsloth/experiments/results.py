"""Attack results on disk: save, load, validate against a context, apply (docs/results-format.md).

An attack result is `<stem>.safetensors` plus `<stem>.json` (the record: format, key, spec, seed,
model, data selection, achieved norms, time). Three kinds:

* ``samples``: `images` float32 [N,3,H,W] in [0, 1] (adversarial versions of the context's N clean
  inputs), `indices` int64 [N] (their positions in that selection: 0..N-1) and `labels` int64 [N];
* ``universal``: `delta` float32 [3,H,W], applied to any input as clamp(x + delta, 0, 1);
* ``class-universal``: `deltas` float32 [C,3,H,W]; an input of class y gets deltas[y].

    kind, tensors, record = read_result(path)          # the files, checked against each other
    crafted = load_result(ctx, path)                   # validated against a context, ready to compare
    x_adv = apply_result(kind, tensors, images, labels) # the adversarial inputs for clean images

What loading verifies (a one-line `DeepslothError` otherwise):

* the record's format is one this version reads, and its kind matches the tensors;
* against the context: the dataset, input size, number of inputs, labels and indices of a
  per-sample result, the number of class perturbations, pixels in [0, 1], finite values;
* the norms are recomputed from the tensors (the record's are not trusted), and a perturbation
  larger than the budget the record's spec claims is refused.

A result crafted on another model is accepted with a warning naming both models (transfer
studies do that on purpose).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from ..attacks.base import apply_universal
from ..attacks.norms import norm_report
from ..attacks.registry import AttackSpec
from ..errors import DeepslothError
from ..io import load_tensors, read_json, save_tensors, write_json
from .context import Context

FORMAT = "deepsloth-attack/2"
READABLE = ("deepsloth-attack/1", FORMAT)
KINDS = {"samples": ("images", "indices", "labels"), "universal": ("delta",), "class-universal": ("deltas",)}
KIND_OF_SCOPE = {"sample": "samples", "universal": "universal", "class": "class-universal"}
# slack when checking a perturbation against its budget (float32 rounding of projections)
BUDGET_SLACK = 1e-4


class OtherModelWarning(UserWarning):
    """An attack result crafted on a different model than the one it is evaluated on."""


@dataclass
class Crafted:
    spec: AttackSpec
    seed: int
    kind: str
    inputs: torch.Tensor              # adversarial inputs for the context's clean inputs, float [n,...]
    labels: torch.Tensor
    tensors: Dict[str, torch.Tensor]  # what is saved (images, or the perturbation)
    record: Dict[str, Any]
    path: Optional[Path] = None
    reused: bool = False


def result_paths(path: os.PathLike | str) -> Tuple[Path, Path]:
    """(<stem>.safetensors, <stem>.json) for a stem or either file."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_result(path: os.PathLike | str, kind: str, tensors: Dict[str, torch.Tensor],
                record: Dict[str, Any]) -> Path:
    """Write tensors and record (each atomically); returns the .safetensors path."""
    if kind not in KINDS:
        raise ValueError(f"unknown attack result kind {kind!r}")
    missing = [k for k in KINDS[kind] if k not in tensors]
    if missing:
        raise ValueError(f"{kind} result needs tensors {missing}")
    st, js = result_paths(path)
    save_tensors(st, tensors, metadata={"kind": kind})
    write_json(js, dict(record, kind=kind))
    return st


def read_result(path: os.PathLike | str) -> Tuple[str, Dict[str, torch.Tensor], Dict[str, Any]]:
    """An attack result's (kind, tensors, record), its files checked against each other."""
    st, js = result_paths(path)
    if not st.is_file():
        raise DeepslothError(f"attack result not found: {st}")
    record = read_json(js) if js.is_file() else {}
    if not isinstance(record, dict):
        raise DeepslothError(f"{js}: expected a JSON object, got {type(record).__name__}")
    fmt = record.get("format")
    if fmt is not None and fmt not in READABLE:
        raise DeepslothError(f"{js}: format {fmt!r} is not an attack record this version reads "
                             f"({', '.join(READABLE)}); a newer deepsloth wrote it?")
    tensors = load_tensors(st)
    kind = record.get("kind")
    if kind is None:
        kind = next((k for k, names in KINDS.items() if all(n in tensors for n in names)), None)
    if kind not in KINDS or any(n not in tensors for n in KINDS[kind]):
        raise DeepslothError(f"{st} is not an attack result (expected tensors of one of: "
                             + "; ".join(f"{k}: {', '.join(v)}" for k, v in KINDS.items()) + ")")
    return kind, tensors, record


def apply_result(kind: str, tensors: Dict[str, torch.Tensor], images: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
    """The adversarial float inputs a result gives for clean `images` (uint8 or float) and `labels`:
    a per-sample result's own images, a perturbation applied as clamp(x + delta, 0, 1)."""
    if kind == "samples":
        return tensors["images"].float()
    delta = tensors["delta"] if kind == "universal" else tensors["deltas"]
    try:
        return apply_universal(images, delta, labels if kind == "class-universal" else None)
    except ValueError as exc:
        raise DeepslothError(str(exc)) from None


def _check_budget(where: str, spec: AttackSpec, norms: Dict[str, Any]) -> None:
    eps = spec.params.get("eps")
    if not isinstance(eps, (int, float)) or spec.norm not in norms:
        return
    got = float(norms[spec.norm]["max"])
    if got > float(eps) * (1 + BUDGET_SLACK) + BUDGET_SLACK:
        raise DeepslothError(f"{where}: its perturbation has {spec.norm} norm up to {got:.6g}, beyond the budget "
                             f"{float(eps):.6g} its record's spec claims (edited or foreign tensors?)")


def load_result(ctx: Context, path: os.PathLike | str) -> Crafted:
    """A saved attack result as crafted inputs for `ctx`, validated (see the module docstring)."""
    kind, tensors, record = read_result(path)
    where = str(path)
    model = record.get("model") or {}
    if model.get("dataset") and model["dataset"] != ctx.dataset:
        raise DeepslothError(f"{where} was made for {model['dataset']}, the model is a {ctx.dataset} model")
    size = int(ctx.test.images.shape[-1])
    t = tensors["images"] if kind == "samples" else tensors["delta"] if kind == "universal" else tensors["deltas"]
    if tuple(t.shape[-3:]) != (3, size, size):
        raise DeepslothError(f"{where} holds {tuple(t.shape[-3:])} inputs, the model takes {(3, size, size)}")
    if not torch.isfinite(t).all():
        raise DeepslothError(f"{where} holds non-finite values")
    num_classes = int(ctx.meta.get("num_classes") or ctx.test.num_classes)
    if kind == "samples":
        if len(t) != ctx.n:
            raise DeepslothError(f"{where} holds {len(t)} inputs but {ctx.n} clean inputs were selected; "
                                 f"pass n={len(t)} (--n {len(t)})")
        if float(t.min()) < 0 or float(t.max()) > 1:
            raise DeepslothError(f"{where}: pixels outside [0, 1]")
        labels = tensors["labels"]
        if labels.dtype != torch.int64 or len(labels) != len(t) or (
                len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes)):
            raise DeepslothError(f"{where}: labels missing, not integers or outside 0..{num_classes - 1}")
        if not torch.equal(labels, ctx.labels.long()):
            raise DeepslothError(f"{where}: its labels differ from the selected test images' (another data "
                                 f"selection?)")
        indices = tensors["indices"]
        if indices.dtype != torch.int64 or not torch.equal(indices, torch.arange(ctx.n, dtype=torch.int64)):
            raise DeepslothError(f"{where}: its indices are not the positions 0..{ctx.n - 1} of the selected "
                                 f"test images (another data selection, or edited?)")
    elif kind == "class-universal" and len(t) != num_classes:
        raise DeepslothError(f"{where} has {len(t)} class perturbations, the model {num_classes} classes")
    wsha = model.get("weights_sha256")
    if wsha and wsha != ctx.weights_sha256:
        warnings.warn(f"{where} was crafted on {model.get('name') or model.get('path')} "
                      f"(weights {wsha[:12]}), evaluated on {ctx.name} (weights {ctx.weights_sha256[:12]})",
                      OtherModelWarning, stacklevel=2)
    if isinstance(record.get("spec"), dict):
        spec = AttackSpec.from_dict(record["spec"])
    else:   # a result made elsewhere: named by its file
        scope = {"samples": "sample", "universal": "universal"}.get(kind, "class")
        spec = AttackSpec(f"external:{os.path.basename(str(path))}", "linf", scope, {})
    inputs = apply_result(kind, tensors, ctx.clean, ctx.labels)
    record = dict(record)
    record["norms"] = norm_report(inputs, ctx.clean)            # from the tensors, not from the file
    if kind != "samples":
        delta = t[None] if kind == "universal" else t
        record["perturbation_norms"] = norm_report(delta, torch.zeros_like(delta))
    _check_budget(where, spec, record.get("perturbation_norms") or record["norms"])
    return Crafted(spec, int(record.get("seed") or 0), kind, inputs, ctx.labels, tensors, record, None, reused=True)


def is_attack_record(path: os.PathLike | str) -> bool:
    """True when `path` is the JSON record of an attack result (which no other output may replace)."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".json":
        return False
    if path.with_suffix(".safetensors").is_file():
        return True
    try:
        rec = read_json(path)
    except DeepslothError:
        return False
    return isinstance(rec, dict) and str(rec.get("format", "")).startswith("deepsloth-attack/")


__all__ = ["Crafted", "FORMAT", "KINDS", "KIND_OF_SCOPE", "OtherModelWarning", "result_paths", "save_result",
           "read_result", "apply_result", "load_result", "is_attack_record"]
