"""Per-epoch training checkpoints, without pickle: tensors in safetensors, the rest in JSON."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import DeepslothError
from ..io import load_tensors, read_json, read_metadata, save_tensors, write_json
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


def _state_name(epoch: int) -> str:
    return f"checkpoint-e{int(epoch):04d}.safetensors"


def save_checkpoint(directory: Path, model: nn.Module, opt: torch.optim.Optimizer, info: Dict[str, Any]) -> None:
    """Write the state after a finished epoch, crash-consistently.

    The tensors go to a new file named by the epoch, then `checkpoint.json` (which names that
    file) replaces the previous one atomically, and only then is the previous epoch's file
    removed: a run killed at any point resumes from a checkpoint whose JSON and tensors belong
    to the same epoch."""
    directory = Path(directory)
    tensors, plain = _split_optimizer(opt)
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    state = _state_name(info["epoch"])
    save_tensors(directory / state, tensors, metadata={"epoch": str(info["epoch"])})
    write_json(directory / INFO, dict(info, optimizer=plain, state_file=state))
    for old in _state_files(directory):
        if old.name != state:
            old.unlink(missing_ok=True)


def _state_files(directory: Path):
    return [p for p in Path(directory).glob("checkpoint*.safetensors") if p.name == STATE
            or (p.name.startswith("checkpoint-e") and p.name.endswith(".safetensors"))]


def load_checkpoint(directory: Path, model: nn.Module, opt: torch.optim.Optimizer) -> Optional[Dict[str, Any]]:
    """Restore model and optimizer; returns the checkpoint info, or None if there is none."""
    directory = Path(directory)
    if not (directory / INFO).is_file():
        return None
    info = read_json(directory / INFO)
    if not isinstance(info, dict) or not isinstance(info.get("epoch"), int) or "optimizer" not in info:
        raise DeepslothError(f"{directory / INFO} is not a training checkpoint; remove it (and "
                             f"{directory}/checkpoint*.safetensors) to start over")
    state = directory / str(info.get("state_file") or STATE)   # older checkpoints: checkpoint.safetensors
    if state.parent != directory or not state.is_file():
        raise DeepslothError(f"{directory / INFO} names {state.name}, which is missing; remove the "
                             f"checkpoint files to start over")
    saved_epoch = read_metadata(state).get("epoch")
    if saved_epoch is not None and saved_epoch != str(info["epoch"]):
        raise DeepslothError(f"{state} holds epoch {saved_epoch} but {directory / INFO} says epoch "
                             f"{info['epoch']}; remove the checkpoint files to start over")
    tensors = load_tensors(state)
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state_strict(model, model_sd, str(state))
    opt.load_state_dict(_join_optimizer(tensors, info.pop("optimizer")))
    info.pop("state_file", None)
    return info


def remove_checkpoint(directory: Path) -> None:
    for p in _state_files(directory) + [Path(directory) / INFO]:
        if p.exists():
            p.unlink()
