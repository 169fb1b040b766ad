"""Threshold calibration (docs/method.md §4.2) and the `thresholds.json` cache next to a model.

The sweep evaluates every threshold of the grid (0.05, ..., 0.95 for the confidence and
entropy policies) on clean data from ONE batched all-exit forward: an input's exit under any
threshold is a function of its K exit outputs, so no threshold needs its own pass.

Selection: A_ref is the final exit's accuracy; for a relative-accuracy-drop budget r (RAD,
in percent) the chosen threshold is the smallest q with A(q) > A_ref * (1 - r/100),
compared exactly on integer counts (correct_q * 100 > correct_ref * (100 - r)). No
qualifying q is a `DeepslothError` that names the best accuracy reached.

Cache: `<model_dir>/thresholds.json` holds one entry per calibration, keyed by the SHA-256
of the model weights, the policy, the grid and the SHA-256 of the calibration images and
labels. An entry stores the whole sweep (integer counts), so any RAD budget is selected from
it without another forward; different weights, policy, grid or data never match a stored
entry. For a zoo model (any directory inside the installed package) and when the model
directory is read-only, the file is `<data root>/thresholds/<weights sha>.json` instead: the
package directory is never written. When that cannot be written either, nothing is cached.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import DeepslothError
from ..io import read_json, write_json
from .forward import ExitOutputs, collect_exit_outputs
from .policies import THRESHOLD_GRID, ExitPolicy, make_policy

FORMAT = "deepsloth-thresholds/1"
FILENAME = "thresholds.json"
MAX_ENTRIES = 16
DEFAULT_RADS = (5, 15)


def rad_key(rad: float) -> str:
    """5 -> "5", 2.5 -> "2.5": the JSON key of a RAD budget."""
    return format(float(rad), "g")


def _check_rads(rads: Iterable[float]) -> List[float]:
    out = []
    for r in rads:
        r = float(r)
        if not 0 <= r < 100:
            raise DeepslothError(f"RAD budget must be a percentage in [0, 100), got {r:g}")
        out.append(r)
    if not out:
        raise DeepslothError("at least one RAD budget is needed")
    return out


def threshold_sweep(outputs: ExitOutputs, labels: torch.Tensor, policy: Optional[str | ExitPolicy] = None,
                    grid: Optional[Sequence[float]] = None) -> List[Dict[str, Any]]:
    """One row per threshold: threshold, correct (count), n, accuracy, exit_counts."""
    policy = make_policy(policy)
    grid = list(policy.grid(outputs.num_exits) if grid is None else grid)
    labels = labels.to(outputs.prediction.device).long()
    k = outputs.num_exits
    rows = []
    for q in grid:
        idx, pred = policy.exit_predictions(outputs, q)
        correct = int((pred == labels).sum())
        rows.append({"threshold": float(q), "correct": correct, "n": len(labels),
                     "accuracy": correct / max(1, len(labels)),
                     "exit_counts": torch.bincount(idx, minlength=k).tolist()})
    return rows


def select_threshold(sweep: Sequence[Dict[str, Any]], reference_correct: int, n: int, rad: float,
                     policy_name: str = "confidence") -> Dict[str, Any]:
    """docs/method.md §4.2 on a sweep: the smallest q with A(q) > A_ref * (1 - rad/100), strictly."""
    rad = float(rad)
    ref_acc = reference_correct / max(1, n)
    target = ref_acc * (1 - rad / 100)
    for row in sorted(sweep, key=lambda r: r["threshold"]):
        if row["correct"] * 100 > reference_correct * (100 - rad):
            return {"threshold": row["threshold"], "accuracy": row["accuracy"], "rad": rad,
                    "reference_accuracy": ref_acc, "target_accuracy": target,
                    "exit_counts": list(row["exit_counts"]), "policy": policy_name}
    best = max(sweep, key=lambda r: (r["correct"], -r["threshold"]))
    raise DeepslothError(
        f"no threshold qualifies for RAD {rad:g}%: early-exit accuracy must exceed "
        f"{target * 100:.2f}% (final-exit accuracy {ref_acc * 100:.2f}% x {1 - rad / 100:g}), "
        f"but the best reached is {best['accuracy'] * 100:.2f}% at threshold {best['threshold']:g} "
        f"({policy_name} policy, {n} calibration inputs); allow a larger RAD budget")


def calibrate_thresholds(outputs: ExitOutputs, labels: torch.Tensor, rads: Sequence[float] = DEFAULT_RADS,
                         policy: Optional[str | ExitPolicy] = None,
                         grid: Optional[Sequence[float]] = None) -> Dict[str, Dict[str, Any]]:
    """{"5": {"threshold", "accuracy", "reference_accuracy", "target_accuracy", "rad",
    "exit_counts", "policy"}, ...} from clean outputs (docs/method.md §4.2)."""
    policy = make_policy(policy)
    rads = _check_rads(rads)
    labels = labels.to(outputs.prediction.device).long()
    ref_correct = int((outputs.prediction[-1] == labels).sum())
    sweep = threshold_sweep(outputs, labels, policy, grid)
    return {rad_key(r): select_threshold(sweep, ref_correct, len(labels), r, policy.name) for r in rads}


# ----------------------------------------------------------------------------- cache

def file_sha256(path: os.PathLike | str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def data_sha256(images: torch.Tensor, labels: torch.Tensor) -> str:
    """Fingerprint of a calibration set: dtype, shape and bytes of images and labels."""
    h = hashlib.sha256()
    for t in (images, labels):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_sha256(model_dir: os.PathLike | str) -> str:
    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        raise DeepslothError(f"{model_dir} has no model.safetensors to fingerprint")
    return file_sha256(path)


def _cache_root() -> Path:
    from ..data.registry import default_data_root
    return default_data_root() / "thresholds"


def _inside_package(path: Path) -> bool:
    """True for a directory inside the installed package (the shipped zoo): never written."""
    package = Path(__file__).resolve().parent.parent
    try:
        return path.resolve().is_relative_to(package)
    except (OSError, ValueError):
        return False


def _candidate_files(model_dir: Path, wsha: str) -> List[Path]:
    shared = _cache_root() / f"{wsha[:32]}.json"
    return [shared] if _inside_package(model_dir) else [model_dir / FILENAME, shared]


def _read_entries(path: Path) -> List[Dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        data = read_json(path)
    except DeepslothError:
        return []  # a corrupt cache is recomputed, never trusted
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return []
    return [e for e in data.get("calibrations", []) if isinstance(e, dict)]


def _matches(entry: Dict[str, Any], key: Dict[str, Any]) -> bool:
    return all(entry.get(k) == v for k, v in key.items())


def _grid_ok(entry: Dict[str, Any], grid: Optional[Sequence[float]], policy: ExitPolicy) -> bool:
    stored = entry.get("grid")
    if grid is not None:
        return stored == [float(q) for q in grid]
    per_exit = entry.get("per_exit_correct") or []
    return stored == [float(q) for q in policy.grid(len(per_exit))]


def _store(paths: Sequence[Path], key: Dict[str, Any], entry: Dict[str, Any],
           grid: Optional[Sequence[float]], policy: ExitPolicy) -> Optional[Path]:
    """Write `entry` into the first writable file of `paths`, replacing a matching entry."""
    for path in paths:
        kept = [e for e in _read_entries(path) if not (_matches(e, key) and _grid_ok(e, grid, policy))]
        try:
            write_json(path, {"format": FORMAT, "calibrations": (kept + [entry])[-MAX_ENTRIES:]})
            return path
        except OSError:
            continue
    return None


def calibration_for(model_dir: Optional[os.PathLike | str], model: nn.Module, meta: Optional[Dict[str, Any]],
                    clean_images: torch.Tensor, clean_labels: torch.Tensor,
                    rads: Sequence[float] = DEFAULT_RADS, policy: str | ExitPolicy = "confidence",
                    device=None, grid: Optional[Sequence[float]] = None, outputs: Optional[ExitOutputs] = None,
                    batch_size: int = 500) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """(thresholds, info): thresholds for `rads`, reused from `<model_dir>/thresholds.json` when it holds
    a sweep for these exact weights, policy, grid and calibration data; else calibrated now (one
    batched forward over `clean_images`) and stored (see the module docstring).

    `info` has "cached" (reused a stored sweep), "path" (the file read or written, or None),
    "n", "reference_accuracy", "per_exit_accuracy" and the "sweep" (clean accuracy and exit
    counts at every threshold). `outputs`, when given, must be the all-exit outputs of
    `clean_images` (saves a forward). `model_dir=None` calibrates without caching.
    """
    policy = make_policy(policy, (meta or {}).get("num_classes"))
    rads = _check_rads(rads)
    labels = clean_labels.long()
    if outputs is not None and len(outputs) != len(labels):
        raise ValueError("outputs do not belong to the calibration images")
    key: Dict[str, Any] = {"policy": policy.describe(), "n": len(labels),
                           "data_sha256": data_sha256(clean_images, labels)}
    paths: List[Path] = []
    if model_dir is not None:
        model_dir = Path(model_dir)
        key["weights_sha256"] = weights_sha256(model_dir)
        paths = _candidate_files(model_dir, key["weights_sha256"])

    entry, entry_path = None, None
    for path in paths:
        for e in _read_entries(path):
            if _matches(e, key) and _grid_ok(e, grid, policy):
                entry, entry_path = e, path
        if entry is not None:
            break
    cached = entry is not None
    if entry is None:
        if outputs is None:
            outputs = collect_exit_outputs(model, clean_images, batch_size=batch_size, device=device,
                                           desc="calibration forward")
        labels_d = labels.to(outputs.prediction.device)
        grid_used = [float(q) for q in (policy.grid(outputs.num_exits) if grid is None else grid)]
        per_exit = (outputs.prediction == labels_d.unsqueeze(0)).sum(dim=1).tolist()
        entry = dict(key, grid=grid_used, per_exit_correct=[int(c) for c in per_exit],
                     reference_correct=int(per_exit[-1]),
                     sweep=threshold_sweep(outputs, labels_d, policy, grid_used),
                     created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        if meta:
            entry["model"] = {k: meta.get(k) for k in ("arch", "dataset", "mode", "exits")}

    thresholds = {rad_key(r): select_threshold(entry["sweep"], entry["reference_correct"], entry["n"], r,
                                               policy.name) for r in rads}
    if paths:
        summary = dict(entry.get("thresholds", {}))
        summary.update({k: {"threshold": v["threshold"], "accuracy": v["accuracy"]}
                        for k, v in thresholds.items()})
        if not cached or summary != entry.get("thresholds"):
            entry["thresholds"] = summary  # the RAD budgets asked for so far, for human readers
            order = ([entry_path] if entry_path else []) + [p for p in paths if p != entry_path]
            entry_path = _store(order, key, entry, grid, policy) or entry_path
    n = max(1, entry["n"])
    info = {"cached": cached, "path": str(entry_path) if entry_path else None, "n": entry["n"],
            "policy": policy.describe(), "grid": entry["grid"], "sweep": entry["sweep"],
            "reference_accuracy": entry["reference_correct"] / n,
            "per_exit_accuracy": [c / n for c in entry["per_exit_correct"]]}
    return thresholds, info


__all__ = ["THRESHOLD_GRID", "DEFAULT_RADS", "rad_key", "threshold_sweep", "select_threshold",
           "calibrate_thresholds", "calibration_for", "data_sha256",
           "weights_sha256"]
