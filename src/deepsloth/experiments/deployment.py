"""The deployment a defence protects, as an evaluation context (docs/defences.md).

    dctx = deployment(ctx, "jpeg:quality=75")   # the model behind a JPEG, thresholds calibrated again
    dctx = deployment(ctx, "exit-cap:cost=0.5")  # the bare model's thresholds, no input past the cap
    dctx.defence                                 # "jpeg:quality=75" / "exit-cap:k=6"; None for the bare model

* An input transform changes every exit's outputs, so the defended deployment's thresholds are calibrated
  again on its clean outputs (where none keeps a budget, the strictest threshold of the grid, marked
  `"qualified": false`).
* A cap is added to a deployment as it is: the bare model's thresholds, an exit policy that stops every input
  at the cap (`exit-cap:cost=c` and `latency-cap:budget_ms=t` are first made concrete for the model:
  `resolve_cap`).
* A detector only watches: the deployment's exits are the bare model's, and `detection` says which inputs it
  flags.

`compare` evaluates an attack whose spec names a defence (`adaptive-deepsloth`) on this deployment, so
`deepsloth attack --attack adaptive-deepsloth --defence D` measures the defended model, as `deepsloth defend`
does.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..defences import Defence, parse_defence
from ..errors import DeepslothError
from ..exits.calibrate import rad_key, select_threshold, threshold_sweep
from ..exits.forward import as_exit_list
from .context import Context


def defended_context(ctx: Context, *, model=None, policy=None, recalibrate: bool = True,
                     defence: Optional[str] = None) -> Context:
    """`ctx` with the deployment's model (an input transform before the model) and/or exit policy (a cap),
    named `defence`. With `recalibrate`, its thresholds are calibrated again on the defended clean outputs
    (not cached: they belong to the defence); without, the bare model's thresholds are kept (a cap added to a
    deployment)."""
    ctx.latency_model()   # measured on the bare model, shared by the defended one
    keep = {k: v for k, v in ctx._cache.items() if k.startswith("latency") or k in ("wsha", "data")}
    d = dataclasses.replace(ctx, model=model if model is not None else ctx.model,
                            policy=policy if policy is not None else ctx.policy, defence=defence, _cache=keep)
    reset(d)
    outs = d.clean_outputs
    if not recalibrate:
        d._cache["thresholds"], d._cache["calibration"] = ctx.thresholds, ctx.calibration
        return d
    d._cache["thresholds"] = _calibrate(outs, d.labels, d.rads, d.policy)
    first = next(iter(d._cache["thresholds"].values()))
    d._cache["calibration"] = {"n": d.n, "reference_accuracy": first["reference_accuracy"], "cached": False,
                               "path": None}
    return d


def _calibrate(outputs, labels, rads, policy) -> Dict[str, Dict[str, Any]]:
    """docs/method.md §4.2 per budget; where no threshold keeps the defended deployment within the budget (a
    transform can make the internal classifiers much worse than the final exit), the strictest threshold of the
    grid, marked `"qualified": false`."""
    sweep = threshold_sweep(outputs, labels, policy)
    ref = int((outputs.prediction[-1] == labels.to(outputs.prediction.device).long()).sum())
    out = {}
    for r in rads:
        try:
            out[rad_key(r)] = dict(select_threshold(sweep, ref, len(labels), r, policy.name), qualified=True)
        except DeepslothError:
            row = max(sweep, key=lambda x: x["threshold"])
            out[rad_key(r)] = {"threshold": row["threshold"], "accuracy": row["accuracy"], "rad": float(r),
                               "reference_accuracy": ref / max(1, len(labels)), "exit_counts": row["exit_counts"],
                               "policy": policy.name, "qualified": False}
    return out


def reset(ctx: Context) -> None:
    """Reseed a randomised transform's draws, so every evaluation pass sees the same ones."""
    fn = getattr(ctx.model, "reset", None)
    if callable(fn):
        fn()


def resolve_cap(defence: Defence, ctx: Context) -> Tuple[Defence, Dict[str, Any]]:
    """An `exit-cap:cost=c` or `latency-cap:budget_ms=t` made concrete for the model: `exit-cap:k=K`, and how K
    was chosen."""
    if defence.name == "exit-cap" and "k" in defence.params:
        return defence, {}
    costs = list(ctx.costs.normalised)
    if defence.name == "exit-cap":
        c = float(defence.params["cost"])
        below = [i for i, v in enumerate(costs[:-1]) if v <= c]
        if not below:
            raise DeepslothError(f"{defence.spec}: even the first exit costs {costs[0]:.3f} of the network")
        k, why = below[-1], {"cost_limit": c, "exit_cost": costs[below[-1]]}
    else:
        from ..defences.caps import LatencyCap
        cap = LatencyCap(float(defence.params["budget_ms"]), ctx.latency_model())
        k, why = int(cap.k), {"budget_ms": float(defence.params["budget_ms"]), "exit_cost": costs[int(cap.k)]}
    return parse_defence(f"exit-cap:k={k}"), why


def deployment(ctx: Context, defence: Any, *, seed: int = 0) -> Context:
    """The context of the deployment `defence` (a one-line name or a `Defence`) protects; see the module
    docstring. `seed` seeds a randomised transform's draws."""
    d = parse_defence(defence)
    if d.kind == "transform":
        from ..defences.transforms import Transformed
        return defended_context(ctx, model=Transformed(ctx.model, d.transform, seed=seed), defence=d.spec)
    if d.kind == "cap":
        from ..defences.caps import ExitCap
        concrete, _ = resolve_cap(d, ctx)
        return defended_context(ctx, policy=ExitCap(concrete.cap, ctx.policy), recalibrate=False,
                                defence=concrete.spec)
    if d.kind == "detector":
        return dataclasses.replace(ctx, defence=d.spec)   # the same model, outputs and thresholds
    raise DeepslothError(f"{d.spec}: a stream monitor watches traffic, not one deployment's inputs; "
                         f"run deepsloth defend for its alarm rates")


@torch.no_grad()
def exit_logits(ctx: Context, x: torch.Tensor) -> List[torch.Tensor]:
    """Every exit's logits of `x` ([N,3,H,W] in [0, 1] or uint8) on the context's model, in batches (CPU)."""
    parts: List[List[torch.Tensor]] = []
    was = ctx.model.training
    ctx.model.eval()
    try:
        for s in range(0, len(x), ctx.batch_size):
            xb = x[s:s + ctx.batch_size].to(ctx.device)
            xb = xb.float().div_(255) if xb.dtype == torch.uint8 else xb.float()
            parts.append([z.float().cpu() for z in as_exit_list(ctx.model(xb))])
    finally:
        ctx.model.train(was)
    return [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]


@torch.no_grad()
def detector_scores(ctx: Context, detector: Any, x: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A fitted detector's scores [N] (CPU) of `x` (default: the context's clean inputs): an input detector
    reads the inputs, an exit-statistics detector every exit's logits of them on the context's model."""
    x = ctx.clean if x is None else x
    if getattr(detector, "name", None) == "input":
        return detector.score(x.to(ctx.device)).cpu()
    return detector.score(exit_logits(ctx, x)).cpu()


def describe(ctx: Context, adv_inputs: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """What a comparison record says of a defended deployment: the defence, where its thresholds come from, and
    for a detector, at each false-positive rate it was calibrated for, the share of the context's clean inputs it
    flags (its false positives here) and of the attacked inputs `adv_inputs`."""
    d = parse_defence(ctx.defence)
    out: Dict[str, Any] = {"defence": d.spec, "kind": d.kind,
                           "thresholds": "calibrated again on its clean outputs" if d.kind == "transform"
                           else "the bare model's"}
    if d.detector is not None:
        det, fprs = d.detector, sorted(d.detector.thresholds)
        clean = detector_scores(ctx, det)
        out["false_positive_rate"] = {f"{f:g}": det.false_positive_rate(clean, f) for f in fprs}
        if adv_inputs is not None:
            attacked = detector_scores(ctx, det, adv_inputs)
            out["detection"] = {f"{f:g}": det.detection_rate(attacked, f) for f in fprs}
    return out


__all__ = ["deployment", "defended_context", "resolve_cap", "reset", "exit_logits", "detector_scores", "describe"]
