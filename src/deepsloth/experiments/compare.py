"""The one result format: clean vs attacked inputs under the clean-calibrated thresholds.

`compare(ctx, crafted)` (or `compare(ctx, None)` for the clean row) returns a JSON-ready dict
that `attack`, `evaluate --inputs`, `latency`, `audit` and `grid` all print and write, and that
`report` renders. Layout (format "deepsloth-comparison/1", documented in docs/results-format.md):

    format, package_version, created, cell ("clean" or <attack>-<norm>-<scope>), label,
    attack (the resolved spec, or null), attack_id, seed, key (content key of the crafted inputs),
    model {name, path, arch, dataset, mode, exits, num_classes, input_size, weights_sha256},
    data {dataset, split, kind, n, selection, source, sha256}, crafting {seconds, batches, file, ...},
    norms {linf|l2|l1: {max, mean}} achieved against the clean inputs,
    policy, calibration {n, reference_accuracy, cached, file}, costs (normalised, per exit),
    latency_model {split, tx_bytes, bandwidth_bps, rtt_s, device_times, ...},
    clean / attacked {final_accuracy, per_exit_accuracy},
    rad {"5": {threshold, clean {...}, attacked {...}, efficacy_reduction, latency_amplification}, ...}
      where clean / attacked = {accuracy, efficacy, exit_counts, mean_cost, early_exit_fraction,
                                expected_latency_s, offload_fraction}
"""
from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, Optional

import torch

from .. import __version__
from ..exits.evaluate import evaluate_exits
from ..exits.forward import ExitOutputs
from ..metrics.efficacy import efficacy_reduction
from ..metrics.latency import LatencyModel
from .context import Context
from .results import Crafted

FORMAT = "deepsloth-comparison/1"


def _side(result: Dict[str, Any], key: str, lat: LatencyModel) -> Dict[str, Any]:
    r = result["rad"][key]
    counts = r["exit_counts"]
    return {"accuracy": r["accuracy"], "efficacy": r["efficacy"], "exit_counts": counts,
            "mean_cost": r["mean_cost"], "early_exit_fraction": 1.0 - counts[-1] / max(1, sum(counts)),
            "expected_latency_s": lat.expected_latency(counts), "offload_fraction": lat.offload_fraction(counts)}


def compare_outputs(ctx: Context, adv_outputs: ExitOutputs, adv_labels: torch.Tensor,
                    latency: Optional[LatencyModel] = None) -> Dict[str, Any]:
    """The numeric part of a comparison: accuracies and, per RAD budget, both sides."""
    lat = latency or ctx.latency_model()
    costs = ctx.costs.normalised
    clean = evaluate_exits(ctx.clean_outputs, ctx.labels, costs, ctx.thresholds, ctx.policy)
    adv = evaluate_exits(adv_outputs, adv_labels, costs, ctx.thresholds, ctx.policy)
    rad: Dict[str, Any] = {}
    for key in clean["rad"]:
        c, a = _side(clean, key, lat), _side(adv, key, lat)
        rad[key] = {"threshold": clean["rad"][key]["threshold"], "clean": c, "attacked": a,
                    "efficacy_reduction": efficacy_reduction(c["efficacy"], a["efficacy"])
                    if c["efficacy"] > 0 else None,
                    "latency_amplification": a["expected_latency_s"] / c["expected_latency_s"]}
    return {"clean": {"final_accuracy": clean["final_accuracy"], "per_exit_accuracy": clean["per_exit_accuracy"]},
            "attacked": {"final_accuracy": adv["final_accuracy"], "per_exit_accuracy": adv["per_exit_accuracy"]},
            "rad": rad}


def compare(ctx: Context, crafted: Optional[Crafted], *, latency: Optional[LatencyModel] = None,
            label: Optional[str] = None, adv_outputs=None) -> Dict[str, Any]:
    """The comparison record for `crafted` (None: the clean inputs against themselves).
    `adv_outputs`: the attacked inputs' all-exit outputs when already computed (sharded).

    An attack whose spec names a defence (`adaptive-deepsloth`) is evaluated on the deployment that defence
    protects (`experiments.deployment`), unless `ctx` already is one; the record's `deployment` says which."""
    defence = None if crafted is None else crafted.spec.params.get("defence")
    if defence is not None and ctx.defence is None:
        from .deployment import deployment, reset
        ctx, adv_outputs = deployment(ctx, defence, seed=crafted.seed or 0), None
        reset(ctx)   # a randomised transform: the attacked pass draws as the clean one did
    lat = latency or ctx.latency_model()
    if crafted is None:
        adv_out, adv_labels = ctx.clean_outputs, ctx.labels
    else:
        adv_out = adv_outputs if adv_outputs is not None else ctx.outputs(crafted.inputs,
                                                                          desc=f"{crafted.spec.cell} forward")
        adv_labels = crafted.labels
    numbers = compare_outputs(ctx, adv_out, adv_labels, lat)
    cal = ctx.calibration
    rec: Dict[str, Any] = {
        "format": FORMAT, "package_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cell": "clean" if crafted is None else crafted.spec.cell,
        "label": label or ("clean" if crafted is None else crafted.spec.label),
        "attack": None if crafted is None else crafted.spec.to_dict(),
        "attack_id": None if crafted is None else crafted.spec.id,
        "seed": None if crafted is None else crafted.seed,
        "key": None if crafted is None else crafted.record.get("key"),
        "model": ctx.model_record(), "data": ctx.data_record(),
        "crafting": None, "norms": None,
        "policy": ctx.policy.describe(),
        "calibration": {"n": cal["n"], "reference_accuracy": cal["reference_accuracy"], "cached": cal["cached"],
                        "file": cal["path"]},
        "costs": list(ctx.costs.normalised),
        "latency_model": {k: v for k, v in lat.to_dict().items()
                          if k in ("split", "tx_bytes", "bandwidth_bps", "rtt_s", "upload_s", "device_times",
                                   "server_times", "source", "params")},
    }
    if ctx.defence is not None:
        from .deployment import describe
        rec["deployment"] = describe(ctx, None if crafted is None else crafted.inputs)
    if crafted is not None:
        r = crafted.record
        rec["crafting"] = {k: r.get(k) for k in ("seconds", "batches", "batch_size", "craft", "craft_pool",
                                                  "perturbation_norms") if r.get(k) is not None}
        rec["crafting"]["file"] = str(crafted.path) if crafted.path else None
        rec["crafting"]["reused"] = crafted.reused
        rec["norms"] = r.get("norms")
    rec.update(numbers)
    return rec


__all__ = ["compare", "compare_outputs", "FORMAT"]
