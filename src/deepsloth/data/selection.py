"""Selecting training or test images: a seeded share of every class, a subset of classes.

* `fraction_indices(labels, F, S)`: from every class, a seeded random F share of its images (at
  least one), kept in stored order: the same F and S always give the same images, and each class
  keeps its proportion.
* `subset_dataset(ds, classes=[c1, c2, ...])`: only those classes, relabelled 0..c-1 in the order
  given. A model trained so records the mapping in model.json (`class_subset`), and every command
  that evaluates it uses only the test images of those classes, mapped the same way.
"""
from __future__ import annotations

import hashlib
from typing import List, Optional, Sequence

import torch

from ..errors import DeepslothError
from ..validate import check_number
from .cache import Dataset


def fraction_indices(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A seeded `fraction` of every class's indices (at least one per class), in stored order."""
    check_number("data_fraction", fraction, low=0.0, high=1.0, low_open=True)
    g = torch.Generator().manual_seed(int(seed))
    keep = []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        k = max(1, int(round(fraction * len(idx))))
        keep.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.sort(torch.cat(keep)).values


def subset_dataset(ds: Dataset, classes: Optional[Sequence[int]] = None,
                   indices: Optional[torch.Tensor] = None) -> Dataset:
    """`ds` restricted to `indices` and/or to `classes` (relabelled 0..c-1 in the given order)."""
    images, labels = ds.images, ds.labels
    if indices is not None:
        images, labels = images[indices], labels[indices]
    names = list(ds.classes)
    if classes is not None:
        classes = [int(c) for c in classes]
        mapping = torch.full((max(len(ds.classes), max(classes) + 1),), -1, dtype=torch.int64)
        mapping[torch.tensor(classes)] = torch.arange(len(classes))
        keep = (mapping[labels] >= 0).nonzero().flatten()
        images, labels = images[keep], mapping[labels[keep]]
        names = [ds.classes[c] for c in classes]
    return Dataset(ds.name, ds.split, images, labels, names, ds.source, ds.meta)


def check_classes(classes: Sequence[int], num_classes: int) -> List[int]:
    classes = [int(c) for c in classes]
    if len(classes) < 2:
        raise DeepslothError("--classes needs at least two classes")
    if len(set(classes)) != len(classes):
        raise DeepslothError(f"--classes repeats a class: {classes}")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise DeepslothError(f"--classes {bad} outside 0..{num_classes - 1}")
    return classes


def indices_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


__all__ = ["fraction_indices", "subset_dataset", "check_classes", "indices_sha256"]
