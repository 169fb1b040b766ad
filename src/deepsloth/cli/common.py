"""Options and helpers shared by several commands."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


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


def _number(text: str, kind, minimum, strict: bool, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum or (strict and value == minimum):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, 1, False, "a positive integer")


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, 0, False, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    return _number(text, float, 0.0, True, "a positive number")


def nonneg_float(text: str) -> float:
    """argparse type: a number >= 0."""
    return _number(text, float, 0.0, False, "a number >= 0")


def parent_record(path, meta: dict) -> dict:
    """What a model directory records about the model it was trained from (its lineage)."""
    return {"path": str(path), "recipe": meta.get("recipe"), "seed": meta.get("seed"),
            "accuracy": meta.get("accuracy"), "train_seconds": meta.get("train_seconds"),
            "history": meta.get("history"), "parent": meta.get("parent"),
            **({"averaged_from": meta["averaged_from"]} if "averaged_from" in meta else {})}
