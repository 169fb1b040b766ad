"""A CIFAR-10 test subset shipped inside the package, so the default audit needs no download.

1,000 images, 100 per class: the first 100 test images of every class in the stored order of
an imported CIFAR-10 test split (class-interleaved, so these are exactly its first 1,000
images). The shipped file was made from the CIFAR-10 JPEG copy (see its metadata).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import DeepslothError
from ..io import load_tensors, save_tensors
from .cache import Dataset
from .registry import CIFAR10_CLASSES

BUNDLED_PATH = Path(__file__).resolve().parent.parent / "assets" / "cifar10_test_1000.safetensors"
PER_CLASS = 100


def select_per_class(labels: torch.Tensor, per_class: int, num_classes: int) -> torch.Tensor:
    """Indices of the first `per_class` items of every class, in stored order."""
    keep = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()[:per_class]
        if len(idx) < per_class:
            raise DeepslothError(f"class {c} has only {len(idx)} test images, need {per_class}")
        keep.append(idx)
    return torch.sort(torch.cat(keep)).values


def make_bundled(test_set: Dataset, path: os.PathLike | str = BUNDLED_PATH) -> Path:
    idx = select_per_class(test_set.labels, PER_CLASS, test_set.num_classes)
    save_tensors(path, {"images": test_set.images[idx], "labels": test_set.labels[idx], "indices": idx},
                 metadata={"source": test_set.source, "selection": f"first {PER_CLASS} per class in stored order"})
    return Path(path)


def load_bundled() -> Dataset:
    """The bundled 1,000-image CIFAR-10 test subset as a `Dataset` (name cifar10, split test)."""
    if not BUNDLED_PATH.is_file():
        raise DeepslothError(f"bundled test subset missing from the installation ({BUNDLED_PATH})")
    t = load_tensors(BUNDLED_PATH)
    return Dataset("cifar10", "test", t["images"], t["labels"], list(CIFAR10_CLASSES),
                   source="bundled CIFAR-10 test subset (1,000 images, 100 per class, JPEG copy)",
                   meta={"indices": t["indices"]})
