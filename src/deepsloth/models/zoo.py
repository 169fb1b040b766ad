"""Pretrained models shipped inside the package, and resolving `--model` arguments.

A zoo model is a model directory under `deepsloth/zoo/<name>/`. Every command's `--model`
takes either a zoo name or a path to a model directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..errors import DeepslothError
from .io import META, load_model_dir, read_model_meta

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
DEFAULT_MODEL = "resnet56_sdn_cifar10"


def zoo_names() -> List[str]:
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / META).is_file())


def zoo_entries() -> Dict[str, dict]:
    return {name: read_model_meta(ZOO_DIR / name) for name in zoo_names()}


def resolve_model(spec: os.PathLike | str) -> Path:
    """A model directory for `spec`: an existing directory, else a zoo name."""
    path = Path(spec)
    if path.is_dir():
        return path
    if str(spec) in zoo_names():
        return ZOO_DIR / str(spec)
    available = ", ".join(zoo_names()) or "none installed"
    raise DeepslothError(f"no model directory or zoo model named {str(spec)!r} (zoo: {available})")


def load_model(spec: os.PathLike | str, device: str | torch.device = "cpu") -> Tuple[nn.Module, dict, Path]:
    """Load a zoo model or model directory: (model in eval mode, its metadata, its directory)."""
    path = resolve_model(spec)
    model, meta = load_model_dir(path, device)
    return model, meta, path
