"""Per-epoch training checkpoints, without pickle: tensors in safetensors, the rest in JSON."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ..io import load_tensors, read_json, save_tensors, write_json
from ..models.io import load_state_strict

STATE = "checkpoint.safetensors"
INFO = "checkpoint.json"


def _split_optimizer(opt: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    sd = opt.state_dict()
    tensors, plain = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        plain["state"][str(idx)] = {}
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                plain["state"][str(idx)][key] = value
    return tensors, plain


def _join_optimizer(tensors: Dict[str, torch.Tensor], plain: Dict[str, Any]) -> Dict[str, Any]:
    state: Dict[int, Dict[str, Any]] = {int(i): dict(v) for i, v in plain["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(directory: Path, model: nn.Module, opt: torch.optim.Optimizer, info: Dict[str, Any]) -> None:
    """Write the state after a finished epoch; the JSON goes last so a crash in between keeps
    the previous, consistent checkpoint discoverable only if both files agree on the epoch."""
    tensors, plain = _split_optimizer(opt)
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    save_tensors(directory / STATE, tensors, metadata={"epoch": str(info["epoch"])})
    write_json(directory / INFO, dict(info, optimizer=plain))


def load_checkpoint(directory: Path, model: nn.Module, opt: torch.optim.Optimizer) -> Optional[Dict[str, Any]]:
    """Restore model and optimizer; returns the checkpoint info, or None if there is none."""
    if not (directory / INFO).is_file() or not (directory / STATE).is_file():
        return None
    info = read_json(directory / INFO)
    tensors = load_tensors(directory / STATE)
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state_strict(model, model_sd, str(directory / STATE))
    opt.load_state_dict(_join_optimizer(tensors, info.pop("optimizer")))
    return info


def remove_checkpoint(directory: Path) -> None:
    for name in (STATE, INFO):
        p = directory / name
        if p.exists():
            p.unlink()
