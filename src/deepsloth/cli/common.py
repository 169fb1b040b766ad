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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parent_record(path, meta: dict) -> dict:
    """What a model directory records about the model it was trained from (its lineage)."""
    return {"path": str(path), "recipe": meta.get("recipe"), "seed": meta.get("seed"),
            "accuracy": meta.get("accuracy"), "train_seconds": meta.get("train_seconds"),
            "history": meta.get("history"), "parent": meta.get("parent")}
