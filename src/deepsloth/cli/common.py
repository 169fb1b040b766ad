"""Options and helpers shared by several commands (nothing here imports torch)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from ..errors import DeepslothError
from ..validate import check_number, check_rad

DEFAULT_RESULTS = "deepsloth-results"


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default: auto)")


def add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None,
                   help="dataset cache directory (default: $DEEPSLOTH_DATA, else ~/.cache/deepsloth)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def emit(result: Any, as_json: bool, print_report) -> int:
    """Print a command's result as JSON (`--json`) or as its text report; exit code 0."""
    if as_json:
        print_json(result)
    else:
        print_report(result)
    return 0


def _type(check: Callable[[str, Any], Any], parse: Callable[[str], Any] = float):
    def convert(text: str):
        try:
            value = parse(text)
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            return check("value", value)
        except DeepslothError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("value ", "", 1)) from None
    return convert


def _fraction(text: str) -> float:
    text = text.strip()
    return float(Fraction(text)) if "/" in text else float(text)


positive_int = _type(lambda n, v: check_number(n, v, low=1, integer=True), lambda t: int(t, 10))
nonneg_int = _type(lambda n, v: check_number(n, v, low=0, integer=True), lambda t: int(t, 10))
positive_float = _type(lambda n, v: check_number(n, v, low=0.0, low_open=True))
nonneg_float = _type(lambda n, v: check_number(n, v, low=0.0))
positive_number = _type(lambda n, v: check_number(n, v, low=0.0, low_open=True), _fraction)  # 8/255 allowed
any_int = _type(lambda n, v: check_number(n, v, integer=True), lambda t: int(t, 10))
rad_value = _type(lambda n, v: check_rad(v))


def add_rad(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rad", type=rad_value, nargs="+", default=[5.0, 15.0], metavar="R",
                   help="relative accuracy drop budgets in percent, each in (0, 100) (default: 5 15)")


def add_context(p: argparse.ArgumentParser, several_models: bool = False) -> None:
    """--model, --n, --calib-n, --policy, --rad, --eval-batch-size, --device, --data-root."""
    p.add_argument("--model", required=True, nargs="+" if several_models else None,
                   help="model directories or zoo names" if several_models else "model directory or zoo name")
    p.add_argument("--n", type=positive_int, default=None,
                   help="use the first N test images in the dataset's stored order (default: all)")
    p.add_argument("--calib-n", type=positive_int, default=None,
                   help="calibrate thresholds on the first N clean test images (default: --n)")
    p.add_argument("--policy", default="confidence", choices=("confidence", "entropy", "patience"),
                   help="exit policy: confidence (max softmax >= q, the paper's), entropy or patience")
    add_rad(p)
    p.add_argument("--eval-batch-size", type=positive_int, default=500, help="batch size of evaluation forwards")
    add_device(p)
    add_data_root(p)


def context_from(args, model=None):
    """The experiments Context for the options of `add_context`."""
    from ..experiments.context import load_context
    return load_context(model or args.model, n=args.n, calib_n=args.calib_n, policy=args.policy,
                        rads=args.rad, device=args.device, data_root=args.data_root,
                        batch_size=args.eval_batch_size)


def model_dataset(model: str) -> str:
    """The dataset a model (zoo name or directory) was trained on, read from its model.json only."""
    from ..models.io import read_model_meta
    from ..models.zoo import resolve_model
    meta = read_model_meta(resolve_model(model))
    if not isinstance(meta, dict) or "dataset" not in meta:
        raise DeepslothError(f"{model}: model.json does not describe a model (no dataset)")
    return str(meta["dataset"])


def writable_dir(path: Path | str, what: str = "--out") -> Path:
    """Create `path` if needed and check it is writable, before any work is done."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepslothError(f"{what} {path}: cannot create it ({exc.strerror or exc})") from None
    if not path.is_dir():
        raise DeepslothError(f"{what} {path} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise DeepslothError(f"{what} {path} is not writable")
    return path


def writable_file(path: Path | str, what: str = "--out") -> Path:
    """Check that a file can be written at `path` (its folder exists or can be made, is writable)."""
    path = Path(path)
    if path.is_dir():
        raise DeepslothError(f"{what} {path} is a directory, expected a file name")
    writable_dir(path.parent if str(path.parent) else Path("."), what)
    return path
