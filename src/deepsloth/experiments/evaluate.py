"""Evaluating a model on its clean inputs, or on a saved attack result, as a comparison.

    ctx = load_context("resnet56_sdn_cifar10", n=1000)
    rec = evaluate_result(ctx, "results/resnet56_sdn_cifar10/adversarial/deepsloth-linf-sample-<key>")
    rec = evaluate_clean(ctx)           # the clean row: thresholds, accuracies, efficacy per RAD

An attack result is checked before any forward: its kind and tensors, its dataset and input size
(an error naming both sides when they differ from the model's), its size against the context's
`n` (an error), pixels in [0, 1] and labels in range (errors). A result crafted on another model
is accepted with a warning naming both models: transfer studies do that on purpose.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict

import torch

from ..adversarial import load_adversarial
from ..attacks.registry import AttackSpec
from ..errors import DeepslothError
from .compare import compare
from .context import Context
from .craft import Crafted, _inputs_for


class OtherModelWarning(UserWarning):
    """An attack result crafted on a different model than the one it is evaluated on."""


def load_result(ctx: Context, path: os.PathLike | str) -> Crafted:
    """A saved attack result as crafted inputs for `ctx`, validated (see the module docstring)."""
    kind, tensors, record = load_adversarial(path)
    model = record.get("model") or {}
    where = str(path)
    if model.get("dataset") and model["dataset"] != ctx.dataset:
        raise DeepslothError(f"{where} was made for {model['dataset']}, the model is a {ctx.dataset} model")
    size = int(ctx.test.images.shape[-1])
    t = tensors["images"] if kind == "samples" else tensors["delta"] if kind == "universal" else tensors["deltas"]
    if tuple(t.shape[-3:]) != (3, size, size):
        raise DeepslothError(f"{where} holds {tuple(t.shape[-3:])} inputs, the model takes {(3, size, size)}")
    if not torch.isfinite(t).all():
        raise DeepslothError(f"{where} holds non-finite values")
    if kind == "samples":
        if len(t) != ctx.n:
            raise DeepslothError(f"{where} holds {len(t)} inputs but {ctx.n} clean inputs were selected; "
                                 f"pass n={len(t)} (--n {len(t)})")
        if float(t.min()) < 0 or float(t.max()) > 1:
            raise DeepslothError(f"{where}: pixels outside [0, 1]")
        labels = tensors["labels"].long()
        k = int(ctx.meta.get("num_classes") or ctx.test.num_classes)
        if len(labels) != len(t) or (len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= k)):
            raise DeepslothError(f"{where}: labels missing or outside 0..{k - 1}")
        if "indices" in tensors and not torch.equal(tensors["labels"].long(), ctx.labels):
            raise DeepslothError(f"{where}: its labels differ from the selected test images' (another data "
                                 f"selection?)")
    elif kind == "class-universal" and len(t) != int(ctx.meta.get("num_classes") or ctx.test.num_classes):
        raise DeepslothError(f"{where} has {len(t)} class perturbations, the model {ctx.meta.get('num_classes')} classes")
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
    inputs, labels = _inputs_for(ctx, kind, tensors)
    return Crafted(spec, int(record.get("seed") or 0), kind, inputs, labels, tensors, record, None, reused=True)


def evaluate_result(ctx: Context, path: os.PathLike | str) -> Dict[str, Any]:
    crafted = load_result(ctx, path)
    rec = compare(ctx, crafted)
    rec["crafting"]["file"] = str(path)
    return rec


def evaluate_clean(ctx: Context) -> Dict[str, Any]:
    return compare(ctx, None)


__all__ = ["load_result", "evaluate_result", "evaluate_clean", "OtherModelWarning"]
