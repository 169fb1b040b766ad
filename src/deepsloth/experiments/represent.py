"""Internal representations of clean, PGD and DeepSloth inputs (docs/method.md §10.1).

    rep = represent(ctx, out_dir="represent")      # ctx: load_context(model, label=C, n=N)

For the N test images of one class and their PGD (final exit) and per-sample DeepSloth versions
(both with the default hyper-parameters, crafted through `experiments.craft`), per exit:

* the distribution of the exit's max-softmax (its confidence: the exit fires when it is >= q),
* the distribution of its normalised entropy H(p) / log C (1 = uniform),
* how often the exit's prediction agrees with the final exit's prediction for the same input,
* a 2-D PCA projection of the IC's input features (the block output the IC reads), fitted on the
  clean inputs' features and applied to all three sets.

Writes `represent.json` (all the numbers), `exit-XX.png` (one figure per exit: PCA scatter and
both distributions), `summary.png` (the statistics across exits, with the thresholds) and
`images.png` (the inputs and their adversarial versions). DeepSloth inputs should sit near
uniform (entropy near 1, confidence near 1/C) at every IC, PGD inputs stay confident.
"""
from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from .. import __version__
from ..attacks.registry import resolve_spec
from ..io import write_json
from .context import Context
from .craft import craft

SETS = ("clean", "PGD", "DeepSloth")
COLOURS = {"clean": "black", "PGD": "tab:blue", "DeepSloth": "tab:red"}


def exit_statistics(logits: Sequence[torch.Tensor]) -> Dict[str, List[torch.Tensor]]:
    """Per exit: max-softmax [N], normalised entropy [N] and agreement with the final exit [N]."""
    final_pred = logits[-1].argmax(dim=1)
    conf, ent, agree = [], [], []
    for z in logits:
        p = torch.softmax(z.double(), dim=1)
        c = p.shape[1]
        conf.append(p.max(dim=1).values.float())
        h = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=1) / math.log(c)
        ent.append(h.float())
        agree.append((z.argmax(dim=1) == final_pred).float())
    return {"max_softmax": conf, "entropy": ent, "agreement": agree}


def ic_features(model: nn.Module, x: torch.Tensor, batch_size: int = 250) -> List[torch.Tensor]:
    """The input of every exit head (flattened), from forward pre-hooks on `model.ics` and the final
    head; models without `ics` give an empty list (no PCA then)."""
    heads = list(getattr(model, "ics", [])) + ([model.head] if hasattr(model, "head") else [])
    if not heads:
        return []
    feats: List[List[torch.Tensor]] = [[] for _ in heads]
    hooks = [h.register_forward_pre_hook(lambda mod, inp, i=i: feats[i].append(inp[0].detach().flatten(1).cpu()))
             for i, h in enumerate(heads)]
    try:
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                model(x[s:s + batch_size])
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(f) for f in feats]


def pca_2d(fit: torch.Tensor, *others: torch.Tensor):
    """PCA fitted on `fit` [n, d]: (projections of fit and of each of `others`, explained variance ratios)."""
    mean = fit.double().mean(dim=0, keepdim=True)
    centred = fit.double() - mean
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    comps = vh[:2]
    total = float((s ** 2).sum()) or 1.0
    ratio = [float(v) / total for v in (s[:2] ** 2)]
    project = lambda t: ((t.double() - mean) @ comps.T).float()
    return [project(fit)] + [project(t) for t in others], ratio


def _quantiles(v: torch.Tensor) -> Dict[str, float]:
    q = torch.quantile(v.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return {"mean": float(v.double().mean()), "p10": q[0], "median": q[1], "p90": q[2]}


def represent(ctx: Context, out_dir: Path | str, *, seed: int = 0, batch_size: int = 128,
              results_dir: Optional[Path | str] = None) -> Dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adv_dir = Path(results_dir) if results_dir is not None else out / "adversarial"
    inputs = {"clean": ctx.clean}
    for name, cell in (("PGD", "pgd-linf-sample"), ("DeepSloth", "deepsloth-linf-sample")):
        spec = resolve_spec(cell, dataset=ctx.dataset)
        inputs[name] = craft(ctx, spec, seed=seed, batch_size=batch_size, out_dir=adv_dir).inputs
    model = ctx.model
    logits = {}
    with torch.no_grad():
        for name, x in inputs.items():
            outs = [model(x[s:s + 250]) for s in range(0, len(x), 250)]
            logits[name] = [torch.cat([o[k] for o in outs]).cpu() for k in range(len(outs[0]))]
    stats = {name: exit_statistics(z) for name, z in logits.items()}
    feats = {name: ic_features(model, x) for name, x in inputs.items()}
    k = ctx.num_exits
    thresholds = {key: v["threshold"] for key, v in ctx.thresholds.items()}
    exits: List[Dict[str, Any]] = []
    projections = []
    for i in range(k):
        entry: Dict[str, Any] = {"exit": i + 1, "cost": ctx.costs.normalised[i]}
        for name in SETS:
            entry[name] = {"max_softmax": _quantiles(stats[name]["max_softmax"][i]),
                           "entropy": _quantiles(stats[name]["entropy"][i]),
                           "agreement_with_final": float(stats[name]["agreement"][i].mean()),
                           "fires": {key: float((stats[name]["max_softmax"][i] >= q).float().mean())
                                     for key, q in thresholds.items()}}
        if feats["clean"] and i < len(feats["clean"]):
            proj, ratio = pca_2d(feats["clean"][i], feats["PGD"][i], feats["DeepSloth"][i])
            entry["pca"] = {"features": int(feats["clean"][i].shape[1]), "explained_variance": ratio}
            projections.append(dict(zip(SETS, proj)))
        else:
            projections.append(None)
        exits.append(entry)
    cls = ctx.label if ctx.label is not None else None
    record = {"format": "deepsloth-represent/1", "package_version": __version__,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "model": ctx.model_record(), "data": ctx.data_record(),
              "class": cls, "class_name": ctx.test.classes[cls] if cls is not None and ctx.test.classes else None,
              "thresholds": thresholds, "num_classes": int(logits["clean"][0].shape[1]),
              "attacks": {"PGD": resolve_spec("pgd-linf-sample", dataset=ctx.dataset).to_dict(),
                          "DeepSloth": resolve_spec("deepsloth-linf-sample", dataset=ctx.dataset).to_dict()},
              "seed": seed, "exits": exits}
    write_json(out / "represent.json", record)
    from .represent_figures import plot_exit, plot_images, plot_summary
    for i in range(k):
        plot_exit(record, i, stats, projections[i], out / f"exit-{i + 1:02d}.png")
    plot_summary(record, out / "summary.png")
    plot_images(inputs, logits, ctx.test.classes, out / "images.png")
    return record


__all__ = ["represent", "exit_statistics", "ic_features", "pca_2d"]
