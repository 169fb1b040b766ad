"""Model directories: `model.safetensors` (weights) + `model.json` (what they are).

This module only reads and writes the format. Loading a model goes through
`deepsloth.models.create_model(path)`, which rebuilds the architecture `model.json` names and
copies the weights in strictly (`load_state_strict`: every tensor must match by name and shape;
nothing is unpickled).
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from .. import __version__
from ..errors import DeepslothError
from ..io import load_tensors, read_json, save_tensors, write_json

FORMAT = "deepsloth-model/1"
WEIGHTS = "model.safetensors"
META = "model.json"


def state_tensors(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items()}


def save_model_dir(path: os.PathLike | str, model: nn.Module, meta: Dict[str, Any],
                   dtype: Optional[torch.dtype] = None) -> Path:
    """Write weights and metadata (both atomically). `meta` needs arch, dataset and mode.

    `dtype` (e.g. torch.float16) stores floating-point weights in that type to save space;
    they are cast back to float32 on load.
    """
    for key in ("arch", "dataset", "mode"):
        if key not in meta:
            raise ValueError(f"model metadata needs {key!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = state_tensors(model)
    if dtype is not None:
        tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items()}
    save_tensors(path / WEIGHTS, tensors, metadata={"format": FORMAT})
    full = {"format": FORMAT, "package_version": __version__,
            "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    full.update(meta)
    full.setdefault("exits", len(model.ics) + 1 if hasattr(model, "ics") else 1)
    write_json(path / META, full)
    return path


def read_model_meta(path: os.PathLike | str) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise DeepslothError(f"model directory not found: {path}")
    if not (path / META).is_file():
        raise DeepslothError(f"{path} is not a model directory (no {META})")
    meta = read_json(path / META)
    if not isinstance(meta, dict):
        raise DeepslothError(f"{path / META}: expected a JSON object, got {type(meta).__name__}")
    bad = [k for k in ("arch", "dataset", "mode") if k in meta and not isinstance(meta[k], str)]
    if bad:
        raise DeepslothError(f"{path / META}: {', '.join(bad)} must be text")
    if meta.get("format") != FORMAT:
        raise DeepslothError(f"{path / META}: unsupported format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def load_state_strict(model: nn.Module, tensors: Dict[str, torch.Tensor], where: str) -> None:
    """Copy `tensors` into `model`; any missing, unexpected or mis-shaped tensor is an error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise DeepslothError(f"{where}: weights do not match the architecture: {'; '.join(parts)}")
    for name, value in expected.items():
        if tuple(tensors[name].shape) != tuple(value.shape):
            raise DeepslothError(f"{where}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                                 f"the architecture needs {tuple(value.shape)}")
    cast = {k: (v.to(expected[k].dtype) if v.is_floating_point() else v) for k, v in tensors.items()}
    model.load_state_dict(cast, strict=True)


def read_weights(path: os.PathLike | str) -> Dict[str, torch.Tensor]:
    """The tensors of a model directory's weights file."""
    return load_tensors(Path(path) / WEIGHTS)
