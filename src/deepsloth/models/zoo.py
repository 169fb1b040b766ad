"""Pretrained models shipped inside the package, and what a `--model` argument names.

A zoo model is a model directory under `deepsloth/zoo/<name>/`. Every command's `--model` (and
`create_model`) takes a zoo name or the path of a model directory.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import DeepslothError
from .io import META, read_model_meta

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
DEFAULT_MODEL = "resnet56_sdn_cifar10"


def zoo_names() -> List[str]:
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / META).is_file())


def zoo_entries() -> Dict[str, dict]:
    return {name: read_model_meta(ZOO_DIR / name) for name in zoo_names()}


def find_model_dir(spec: os.PathLike | str) -> Optional[Path]:
    """The model directory `spec` names, or None when it names none.

    A directory holding `model.json` wins; a name that is also a zoo model is then reported on
    stderr. A directory without `model.json` does not hide the zoo model of the same name."""
    path = Path(spec)
    in_zoo = str(spec) in zoo_names()
    if (path / META).is_file():
        if in_zoo and path.resolve() != (ZOO_DIR / str(spec)).resolve():
            print(f"note: {spec} is the model directory {path.resolve()}, not the zoo model of that name "
                  f"(name the zoo model from another working directory)", file=sys.stderr)
        return path
    if in_zoo:
        return ZOO_DIR / str(spec)
    return None


def resolve_model(spec: os.PathLike | str) -> Path:
    """The model directory for `spec` (a model directory or a zoo name), else a one-line error."""
    found = find_model_dir(spec)
    if found is not None:
        return found
    if Path(spec).is_dir():
        raise DeepslothError(f"{spec} is not a model directory (no {META})")
    available = ", ".join(zoo_names()) or "none installed"
    raise DeepslothError(f"no model directory or zoo model named {str(spec)!r}: not found (zoo: {available})")
