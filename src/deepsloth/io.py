"""Atomic file writes and small JSON / safetensors helpers.

Everything the toolkit writes goes through a temporary file in the same directory and a
rename, so an interrupted job never leaves a half-written file behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
from safetensors.torch import load_file, save_file

from .errors import DeepslothError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: os.PathLike | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give files the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: os.PathLike | str, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: os.PathLike | str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DeepslothError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DeepslothError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def save_tensors(path: os.PathLike | str, tensors: Dict[str, torch.Tensor],
                 metadata: Optional[Dict[str, str]] = None) -> None:
    """Save tensors as safetensors, atomically. Tensors are made contiguous and moved to CPU."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(flat, str(tmp), metadata=metadata)


def load_tensors(path: os.PathLike | str, device: str | torch.device = "cpu") -> Dict[str, torch.Tensor]:
    """Load a safetensors file (no unpickling involved)."""
    path = Path(path)
    if not path.is_file():
        raise DeepslothError(f"file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises its own error types
        raise DeepslothError(f"cannot read {path} as safetensors: {exc}") from None
