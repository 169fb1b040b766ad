"""One way in: `create_model("resnet56", dataset="cifar10", sdn=True)`.

Names may carry the kind as a suffix (`resnet56_sdn`, `resnet56_cnn`), as in timm.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import DeepslothError
from .backbones import Backbone, mobilenet, resnet56, vgg16bn
from .msdnet import msdnet
from .sdn import MultiExitNet, build_sdn

ARCHITECTURES: Dict[str, Callable[..., Backbone]] = {
    "vgg16bn": vgg16bn,
    "resnet56": resnet56,
    "mobilenet": mobilenet,
}
# Architectures built with their exits (no plain-CNN form, trained jointly): name -> builder of the
# multi-exit network
MULTI_EXIT: Dict[str, Callable[..., MultiExitNet]] = {
    "msdnet": msdnet,
}
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


def create_model(name: str, dataset: str = "cifar10", *, sdn: Optional[bool] = None,
                 num_classes: Optional[int] = None, input_size: Optional[int] = None,
                 seed: Optional[int] = None, pretrained: bool = False,
                 device: str | torch.device = "cpu") -> nn.Module:
    """Build a backbone CNN (`sdn=False`) or its SDN with one IC per block (`sdn=True`, default).

    `seed` makes the initialisation reproducible without touching the global RNG state.
    `pretrained=True` returns the shipped zoo model `<arch>_sdn_<dataset>` (loaded strictly, in
    eval mode) with its `model.json` metadata as `model.meta`.
    """
    arch, suffix_sdn = parse_name(name)
    if pretrained:
        if sdn is False or suffix_sdn is False:
            raise DeepslothError("the zoo ships SDNs only; use pretrained=True without sdn=False")
        if num_classes is not None or input_size is not None or seed is not None:
            raise DeepslothError("pretrained models fix their classes, input size and weights")
        from .zoo import load_model, zoo_names
        zoo_name = zoo_name_for(arch, dataset)
        if zoo_name not in zoo_names():
            raise DeepslothError(f"no pretrained {zoo_name} in the zoo (shipped: {', '.join(zoo_names()) or 'none'}); "
                                 f"train it with `deepsloth zoo train {arch}`")
        model, meta, _ = load_model(zoo_name, device)
        model.meta = meta
        return model
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
                return MULTI_EXIT[arch](num_classes=classes, input_size=size)
            except ValueError as exc:
                raise DeepslothError(str(exc)) from None
        backbone = ARCHITECTURES[arch](num_classes=classes, input_size=size)
        return build_sdn(backbone, classes, size) if sdn else backbone


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
