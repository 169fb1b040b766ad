"""`deepsloth evaluate --model DIR [--inputs FILE] [--rad 5 15] [--n N] [--json]`.

Early-exit accuracy, efficacy, exit histogram and mean cost per RAD budget, from one
batched all-exit forward over the inputs (the clean test set, or an attack result). The
thresholds are calibrated on clean test images and cached in `<model>/thresholds.json`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..adversarial import adversarial_inputs
from ..data import load_dataset
from ..device import resolve_device
from ..errors import DeepslothError
from ..exits.calibrate import DEFAULT_RADS, calibration_for
from ..exits.cost import ExitCosts
from ..exits.evaluate import evaluate_exits, exit_costs_for
from ..exits.forward import ExitOutputs, collect_exit_outputs
from ..exits.policies import POLICIES, ExitPolicy, make_policy
from ..io import write_json
from ..metrics.efficacy import efficacy, efficacy_reduction
from ..models.zoo import load_model
from .common import add_data_root, add_device, add_json, emit, positive_int


@dataclass
class Context:
    """What `evaluate` and `latency` share: model, data, costs and calibrated thresholds."""

    device: torch.device
    model: torch.nn.Module
    meta: Dict[str, Any]
    path: Path
    policy: ExitPolicy
    costs: ExitCosts
    clean_images: torch.Tensor          # the first n clean test images (uint8)
    clean_labels: torch.Tensor
    thresholds: Dict[str, Dict[str, Any]]
    calibration: Dict[str, Any]
    clean_outputs: Optional[ExitOutputs]  # set when the clean inputs were run (and n == calib n)
    adv_images: Optional[torch.Tensor] = None
    adv_labels: Optional[torch.Tensor] = None
    adv_record: Optional[Dict[str, Any]] = None

    @property
    def num_exits(self) -> int:
        return len(self.costs.ops)


def rad_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"RAD budget must be in [0, 100), got {value:g}")
    return value


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory or zoo name")
    p.add_argument("--inputs", default=None,
                   help="attack result (.safetensors/.json written by `deepsloth attack`): adversarial "
                        "samples or a universal / class-universal perturbation (default: clean inputs)")
    p.add_argument("--rad", type=rad_value, nargs="+", default=list(DEFAULT_RADS), metavar="R",
                   help="relative accuracy drop budgets in percent (default: 5 15)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="use the first N test images in the dataset's fixed order (default: all)")
    p.add_argument("--calib-n", type=positive_int, default=None,
                   help="calibrate thresholds on the first N clean test images (default: --n, else all)")
    p.add_argument("--policy", default="confidence", choices=POLICIES,
                   help="exit policy: confidence (max softmax >= q, the paper's), entropy or patience")
    p.add_argument("--batch-size", type=positive_int, default=500, help="batch size of the forward pass")
    add_device(p)
    add_data_root(p)


def load_context(args, need_clean_outputs: bool, check_exits=None) -> Context:
    """Model, clean test images, attack inputs, costs and thresholds for `args`.

    `check_exits(K)` is called before any forward pass, to reject bad options early."""
    device = resolve_device(args.device)
    model, meta, path = load_model(args.model, device)
    if device.type == "cpu":
        # as in training: CPU convolutions run ~30% faster in channels-last layout. Every
        # forward of the command (batched and the early-exit runtime) uses the same model.
        model = model.to(memory_format=torch.channels_last)
    test = load_dataset(meta["dataset"], "test", args.data_root)
    total = len(test)
    for flag, value in (("--n", args.n), ("--calib-n", args.calib_n)):
        if value is not None and value > total:
            raise DeepslothError(f"{flag} {value} exceeds the {total} images of the {meta['dataset']} test split")
    n = args.n or total
    calib_n = args.calib_n or n
    policy = make_policy(args.policy, meta.get("num_classes") or test.num_classes)
    images, labels = test.images[:n], test.labels[:n]
    costs = exit_costs_for(model, meta, tuple(test.images.shape[1:]))
    if check_exits is not None:
        check_exits(len(costs.ops))
    adv = (None, None, None)
    if args.inputs:  # read the attack result first: a bad file fails before any forward
        x, y, record = adversarial_inputs(args.inputs, test.images, test.labels, n=args.n)
        if tuple(x.shape[1:]) != tuple(test.images.shape[1:]):
            raise DeepslothError(f"{args.inputs}: inputs of shape {tuple(x.shape[1:])} do not fit the model's "
                                 f"{tuple(test.images.shape[1:])}")
        adv = (x, y, record)

    clean_outputs = None
    if need_clean_outputs:
        clean_outputs = collect_exit_outputs(model, images, batch_size=args.batch_size, device=device,
                                             desc="clean forward")
        if clean_outputs.num_exits != len(costs.ops):
            raise DeepslothError(f"the model returns {clean_outputs.num_exits} exits but its cost "
                                 f"record has {len(costs.ops)}")
    thresholds, info = calibration_for(
        path, model, meta, test.images[:calib_n], test.labels[:calib_n], rads=args.rad, policy=policy,
        device=device, outputs=clean_outputs if calib_n == n else None, batch_size=args.batch_size)
    ctx = Context(device, model, meta, Path(path), policy, costs, images, labels, thresholds, info,
                  clean_outputs)
    ctx.adv_images, ctx.adv_labels, ctx.adv_record = adv
    return ctx


def clean_counts_from_sweep(info: Dict[str, Any], threshold: float):
    """Clean exit histogram at `threshold`, from the stored calibration sweep."""
    for row in info["sweep"]:
        if abs(row["threshold"] - threshold) < 1e-12:
            return row["exit_counts"]
    return None


def inputs_summary(args, ctx: Context) -> Dict[str, Any]:
    if not args.inputs:
        return {"source": "clean", "dataset": ctx.meta["dataset"], "split": "test"}
    record = ctx.adv_record or {}
    return {"source": str(args.inputs), "kind": record.get("kind"), "record": record}


def run_evaluate(args) -> Dict[str, Any]:
    ctx = load_context(args, need_clean_outputs=not args.inputs)
    if args.inputs:
        outputs = collect_exit_outputs(ctx.model, ctx.adv_images, batch_size=args.batch_size,
                                       device=ctx.device, desc="adversarial forward")
        labels = ctx.adv_labels
    else:
        outputs, labels = ctx.clean_outputs, ctx.clean_labels
    costs = ctx.costs.normalised
    result = evaluate_exits(outputs, labels, costs, ctx.thresholds, ctx.policy)
    for key, entry in result["rad"].items():
        entry["rad"] = float(key)
        if args.inputs:
            clean = clean_counts_from_sweep(ctx.calibration, entry["threshold"])
            if clean is not None:
                entry["clean_efficacy"] = efficacy(clean, costs)
                entry["efficacy_reduction"] = (efficacy_reduction(entry["clean_efficacy"], entry["efficacy"])
                                               if entry["clean_efficacy"] > 0 else None)
    result.update({
        "model": str(ctx.path), "arch": ctx.meta.get("arch"), "dataset": ctx.meta.get("dataset"),
        "mode": ctx.meta.get("mode"), "exits": ctx.num_exits, "policy": ctx.policy.describe(),
        "inputs": inputs_summary(args, ctx),
        "calibration": {"n": ctx.calibration["n"], "cached": ctx.calibration["cached"],
                        "file": ctx.calibration["path"],
                        "reference_accuracy": ctx.calibration["reference_accuracy"]},
        "cost": {"convention": ctx.costs.convention, "normalised": costs, "total_ops": ctx.costs.total_ops},
    })
    if args.plot:
        curves = {}
        for key, entry in result["rad"].items():
            label = f"RAD {key}%, q={entry['threshold']:g}"
            if args.inputs:
                clean = clean_counts_from_sweep(ctx.calibration, entry["threshold"])
                if clean is not None:
                    curves[f"clean, {label}"] = (clean, costs)
                curves[f"adversarial, {label}"] = (entry["exit_counts"], costs)
            else:
                curves[label] = (entry["exit_counts"], costs)
        from ..metrics.plots import plot_eec
        plot_eec(curves, args.plot, title=f"EEC: {ctx.meta.get('arch')} on {ctx.meta.get('dataset')}")
        result["plot"] = str(args.plot)
    if args.out:
        write_json(args.out, result)
    return result


def _pct(v) -> str:
    return "n/a" if v is None else f"{v * 100:.2f}%"


def print_report(r: Dict[str, Any]) -> None:
    src = r["inputs"]["source"]
    what = f"{r['n']} clean {r['dataset']} test images" if src == "clean" else f"{r['n']} inputs from {src}"
    print(f"{r['arch']} ({r['mode']}, {r['exits']} exits) on {what}")
    cal = r["calibration"]
    print(f"thresholds: {r['policy']['name']} policy, calibrated on {cal['n']} clean test images "
          f"({'reused' if cal['cached'] else 'new'}; {cal['file'] or 'not cached'})")
    print(f"final-exit accuracy  {_pct(r['final_accuracy'])}")
    if r["per_exit_accuracy"] is not None:
        print("per-exit accuracy %  " + " ".join(f"{a * 100:.1f}" for a in r["per_exit_accuracy"]))
    for key, e in r["rad"].items():
        line = (f"RAD {key:>4}%: threshold {e['threshold']:g}  accuracy {_pct(e['accuracy'])}  "
                f"efficacy {e['efficacy']:.3f}  mean cost {e['mean_cost']:.3f}")
        if e.get("clean_efficacy") is not None:
            red = e.get("efficacy_reduction")
            line += f"  (clean efficacy {e['clean_efficacy']:.3f}, reduction " + \
                    ("n/a" if red is None else f"{red * 100:.1f}%") + ")"
        print(line)
        print("           exits    " + " ".join(str(c) for c in e["exit_counts"]))
    if r.get("plot"):
        print(f"EEC plot: {r['plot']}")


def run(args) -> int:
    return emit(run_evaluate(args), args.json, print_report)


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="early-exit accuracy, efficacy and exit histogram per RAD budget",
                       description="Evaluate a multi-exit model with early exit on the clean test set or on an "
                                   "attack result. Thresholds are calibrated on clean test images (SPEC 4.2: the "
                                   "smallest q in 0.05..0.95 whose early-exit accuracy stays above "
                                   "(1 - RAD) x final-exit accuracy) and cached in <model>/thresholds.json. "
                                   "Everything comes from one batched all-exit forward.")
    add_common(p)
    p.add_argument("--plot", default=None, metavar="PNG", help="write an EEC plot (efficacy in the legend)")
    p.add_argument("--out", default=None, metavar="JSON", help="also write the result to this JSON file")
    add_json(p)
    p.set_defaults(func=run)
