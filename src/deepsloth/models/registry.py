"""The one way to get a model: `create_model`, timm-style.

    create_model("resnet56_sdn_cifar10")                          # a zoo model
    create_model("runs/my-model")                                 # a model directory
    create_model("resnet56", dataset="cifar10", pretrained=True)  # the zoo model of an architecture
    create_model("resnet56", dataset="cifar10", seed=0)           # a new SDN, initialised

Your own model enters through a model directory that names the function building it
(`export_model`, docs/python-api.md "Bring your own model"): `create_model` imports that function,
builds the network, attaches the exits the directory lists (`attach_exits`) and loads the weights
strictly, so every command (`train --mode ic-only --from`, `audit`, `grid`, `defend`, ...) takes it.

Every model it returns carries its metadata as `model.meta` (a trained model's `model.json`) and
its directory as `model.model_dir` (None for a new one). Architecture names may carry the kind as
a suffix (`resnet56_sdn`, `resnet56_cnn`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import importlib
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import DeepslothError
from .backbones import Backbone, mobilenet, resnet56, vgg16bn
from .attach import attach_exits
from .io import META, WEIGHTS, load_state_strict, read_model_meta, read_weights, save_model_dir
from .msdnet import msdnet
from .vit import vit
from .sdn import MultiExitNet, build_sdn
from .zoo import ZOO_DIR, find_model_dir, resolve_model, zoo_names

ARCHITECTURES: Dict[str, Callable[..., Backbone]] = {
    "vgg16bn": vgg16bn,
    "resnet56": resnet56,
    "mobilenet": mobilenet,
}
# Architectures built with their exits (no plain-CNN form, trained jointly): name -> builder of the
# multi-exit network
MULTI_EXIT: Dict[str, Callable[..., nn.Module]] = {
    "msdnet": msdnet,
    "vit": vit,
}
# The arch of a model directory whose model.json names its builder ("builder": "package.module:function")
CUSTOM = "custom"
ALIASES = {"vgg16": "vgg16bn", "vgg16_bn": "vgg16bn", "resnet-56": "resnet56", "mobilenetv1": "mobilenet"}

# (number of classes, input size) of the datasets the paper uses.
DATASET_SHAPES: Dict[str, Tuple[int, int]] = {"cifar10": (10, 32), "tinyimagenet": (200, 64)}


def parse_name(name: str) -> Tuple[str, Optional[bool]]:
    """'resnet56_sdn' -> ('resnet56', True); 'vgg16bn' -> ('vgg16bn', None)."""
    base, sdn = name.lower(), None
    for suffix, flag in (("_sdn", True), ("_cnn", False)):
        if base.endswith(suffix):
            base, sdn = base[: -len(suffix)], flag
    base = ALIASES.get(base, base)
    if base not in ARCHITECTURES and base not in MULTI_EXIT:
        raise DeepslothError(f"unknown architecture {name!r}; choose from {', '.join([*ARCHITECTURES, *MULTI_EXIT])}")
    return base, sdn


def zoo_name_for(arch: str, dataset: str) -> str:
    """The zoo name of an architecture's shipped model: `<arch>_sdn_<dataset>` for the SDNs,
    `<arch>_<dataset>` for architectures built with their exits (`msdnet_cifar10`)."""
    return f"{arch}_{dataset}" if arch in MULTI_EXIT else f"{arch}_sdn_{dataset}"


def dataset_shape(dataset: str) -> Tuple[int, int]:
    if dataset not in DATASET_SHAPES:
        raise DeepslothError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASET_SHAPES)}")
    return DATASET_SHAPES[dataset]


def create_model(name: str | os.PathLike, dataset: Optional[str] = None, *, sdn: Optional[bool] = None,
                 num_classes: Optional[int] = None, input_size: Optional[int] = None,
                 seed: Optional[int] = None, pretrained: bool = False,
                 device: str | torch.device = "cpu") -> nn.Module:
    """A model from a zoo name, a model directory or an architecture name (see the module docstring).

    A zoo name or model directory loads that trained model: rebuilt from its `model.json`, weights
    loaded strictly, in eval mode on `device`. `dataset`, if given, must be the model's.

    An architecture name builds a backbone CNN (`sdn=False`) or its SDN with one IC per block
    (`sdn=True`, default; MSDNet is always multi-exit) for `dataset` (default cifar10). `seed` makes
    the initialisation reproducible without touching the global RNG state. With `pretrained=True`
    it loads the shipped zoo model of that architecture and dataset instead.
    """
    path = find_model_dir(name)
    if path is None and pretrained:
        arch, suffix_sdn = parse_name(str(name))
        if sdn is False or suffix_sdn is False:
            raise DeepslothError("the zoo ships multi-exit models only; use pretrained=True without sdn=False")
        zoo_name = zoo_name_for(arch, dataset or "cifar10")
        if zoo_name not in zoo_names():
            raise DeepslothError(f"no pretrained {zoo_name} in the zoo (shipped: {', '.join(zoo_names()) or 'none'}); "
                                 f"train it with `deepsloth zoo train {arch}`")
        path = ZOO_DIR / zoo_name
    if path is not None:
        if sdn is not None or num_classes is not None or input_size is not None or seed is not None:
            raise DeepslothError(f"{name} is a trained model: its kind, classes, input size and weights are fixed")
        model = _load_dir(path, device)
        if dataset is not None and model.meta.get("dataset") != dataset:
            raise DeepslothError(f"{name} is a {model.meta.get('dataset')} model, not {dataset}")
        return model
    if isinstance(name, os.PathLike) or os.sep in str(name) or Path(name).is_dir():
        resolve_model(name)   # a path that names no model: its one-line error
    return _build(str(name), dataset or "cifar10", sdn=sdn, num_classes=num_classes, input_size=input_size,
                  seed=seed, device=device)


def _build(name: str, dataset: str, *, sdn: Optional[bool], num_classes: Optional[int],
           input_size: Optional[int], seed: Optional[int], device: str | torch.device) -> nn.Module:
    arch, suffix_sdn = parse_name(name)
    if sdn is None:
        sdn = True if suffix_sdn is None else suffix_sdn
    if arch in MULTI_EXIT and not sdn:
        raise DeepslothError(f"{arch} is built with its exits and has no plain-CNN form; train it jointly "
                             f"(--mode sdn)")
    classes, size = dataset_shape(dataset)
    classes = num_classes or classes
    size = input_size or size
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if arch in MULTI_EXIT:
            try:
                model = MULTI_EXIT[arch](num_classes=classes, input_size=size)
            except ValueError as exc:
                raise DeepslothError(str(exc)) from None
        else:
            backbone = ARCHITECTURES[arch](num_classes=classes, input_size=size)
            model = build_sdn(backbone, classes, size) if sdn else backbone
    model.meta = {"arch": arch, "dataset": dataset, "mode": "sdn" if sdn else "cnn", "num_classes": classes,
                  "input_size": size}
    model.model_dir = None
    return model.to(device)


def import_builder(spec: str) -> Callable[..., nn.Module]:
    """The function `package.module:function` names (imported like any module of your code: a builder
    directory runs the code it names, it never unpickles anything)."""
    module, _, attr = str(spec).partition(":")
    if not module or not attr:
        raise DeepslothError(f"a builder is named package.module:function, got {spec!r}")
    try:
        fn = importlib.import_module(module)
        for part in attr.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError) as exc:
        raise DeepslothError(f"cannot import the builder {spec!r}: {exc}; is its package on PYTHONPATH?") from None
    if not callable(fn):
        raise DeepslothError(f"the builder {spec!r} is not a function")
    return fn


def _build_custom(meta: Dict[str, Any]) -> nn.Module:
    """A builder directory's network: the builder's model, with its exits attached unless it is a plain CNN."""
    net = import_builder(meta["builder"])(**dict(meta.get("builder_kwargs") or {}))
    if not isinstance(net, nn.Module):
        raise DeepslothError(f"the builder {meta['builder']!r} returned a {type(net).__name__}, not a torch module")
    if meta["mode"] == "cnn":
        return net
    points = meta.get("exit_points")
    if not points:
        raise DeepslothError(f"a {meta['mode']} model built by {meta['builder']!r} needs its exit_points in model.json")
    size = int(meta.get("input_size") or dataset_shape(meta["dataset"])[1])
    try:
        return attach_exits(net.eval(), points, int(meta["num_classes"]), (3, size, size))
    except ValueError as exc:
        raise DeepslothError(str(exc)) from None


def export_model(net: nn.Module, path: os.PathLike | str, *, builder: str, dataset: str,
                 builder_kwargs: Optional[Dict[str, Any]] = None, num_classes: Optional[int] = None,
                 input_size: Optional[int] = None, exit_points: Optional[Sequence[str]] = None) -> Path:
    """Save your model as a model directory naming the function that builds it: a plain CNN (`net` an
    `nn.Module` returning one logits tensor), or, with `exit_points`, the `AttachedExits` made by
    `attach_exits(net_built_by_builder, exit_points, ...)`. The builder (`package.module:function`,
    called with `builder_kwargs`) must rebuild the same network; the export checks it by loading the
    directory back strictly."""
    classes, size = dataset_shape(dataset)
    meta: Dict[str, Any] = {"arch": CUSTOM, "dataset": dataset, "mode": "cnn" if not exit_points else "sdn",
                            "num_classes": int(num_classes or classes), "input_size": int(input_size or size),
                            "builder": str(builder), "builder_kwargs": dict(builder_kwargs or {})}
    if exit_points:
        meta["exit_points"] = list(exit_points)
    with torch.random.fork_rng(devices=[]):   # the builder must rebuild this network: checked before writing
        rebuilt = _build_custom(meta)
    load_state_strict(rebuilt, {k: v.detach().cpu() for k, v in net.state_dict().items()},
                      f"the network {builder} builds")
    return save_model_dir(path, net, meta)


def _load_dir(path: os.PathLike | str, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a model directory, strictly loaded, in eval mode (`create_model` uses it)."""
    path = Path(path)
    meta = read_model_meta(path)
    missing = [k for k in ("arch", "dataset", "mode") if k not in meta]
    if missing:
        raise DeepslothError(f"{path / META} lacks the field {missing[0]!r}")
    if meta.get("builder"):
        with torch.random.fork_rng(devices=[]):
            model = _build_custom(meta)
    else:
        model = _build(meta["arch"], meta["dataset"], sdn=meta["mode"] != "cnn", num_classes=meta.get("num_classes"),
                       input_size=meta.get("input_size"), seed=None, device="cpu")
    load_state_strict(model, read_weights(path), str(path / WEIGHTS))
    model.meta = meta
    model.model_dir = path
    return model.to(device).eval()


def attach_ics(cnn: Backbone, dataset: str = "cifar10", *, num_classes: Optional[int] = None,
               input_size: Optional[int] = None, seed: Optional[int] = None) -> MultiExitNet:
    """SDN from a trained CNN, sharing its weights (only the ICs are new)."""
    classes, size = dataset_shape(dataset)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return build_sdn(cnn, num_classes or classes, input_size or size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
