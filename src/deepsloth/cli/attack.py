"""`deepsloth attack --model M --attack A --norm N --scope S ...`: craft, save, evaluate.

* per-sample (`--scope sample`): the first `--n` test images in the dataset's stored order
  (the ones `evaluate --n N` uses), crafted in batches of `--batch-size`. Finished batches go
  to `<out>.partial/` with a progress file keyed by the run's configuration, so a killed run
  resumes where it stopped (each batch has its own seed, derived from `--seed` and the
  batch's first index, so the resumed result is identical to an uninterrupted one).
* universal (`--scope universal`, and `--attack uap`): crafted on training inputs, applied to
  the first `--n` test images.
* class-universal (`--scope class`): one perturbation per class of the dataset, each crafted
  on that class's training inputs and applied to the test inputs of that class.

The result is written with `deepsloth.adversarial.save_adversarial` (safetensors + a JSON
record: attack configuration, seed, model, achieved norms against the clean inputs, time,
package version) and then evaluated with the clean-calibrated thresholds (efficacy and
early-exit accuracy at each RAD budget, efficacy reduction).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from .. import __version__
from ..adversarial import save_adversarial
from ..errors import DeepslothError
from ..exits.calibrate import load_or_calibrate_thresholds
from ..exits.evaluate import evaluate_exits, exit_costs_for
from ..exits.forward import collect_exit_outputs
from ..io import load_tensors, read_json, save_tensors, write_json
from ..metrics.efficacy import efficacy_reduction
from ..progress import progress
from .common import add_data_root, add_device, add_json, emit, positive_int

ATTACKS = ("deepsloth", "pgd", "pgd-avg", "pgd-max", "uap")
PGD_OBJECTIVES = {"pgd": "final", "pgd-avg": "avg", "pgd-max": "max"}
KIND = {"sample": "samples", "universal": "universal", "class": "class-universal"}
DEFAULT_BATCH = 128


def number(text: str) -> float:
    """A float, or a fraction such as 8/255."""
    try:
        return float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 0.03 or 8/255, got {text!r}") from None


# ----------------------------------------------------------------------------- attack setup

def build_attack(args, model, meta: Dict[str, Any]):
    """The attack object for the command-line options (raises DeepslothError on bad combos)."""
    from ..attacks import PGD, UAP, DeepSloth

    scope = args.scope or ("universal" if args.attack == "uap" else "sample")
    if args.attack in PGD_OBJECTIVES and scope != "sample":
        raise DeepslothError(f"{args.attack} is a per-sample attack; use --scope sample")
    if args.attack == "uap":
        if scope != "universal":
            raise DeepslothError("uap crafts one universal perturbation; use --scope universal")
        if args.norm != "linf":
            raise DeepslothError("uap is an l_inf attack (SPEC 5.1); use --norm linf")
    for flag in ("craft_n", "epochs", "preset"):
        allowed = scope != "sample" and (args.attack == "deepsloth" or flag != "preset")
        if getattr(args, flag) is not None and not allowed:
            raise DeepslothError(f"--{flag.replace('_', '-')} only applies to universal / class attacks")
    common = dict(seed=args.seed, device=args.device_obj)
    if args.attack in PGD_OBJECTIVES:
        atk = PGD(model, objective=PGD_OBJECTIVES[args.attack], norm=args.norm, eps=args.eps,
                  steps=args.steps, step_size=args.step_size, **common)
    elif args.attack == "uap":
        kw = {k: v for k, v in dict(eps=args.eps, max_iter_df=args.steps, n_images=args.craft_n,
                                    max_passes=args.epochs, batch_size=args.batch_size).items()
              if v is not None}
        if args.step_size is not None:
            raise DeepslothError("uap has no step size (DeepFool finds its own steps)")
        atk = UAP(model, **kw, **common)
    else:
        extra = {}
        if scope != "sample":
            extra = dict(n_images=args.craft_n, epochs=args.epochs, preset=args.preset or "reference",
                         batch_size=args.batch_size)
        atk = DeepSloth(model, norm=args.norm, scope=scope, eps=args.eps, steps=args.steps,
                        step_size=args.step_size, dataset=meta.get("dataset"),
                        num_classes=meta.get("num_classes"), **extra, **common)
    return atk, scope


def default_out(model_path: Path, name: str) -> Path:
    from ..models.zoo import ZOO_DIR
    try:
        inside_zoo = model_path.resolve().is_relative_to(ZOO_DIR.resolve())
    except (OSError, ValueError):
        inside_zoo = False
    if not inside_zoo:
        folder = model_path / "attacks"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder / name
        except OSError:
            pass
    return Path("deepsloth-attacks") / model_path.name / name


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- per-sample, resumable

class PartialRun:
    """`<out>.partial/`: one safetensors file per finished batch and `progress.json`
    ({"key", "config", "done": {start: seconds}}). A different key discards the folder."""

    def __init__(self, out: Path, key: str, config: Dict[str, Any]):
        self.dir = out.with_name(out.name + ".partial")
        self.key, self.config = key, config
        self.done: Dict[str, float] = {}
        self.resumed = False
        prog = self.dir / "progress.json"
        if prog.is_file():
            try:
                state = read_json(prog)
            except DeepslothError:
                state = {}
            if state.get("key") == key:
                self.done = {s: float(t) for s, t in state.get("done", {}).items()
                             if (self.dir / self._name(int(s))).is_file()}
                self.resumed = bool(self.done)
            else:
                print(f"deepsloth: discarding {self.dir} (left by a run with another configuration)",
                      file=sys.stderr)
                shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _name(start: int) -> str:
        return f"batch-{start:09d}.safetensors"

    def has(self, start: int) -> bool:
        return str(start) in self.done

    def load(self, start: int) -> torch.Tensor:
        return load_tensors(self.dir / self._name(start))["images"]

    def save(self, start: int, images: torch.Tensor, seconds: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        save_tensors(self.dir / self._name(start), {"images": images})
        self.done[str(start)] = seconds
        write_json(self.dir / "progress.json", {"key": self.key, "config": self.config, "done": self.done})

    def seconds(self) -> float:
        return float(sum(self.done.values()))

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def craft_samples(attack, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int,
                  partial: PartialRun, device: torch.device) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Per-sample attack over `images` in batches, skipping (and reusing) finished batches."""
    from ..attacks import derive_seed

    starts = list(range(0, len(images), batch_size))
    crafted = sum(1 for s in starts if not partial.has(s))
    outs: List[torch.Tensor] = []
    for start in progress(starts, desc=f"{attack.name} batches", unit="batch"):
        if partial.has(start):
            outs.append(partial.load(start))
            continue
        t0 = time.perf_counter()
        x = images[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        x_adv = attack(x, y, seed=derive_seed(seed, "batch", start)).float().cpu()
        partial.save(start, x_adv, time.perf_counter() - t0)
        outs.append(x_adv)
    info = {"batches": len(starts), "batches_crafted_now": crafted,
            "batches_resumed": len(starts) - crafted}
    return torch.cat(outs) if outs else images.new_zeros((0,) + tuple(images.shape[1:])).float(), info


# ----------------------------------------------------------------------------- evaluation

def evaluate_attack(model, meta, model_path, clean_images, adv_inputs, labels, device, batch_size,
                    rads) -> Dict[str, Any]:
    """Clean vs attacked with the evaluation API (thresholds calibrated on the clean inputs)."""
    costs = exit_costs_for(model, meta, tuple(clean_images.shape[1:])).normalised
    clean_out = collect_exit_outputs(model, clean_images, batch_size=batch_size, device=device,
                                     desc="clean forward")
    adv_out = collect_exit_outputs(model, adv_inputs, batch_size=batch_size, device=device,
                                   desc="adversarial forward")
    try:
        thresholds = load_or_calibrate_thresholds(model_path, model, meta, clean_images, labels,
                                                  rads=rads, device=device, outputs=clean_out,
                                                  batch_size=batch_size)
    except DeepslothError as exc:
        return {"skipped": f"threshold calibration failed: {exc}",
                "clean": {"final_accuracy": clean_out.accuracy(labels)[-1]},
                "adversarial": {"final_accuracy": adv_out.accuracy(labels)[-1]}}
    clean = evaluate_exits(clean_out, labels, costs, thresholds)
    adv = evaluate_exits(adv_out, labels, costs, thresholds)
    rows = {}
    for key, c in clean["rad"].items():
        a = adv["rad"][key]
        red = efficacy_reduction(c["efficacy"], a["efficacy"]) if c["efficacy"] > 0 else None
        rows[key] = {"threshold": c["threshold"], "clean_efficacy": c["efficacy"],
                     "adversarial_efficacy": a["efficacy"], "efficacy_reduction": red,
                     "clean_accuracy": c["accuracy"], "adversarial_accuracy": a["accuracy"],
                     "clean_exit_counts": c["exit_counts"], "adversarial_exit_counts": a["exit_counts"],
                     "clean_mean_cost": c["mean_cost"], "adversarial_mean_cost": a["mean_cost"]}
    return {"n": len(labels), "calibrated_on": f"the {len(labels)} clean inputs",
            "clean": {"final_accuracy": clean["final_accuracy"], "per_exit_accuracy": clean["per_exit_accuracy"]},
            "adversarial": {"final_accuracy": adv["final_accuracy"], "per_exit_accuracy": adv["per_exit_accuracy"]},
            "rad": rows}


# ----------------------------------------------------------------------------- the command

def run_attack(args) -> Dict[str, Any]:
    from ..attacks import norm_report
    from ..data import load_dataset
    from ..device import resolve_device
    from ..models.zoo import load_model

    device = resolve_device(args.device)
    args.device_obj = device
    model, meta, model_path = load_model(args.model, device)
    model_path = Path(model_path)
    dataset = meta["dataset"]
    atk, scope = build_attack(args, model, meta)
    test = load_dataset(dataset, "test", args.data_root)
    n = args.n or len(test)
    if n > len(test):
        raise DeepslothError(f"--n {n} exceeds the {len(test)} images of the {dataset} test split")
    test = test.subset(n)
    clean = test.images.float().div_(255)
    name = f"{args.attack}-{args.norm}-{scope}-n{n}-seed{args.seed}"
    out = Path(args.out) if args.out else default_out(model_path, name)
    if out.suffix in (".safetensors", ".json"):
        out = out.with_suffix("")

    weights = model_path / "model.safetensors"
    model_info = {"path": str(model_path), "name": str(args.model), "arch": meta.get("arch"),
                  "dataset": dataset, "mode": meta.get("mode"), "exits": meta.get("exits"),
                  "weights_sha256": file_sha256(weights) if weights.is_file() else None}
    config = atk.config()
    record: Dict[str, Any] = {"attack": config, "scope": scope, "seed": args.seed, "model": model_info,
                              "package_version": __version__, "device": str(device)}
    t0 = time.perf_counter()
    if scope == "sample":
        bs = args.batch_size or DEFAULT_BATCH
        same_model = {k: v for k, v in model_info.items() if k not in ("path", "name")}
        run_cfg = {"attack": config, "model": same_model, "n": n, "batch_size": bs,
                   "device": device.type, "package_version": __version__}
        key = hashlib.sha256(json.dumps(run_cfg, sort_keys=True, default=str).encode()).hexdigest()
        partial = PartialRun(out, key, run_cfg)
        x_adv, info = craft_samples(atk, test.images, test.labels, bs, args.seed, partial, device)
        elapsed = partial.seconds()
        tensors = {"images": x_adv, "indices": torch.arange(n, dtype=torch.int64), "labels": test.labels}
        record["data"] = {"split": "test", "n": n, "indices": f"the first {n} test images in stored order",
                          "batch_size": bs, "batch_seed": "derive_seed(seed, 'batch', first index)"}
        record["craft"] = info
        adv_inputs = x_adv
    else:
        train = load_dataset(dataset, "train", args.data_root)
        if scope == "universal":
            delta = atk(train.images)
            tensors = {"delta": delta.float().cpu()}
            adv_inputs = (clean + tensors["delta"]).clamp_(0, 1)
            delta_norms = norm_report(tensors["delta"][None], torch.zeros_like(tensors["delta"][None]))
        else:
            deltas = atk(train.images, train.labels)
            tensors = {"deltas": deltas.float().cpu()}
            adv_inputs = (clean + tensors["deltas"][test.labels]).clamp_(0, 1)
            delta_norms = norm_report(tensors["deltas"], torch.zeros_like(tensors["deltas"]))
        elapsed = time.perf_counter() - t0
        record["data"] = {"craft_split": "train", "craft_pool": len(train), "applied_to": "test",
                          "n": n, "indices": f"the first {n} test images in stored order"}
        record["perturbation_norms"] = delta_norms
        record["craft"] = dict(getattr(atk, "last_info", {}) or {})
    record["norms"] = norm_report(adv_inputs, clean)
    record["time_s"] = round(elapsed, 3)
    record["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    st = save_adversarial(out, KIND[scope], tensors, record)
    if scope == "sample":
        partial.remove()
    record["path"] = str(st)
    if not args.no_eval:
        record["evaluation"] = evaluate_attack(model, meta, model_path, test.images, adv_inputs,
                                               test.labels, device, args.eval_batch_size, args.rad)
        write_json(st.with_suffix(".json"), {k: v for k, v in record.items() if k != "path"}
                   | {"kind": KIND[scope]})
    return record


def _pct(v) -> str:
    return "  n/a" if v is None else f"{v * 100:5.1f}%"


def print_report(r: Dict[str, Any]) -> None:
    a, m = r["attack"], r["model"]
    hp = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in a.items()
                   if k not in ("attack", "seed"))
    print(f"{a['attack']} ({r['scope']}) on {m['name']} ({m['arch']}, {m['dataset']}): "
          f"{r['data']['n']} test images, seed {r['seed']}, {r['time_s']:.1f} s")
    print(f"  {hp}")
    nr = r["norms"]
    print("  achieved norms (vs clean): " + "  ".join(
        f"{k} max {nr[k]['max']:.4g} mean {nr[k]['mean']:.4g}" for k in ("linf", "l2", "l1")))
    if r.get("craft", {}).get("batches_resumed"):
        print(f"  resumed: {r['craft']['batches_resumed']} of {r['craft']['batches']} batches were already done")
    ev = r.get("evaluation")
    if ev is None:
        pass
    elif "skipped" in ev:
        print(f"  evaluation skipped: {ev['skipped']}")
    else:
        print(f"  final-exit accuracy: clean {_pct(ev['clean']['final_accuracy']).strip()}, "
              f"attacked {_pct(ev['adversarial']['final_accuracy']).strip()}")
        print("  RAD   threshold  efficacy clean -> attacked  reduction   accuracy clean -> attacked")
        for key, e in ev["rad"].items():
            red = e["efficacy_reduction"]
            print(f"  {key:>3}%  {e['threshold']:9.2f}  {e['clean_efficacy']:14.3f} -> {e['adversarial_efficacy']:.3f}"
                  f"  {_pct(red):>9}   {_pct(e['clean_accuracy']):>14} -> {_pct(e['adversarial_accuracy']).strip()}")
    print(f"  wrote {r['path']}")


def run(args) -> int:
    return emit(run_attack(args), args.json, print_report)


def register(sub) -> None:
    p = sub.add_parser(
        "attack", help="craft adversarial inputs or perturbations and evaluate their slowdown",
        description="Run an attack (PGD family, UAP or DeepSloth) against a multi-exit model: per-sample "
                    "on the first N test images, universal / class-universal crafted on training images "
                    "and applied to test images. Writes safetensors + a JSON record (config, seed, model, "
                    "achieved norms, time) and evaluates clean vs attacked at each RAD budget. A killed "
                    "per-sample run resumes from <out>.partial/.")
    p.add_argument("--model", required=True, help="model directory or zoo name")
    p.add_argument("--attack", default="deepsloth", choices=ATTACKS)
    p.add_argument("--norm", default="linf", choices=("linf", "l2", "l1"))
    p.add_argument("--scope", default=None, choices=("sample", "universal", "class"),
                   help="sample (default), universal or class (class-universal); uap is universal")
    p.add_argument("--eps", type=number, default=None, help="perturbation budget, e.g. 8/255 (default: SPEC)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="iterations (per batch for universal DeepSloth; DeepFool iterations for uap)")
    p.add_argument("--step-size", type=number, default=None, help="step size / learning rate (default: SPEC)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="attack / evaluate the first N test images in stored order (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"crafting batch (per-sample default {DEFAULT_BATCH}; universal default SPEC's 250)")
    p.add_argument("--craft-n", type=positive_int, default=None,
                   help="universal/class attacks: training images to craft on, chosen by the seed (per "
                        "class for class scope; default: DeepSloth 250, uap 100)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="universal/class attacks: passes over the crafting images (default: DeepSloth 1, "
                        "uap at most 100, stopping at fooling rate 0.8)")
    p.add_argument("--preset", default=None, choices=("reference", "strong"),
                   help="universal/class DeepSloth data schedule: reference (250 images, 1 epoch) or strong "
                        "(2500 images, 2 epochs)")
    p.add_argument("--rad", type=float, nargs="+", default=[5.0, 15.0], metavar="R",
                   help="RAD budgets in percent for the evaluation (default: 5 15)")
    p.add_argument("--no-eval", action="store_true", help="only craft and save")
    p.add_argument("--eval-batch-size", type=positive_int, default=500, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None,
                   help="result path without extension (default: <model>/attacks/<attack>-<norm>-<scope>-n<N>-seed<S>)")
    add_json(p)
    add_device(p)
    add_data_root(p)
    p.set_defaults(func=run)
