"""Evaluating a model on its clean inputs, or on a saved attack result, as a comparison.

    ctx = load_context("resnet56_sdn_cifar10", n=1000)
    rec = evaluate_result(ctx, "results/resnet56_sdn_cifar10/adversarial/deepsloth-linf-sample-<key>")
    rec = evaluate_clean(ctx)           # the clean row: thresholds, accuracies, efficacy per RAD

An attack result is loaded and validated by `experiments.results.load_result` before any forward.
"""
from __future__ import annotations

import os
from typing import Any, Dict

from .compare import compare
from .context import Context
from .results import OtherModelWarning, load_result


def evaluate_result(ctx: Context, path: os.PathLike | str) -> Dict[str, Any]:
    crafted = load_result(ctx, path)
    rec = compare(ctx, crafted)
    rec["crafting"]["file"] = str(path)
    return rec


def evaluate_clean(ctx: Context) -> Dict[str, Any]:
    return compare(ctx, None)


__all__ = ["load_result", "evaluate_result", "evaluate_clean", "OtherModelWarning"]
