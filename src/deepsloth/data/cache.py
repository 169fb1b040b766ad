"""The on-disk dataset cache and the in-memory `Dataset`.

Layout: `<root>/<name>/train.safetensors`, `test.safetensors` (tensors `images` uint8
[N, 3, H, W] and `labels` int64 [N]) and `meta.json`. A dataset folder is written whole:
everything is built in memory, written into a hidden temporary folder under the root and
only then swapped into place, so a failed import never leaves a partial cache and never
damages the cache that was there before.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from .. import __version__
from ..errors import DeepslothError
from ..io import exclusive, load_tensors, read_json, save_tensors, write_json
from .registry import DATASETS, canonical_name, check_split, data_root, root_option

ORDER_NOTE = ("class-interleaved: files sorted by (class, natural file name), then ordered by "
              "(index within class, class), so every prefix is as class-balanced as possible")


@dataclass
class Dataset:
    """One split of a dataset, held as tensors. `images` uint8 [N,3,H,W], `labels` int64 [N]."""
    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: List[str]
    source: str = ""
    meta: Dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise DeepslothError(f"{self.name}/{self.split}: images must be uint8 [N,3,H,W], "
                                 f"got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise DeepslothError(f"{self.name}/{self.split}: {self.labels.shape[0]} labels for "
                                 f"{self.images.shape[0]} images")
        self.labels = self.labels.to(torch.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def subset(self, n: int) -> "Dataset":
        """The first `n` items in stored order (class-interleaved, so a prefix is balanced)."""
        if n < 0:
            raise DeepslothError(f"subset size must be >= 0, got {n}")
        return Dataset(self.name, self.split, self.images[:n], self.labels[:n], list(self.classes),
                       self.source, self.meta)

    def to(self, device) -> "Dataset":
        return Dataset(self.name, self.split, self.images.to(device), self.labels.to(device),
                       list(self.classes), self.source, self.meta)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, {self.split!r}, n={len(self)}, "
                f"size={self.image_size}, classes={self.num_classes})")


def _not_imported(name: str, root: Path, explicit_root: Optional[os.PathLike | str],
                  what: str) -> DeepslothError:
    opt = root_option(explicit_root)
    example = ("/path/to/cifar-10-python.tar.gz" if name == "cifar10"
               else "/path/to/tiny-imagenet-200.zip")
    return DeepslothError(
        f"{what} in {root}; run `deepsloth data download {name}{opt}` or "
        f"`deepsloth data import {name} {example}{opt}`")


def load_dataset(name: str, split: str, root: Optional[os.PathLike | str] = None) -> Dataset:
    """Load one split of an imported dataset from the cache (fast: one safetensors read)."""
    name = canonical_name(name)
    check_split(split)
    base = data_root(root)
    folder = base / name
    if not (folder / "meta.json").is_file():
        raise _not_imported(name, base, root, f"dataset {name} is not imported")
    meta = read_json(folder / "meta.json")
    path = folder / f"{split}.safetensors"
    if not path.is_file():
        raise _not_imported(name, base, root,
                            f"the {split} split of {name} was not imported (the import had no "
                            f"{split} images)")
    tensors = load_tensors(path)
    if "images" not in tensors or "labels" not in tensors:
        raise DeepslothError(f"{path} lacks the 'images'/'labels' tensors; re-import {name}")
    return Dataset(name, split, tensors["images"], tensors["labels"], list(meta["classes"]),
                   str(meta.get("source", "")), meta)


def interleave_order(labels: Sequence[int]) -> List[int]:
    """Indices ordering items by (rank within class, class), keeping the input order inside
    each class. Input must already be sorted by (class, name)."""
    seen: Dict[int, int] = {}
    keys = []
    for i, y in enumerate(labels):
        r = seen.get(y, 0)
        seen[y] = r + 1
        keys.append((r, y, i))
    keys.sort()
    return [i for _, _, i in keys]


def write_dataset(name: str, root: Optional[os.PathLike | str], splits: Dict[str, tuple],
                  classes: Sequence[str], source: str, extra: Optional[Dict] = None) -> Path:
    """Atomically (re)place `<root>/<name>` with `splits` = {split: (images, labels)}.

    The whole dataset folder is replaced: an import defines the dataset; splits it does not
    provide are not carried over from an older import (no silent mixing of sources).
    """
    name = canonical_name(name)
    info = DATASETS[name]
    base = data_root(root)
    counts = {}
    for split, (images, labels) in splits.items():
        check_split(split)
        if images.shape[0] == 0:
            raise DeepslothError(f"no {split} images found for {name}")
        counts[split] = int(images.shape[0])
    meta = {
        "name": name,
        "classes": list(classes),
        "num_classes": len(classes),
        "image_size": info.image_size,
        "splits": counts,
        "source": source,
        "order": ORDER_NOTE,
        "deepsloth_version": __version__,
        "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if extra:
        meta.update(extra)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepslothError(f"cannot create the data cache in {base}: {exc.strerror or exc}") from None
    # One writer per dataset folder: a concurrent import or download stops with an error naming
    # the first, instead of silently replacing its result.
    with exclusive(base / name, f"the {name} dataset cache in {base}"):
        _swap_in(base, name, splits, meta)
    return base / name


def _swap_in(base: Path, name: str, splits: Dict[str, tuple], meta: Dict) -> None:
    """Write the dataset into a hidden folder under `base`, then swap it in for `base/name`."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.importing-", dir=base))
    except OSError as exc:
        raise DeepslothError(f"cannot create the data cache in {base}: {exc.strerror or exc}") from None
    target = base / name
    old: Optional[Path] = None
    try:
        for split, (images, labels) in splits.items():
            save_tensors(tmp / f"{split}.safetensors",
                         {"images": images.contiguous(), "labels": labels.to(torch.int64)},
                         metadata={"dataset": name, "split": split})
        write_json(tmp / "meta.json", meta)
        _relax_permissions(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=base))
            os.replace(target, old / name)
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:          # put the previous good cache back
                os.replace(old / name, target)
            raise
    except OSError as exc:
        raise DeepslothError(f"cannot write the data cache in {base}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _relax_permissions(folder: Path) -> None:
    """mkdtemp/mkstemp create owner-only entries; give the cache the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.iterdir():
        os.chmod(f, 0o666 & ~umask)


def dataset_info(root: Optional[os.PathLike | str] = None) -> Dict[str, Dict]:
    """What is imported under `root`, read from each meta.json (no tensors are loaded)."""
    base = data_root(root)
    out: Dict[str, Dict] = {}
    for name in DATASETS:
        meta_path = base / name / "meta.json"
        if not meta_path.is_file():
            continue
        try:
            meta = read_json(meta_path)
            splits = meta.get("splits", {})
            out[name] = {
                "train": int(splits.get("train", 0)),
                "test": int(splits.get("test", 0)),
                "classes": int(meta.get("num_classes", len(meta.get("classes", [])))),
                "image_size": int(meta.get("image_size", DATASETS[name].image_size)),
                "source": str(meta.get("source", "")),
                "imported_at": meta.get("imported_at", ""),
                "path": str(base / name),
            }
            if meta.get("incomplete"):
                out[name]["incomplete"] = [str(p) for p in meta["incomplete"]]
        except (DeepslothError, AttributeError, TypeError, ValueError) as exc:
            out[name] = {"error": f"unreadable meta.json: {exc}", "path": str(base / name)}
    return out


__all__ = ["Dataset", "load_dataset", "write_dataset", "dataset_info", "interleave_order",
           "ORDER_NOTE"]
