"""Early-exit evaluation (docs/method.md §4) from one batched all-exit forward.

`evaluate_exits` needs only the per-exit outputs of the inputs (`collect_exit_outputs`),
their labels, the normalised exit costs and the calibrated thresholds: which exit answers
an input under a threshold is a function of its K exit outputs, so the numbers are the
ones one-at-a-time early exit would give (the runtime in `exits.runtime` checks this).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import torch

from torch import nn

from ..metrics.efficacy import efficacy, mean_cost
from .cost import ExitCosts, measure_exit_costs
from .forward import ExitOutputs
from .policies import ExitPolicy, make_policy


def exit_costs_for(model: nn.Module, meta: Optional[Mapping[str, Any]] = None,
                   input_shape: Optional[Sequence[int]] = None, num_exits: Optional[int] = None) -> ExitCosts:
    """The model's per-exit costs: `meta["cost"]` (stored in model.json when it was saved) when
    present and of the right length, else measured now with one forward of batch size 1."""
    meta = meta or {}
    stored = meta.get("cost")
    expected = num_exits or meta.get("exits")
    if isinstance(stored, Mapping) and stored.get("ops") and stored.get("macs"):
        costs = ExitCosts.from_dict(dict(stored))
        if expected is None or len(costs.ops) == int(expected):
            return costs
    if input_shape is None:
        size = meta.get("input_size")
        if not size:
            raise ValueError("input_shape is needed to measure the exit costs")
        input_shape = (3, int(size), int(size))
    return measure_exit_costs(model, tuple(input_shape))


def evaluate_threshold(outputs: ExitOutputs, labels: Optional[torch.Tensor], costs: Sequence[float],
                       threshold: float, policy: Optional[str | ExitPolicy] = None) -> Dict[str, Any]:
    """threshold, accuracy, efficacy, exit_counts (per exit, final last) and mean_cost."""
    policy = make_policy(policy)
    if len(costs) != outputs.num_exits:
        raise ValueError(f"{len(costs)} exit costs for a model with {outputs.num_exits} exits")
    idx, pred = policy.exit_predictions(outputs, threshold)
    counts = torch.bincount(idx, minlength=outputs.num_exits).tolist()
    acc = None
    if labels is not None and len(labels):
        acc = int((pred == labels.to(pred.device).long()).sum()) / len(labels)
    return {"threshold": float(threshold), "accuracy": acc, "efficacy": efficacy(counts, costs),
            "exit_counts": counts, "mean_cost": mean_cost(counts, costs)}


def _threshold_of(value) -> float:
    return float(value["threshold"] if isinstance(value, Mapping) else value)


def evaluate_exits(outputs: ExitOutputs, labels: Optional[torch.Tensor], costs: Sequence[float],
                   thresholds: Mapping[str, Any], policy: Optional[str | ExitPolicy] = None) -> Dict[str, Any]:
    """Final-exit and per-exit accuracy, and for every RAD budget of `thresholds` (as
    `calibrate_thresholds` returns them, or {"5": 0.8, ...}) the early-exit accuracy,
    efficacy, exit histogram and mean normalised cost."""
    per_exit = None
    if labels is not None and len(outputs):
        correct = (outputs.prediction == labels.to(outputs.prediction.device).long().unsqueeze(0)).sum(dim=1)
        per_exit = [int(c) / len(outputs) for c in correct]  # exact fractions, not float32 means
    result: Dict[str, Any] = {
        "n": len(outputs),
        "final_accuracy": per_exit[-1] if per_exit is not None else None,
        "per_exit_accuracy": per_exit,
        "rad": {str(k): evaluate_threshold(outputs, labels, costs, _threshold_of(v), policy)
                for k, v in thresholds.items()},
    }
    return result


__all__ = ["evaluate_exits", "evaluate_threshold", "exit_costs_for"]
