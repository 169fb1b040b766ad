"""Device selection: `auto` means CUDA when present, else CPU."""
from __future__ import annotations

import torch

from .errors import DeepslothError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeepslothError(f"device {name!r} requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DeepslothError(f"unknown device {name!r} (use auto, cpu or cuda)") from None
