"""Backbones, internal classifiers, multi-exit networks, the model loader and model directories.

`create_model` is the one way to get a model: a zoo name, a model directory or an architecture."""
from .attach import AttachedExits, attach_exits
from .backbones import Backbone, mobilenet, resnet56, vgg16bn
from .io import read_model_meta, save_model_dir
from .msdnet import MSDNetConfig, msdnet
from .registry import (ARCHITECTURES, DATASET_SHAPES, MULTI_EXIT, attach_ics, count_parameters, create_model,
                       export_model)
from .sdn import InternalClassifier, MultiExitNet, build_sdn
from .views import ExitView, exit_view

__all__ = [
    "Backbone", "vgg16bn", "resnet56", "mobilenet", "msdnet", "MSDNetConfig", "InternalClassifier",
    "MultiExitNet", "build_sdn", "create_model", "attach_ics", "count_parameters", "ARCHITECTURES", "MULTI_EXIT",
    "DATASET_SHAPES", "read_model_meta", "save_model_dir", "ExitView", "exit_view", "attach_exits", "AttachedExits",
    "export_model",
]
