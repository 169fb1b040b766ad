"""Inference-only BatchNorm folding: conv -> BN pairs become one convolution.

In eval mode a BatchNorm is an affine map per channel, so it can be merged into the weights
and bias of the convolution that feeds it. That removes a full memory pass per layer, which
on a CPU makes the all-exit forward of a small-channel network (ResNet-56) 10-20% faster.
Outputs change only by float rounding (about 1e-6 on logits).

The pairs are found on a `torch.fx` trace of the model, so any model works; the folded copy
keeps the original module structure (the BN modules become `nn.Identity`), so code that walks
`model.stem / blocks / ics` (the early-exit runtime) runs on it unchanged. A model that cannot
be traced is returned as it is. Forward hooks registered on the model's modules stay on the
copy (they are not run while tracing).

Attacks need only gradients with respect to the input, and they run the model in eval mode, so
the folded copy computes the same function for them too (`for_input_gradients`): on CUDA
crafting runs on it (one kernel launch less per convolution). On a CPU crafting keeps the model
as trained, so CPU results keep their exact bits.
"""
from __future__ import annotations

import copy
import itertools
import weakref
from typing import List, Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def conv_bn_pairs(model: nn.Module) -> List[Tuple[str, str]]:
    """Qualified names of (conv, bn) pairs where the BN reads only that conv's output."""
    from torch import fx
    # trace a hook-free copy: tracing runs the modules' forward hooks, which may have side effects
    # (the copy shares the parameter and buffer tensors: only the module objects are copied)
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    probe = copy.deepcopy(model, memo=shared)
    for m in probe.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks):
            hooks.clear()
    try:
        graph = fx.symbolic_trace(probe).graph
    except Exception:  # data-dependent control flow and the like: nothing to fold
        return []
    modules = dict(model.named_modules())
    calls: dict = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        bn = modules.get(node.target)
        if node.op != "call_module" or not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None:
            continue  # (a BN without running statistics normalises by batch statistics: not foldable)
        src = node.args[0] if node.args else None
        if (isinstance(src, fx.Node) and src.op == "call_module"
                and type(modules.get(src.target)) is nn.Conv2d and len(src.users) == 1
                and calls[src.target] == 1 and calls[node.target] == 1):
            pairs.append((src.target, node.target))
    return pairs


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


# model -> (state signature, folded copy); the signature changes whenever any parameter or
# buffer is replaced or modified in place (tensor version counters) or a forward hook is added
# or removed, so a stale copy is never used
_CACHE: "weakref.WeakKeyDictionary[nn.Module, Tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()


def _signature(model: nn.Module) -> tuple:
    tensors = tuple((t.data_ptr(), t._version, t.dtype, t.device, t.stride())
                    for t in itertools.chain(model.parameters(), model.buffers()))
    hooks = tuple((tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for m in model.modules())
    return tensors, hooks


def clear_fold_cache() -> None:
    """Forget every cached folded copy (benchmarks time the folding this way)."""
    _CACHE.clear()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every conv -> BN pair folded (the model is untouched).

    Returns `model` itself (not a copy) when there is nothing to fold. The copy is cached
    until the model's weights or statistics change; treat it as read-only.
    """
    sig = _signature(model)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == sig:
        return hit[1]
    folded = _fold(model)
    _CACHE[model] = (sig, folded)
    return folded


def _fold(model: nn.Module) -> nn.Module:
    pairs = conv_bn_pairs(model)
    if not pairs:
        return model
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
            _replace(folded, conv_name, fuse_conv_bn_eval(conv, bn))
            _replace(folded, bn_name, nn.Identity())
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


def for_input_gradients(model: nn.Module, device: torch.device | str) -> nn.Module:
    """The network an attack differentiates on `device`: on CUDA the BN-folded eval copy of
    `model` (`fold_batchnorm`; parameters frozen, outputs and input gradients equal up to float
    rounding), elsewhere `model` itself."""
    if torch.device(device).type != "cuda":
        return model
    return fold_batchnorm(model)
