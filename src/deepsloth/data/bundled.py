"""CIFAR-10 subsets shipped inside the package, so the default audit needs no download.

* test: 1,000 images, 100 per class: the first 100 test images of every class in the stored
  order of an imported CIFAR-10 test split (class-interleaved, so these are exactly its first
  1,000 images, the same ones `--n 1000` selects from a full import);
* train: 250 images, 25 per class, chosen the same way from the training split; universal
  perturbations are crafted on them (docs/method.md §5.4 crafts on 250 training images).

The shipped files were made from the CIFAR-10 JPEG copy (see their metadata).
"""
from __future__ import annotations

from pathlib import Path


from ..errors import DeepslothError
from ..io import load_tensors
from .cache import Dataset
from .registry import CIFAR10_CLASSES

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED = {"test": (ASSETS / "cifar10_test_1000.safetensors", 100),
           "train": (ASSETS / "cifar10_train_250.safetensors", 25)}
BUNDLED_PATH = BUNDLED["test"][0]


def load_bundled(split: str = "test") -> Dataset:
    """A bundled CIFAR-10 subset as a `Dataset` (name cifar10; split test or train)."""
    if split not in BUNDLED:
        raise DeepslothError(f"no bundled {split!r} subset; choose test or train")
    path, per_class = BUNDLED[split]
    if not path.is_file():
        raise DeepslothError(f"bundled {split} subset missing from the installation ({path})")
    t = load_tensors(path)
    return Dataset("cifar10", split, t["images"], t["labels"], list(CIFAR10_CLASSES),
                   source=f"bundled CIFAR-10 {split} subset ({len(t['labels'])} images, {per_class} per class, "
                          f"JPEG copy)", meta={"indices": t["indices"]})
