"""Backbones, internal classifiers, multi-exit networks, registry and model directories."""
from .backbones import Backbone, mobilenet, resnet56, vgg16bn
from .io import load_model_dir, read_model_meta, save_model_dir
from .registry import ARCHITECTURES, DATASET_SHAPES, attach_ics, count_parameters, create_model
from .sdn import InternalClassifier, MultiExitNet, build_sdn
from .views import ExitView, exit_view

__all__ = [
    "Backbone", "vgg16bn", "resnet56", "mobilenet", "InternalClassifier", "MultiExitNet",
    "build_sdn", "create_model", "attach_ics", "count_parameters", "ARCHITECTURES",
    "DATASET_SHAPES", "load_model_dir", "read_model_meta", "save_model_dir", "ExitView", "exit_view",
]
