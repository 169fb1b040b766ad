"""On-disk format of attack results, shared by `attack`, `evaluate`, `latency` and `audit`.

An attack result is `<name>.safetensors` plus `<name>.json` (the record: kind, attack
config, seed, model, dataset, achieved norms, time). Three kinds:

* ``samples``: `images` float32 [N,3,H,W] in [0, 1] (adversarial versions of test images),
  `indices` int64 [N] (their positions in the stored test split) and `labels` int64 [N];
* ``universal``: `delta` float32 [3,H,W], applied to any input as clamp(x + delta, 0, 1);
* ``class-universal``: `deltas` float32 [C,3,H,W], input of class y gets deltas[y].
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from .errors import DeepslothError
from .io import load_tensors, read_json, save_tensors, write_json

KINDS = {"samples": ("images", "indices", "labels"), "universal": ("delta",),
         "class-universal": ("deltas",)}


def _paths(path: os.PathLike | str) -> Tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_adversarial(path: os.PathLike | str, kind: str, tensors: Dict[str, torch.Tensor],
                     record: Dict[str, Any]) -> Path:
    """Write tensors and record; returns the .safetensors path."""
    if kind not in KINDS:
        raise ValueError(f"unknown adversarial kind {kind!r}")
    missing = [k for k in KINDS[kind] if k not in tensors]
    if missing:
        raise ValueError(f"{kind} result needs tensors {missing}")
    st, js = _paths(path)
    save_tensors(st, tensors, metadata={"kind": kind})
    write_json(js, dict(record, kind=kind))
    return st


def load_adversarial(path: os.PathLike | str) -> Tuple[str, Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read an attack result: (kind, tensors, record)."""
    st, js = _paths(path)
    if not st.is_file():
        raise DeepslothError(f"attack result not found: {st}")
    record = read_json(js) if js.is_file() else {}
    if not isinstance(record, dict):
        raise DeepslothError(f"{js}: expected a JSON object, got {type(record).__name__}")
    tensors = load_tensors(st)
    kind = record.get("kind")
    if kind is None:
        kind = next((k for k, names in KINDS.items() if all(n in tensors for n in names)), None)
    if kind not in KINDS or any(n not in tensors for n in KINDS[kind]):
        raise DeepslothError(f"{st} is not an attack result (expected tensors of one of: "
                             + "; ".join(f"{k}: {', '.join(v)}" for k, v in KINDS.items()) + ")")
    return kind, tensors, record


def apply_perturbation(kind: str, tensors: Dict[str, torch.Tensor], images: torch.Tensor,
                       labels: torch.Tensor) -> torch.Tensor:
    """Adversarial float inputs for clean `images` (uint8 or float) under a universal result."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    if kind == "universal":
        delta = tensors["delta"].to(x.device, x.dtype)
        if delta.shape != x.shape[1:]:
            raise DeepslothError(f"perturbation of shape {tuple(delta.shape)} does not fit inputs {tuple(x.shape[1:])}")
        return (x + delta).clamp_(0, 1)
    if kind == "class-universal":
        deltas = tensors["deltas"].to(x.device, x.dtype)
        if deltas.shape[1:] != x.shape[1:]:
            raise DeepslothError(f"perturbations of shape {tuple(deltas.shape[1:])} do not fit inputs {tuple(x.shape[1:])}")
        return (x + deltas[labels.to(x.device)]).clamp_(0, 1)
    raise DeepslothError(f"{kind!r} results are inputs, not perturbations")


def adversarial_inputs(path: os.PathLike | str, test_images: torch.Tensor, test_labels: torch.Tensor,
                       n: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
    """(inputs, labels, record) to evaluate for an attack result on a test split.

    Per-sample results carry their own inputs; universal ones are applied to the first `n`
    test images (all when `n` is None).
    """
    kind, tensors, record = load_adversarial(path)
    if kind == "samples":
        x, y = tensors["images"].float(), tensors["labels"].long()
        if n is not None:
            x, y = x[:n], y[:n]
        return x, y, record
    images, labels = (test_images, test_labels) if n is None else (test_images[:n], test_labels[:n])
    return apply_perturbation(kind, tensors, images, labels), labels, record
