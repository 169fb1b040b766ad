"""The on-disk dataset cache and the in-memory `Dataset`.

Layout: `<root>/<name>/train.safetensors`, `test.safetensors` (tensors `images` uint8
[N, 3, H, W] and `labels` int64 [N]) and `meta.json`. A dataset folder is written whole:
everything is built in memory, written into a hidden temporary folder under the root and
only then swapped into place, so a failed import never leaves a partial cache and never
damages the cache that was there before.

Imports merge by split: an import replaces the splits it brings and keeps the other cached
split as it was (its file is carried over unchanged, by a hard link where the file system has
them). meta.json records every cached split's count and provenance (`sources`: per split its
source, source files, import time and any shortfall) and what the last import did
(`last_import`: the splits it wrote and those it kept). A split is kept only when it can be
trusted: same class list, readable meta.json, a split file matching it; otherwise the import is
refused (one line, nothing written) and says how to replace the dataset instead.
"""
from __future__ import annotations

import json
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
from .registry import DATASETS, SPLITS, canonical_name, check_split, data_root, root_option

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
    if not isinstance(meta, dict) or not isinstance(meta.get("classes"), list):
        raise DeepslothError(f"{folder / 'meta.json'} is damaged (no class list); re-import {name}")
    path = folder / f"{split}.safetensors"
    if not path.is_file():
        raise _not_imported(name, base, root,
                            f"the {split} split of {name} was not imported (the import had no "
                            f"{split} images)")
    tensors = load_tensors(path)
    if "images" not in tensors or "labels" not in tensors:
        raise DeepslothError(f"{path} lacks the 'images'/'labels' tensors; re-import {name}")
    return Dataset(name, split, tensors["images"], tensors["labels"], list(meta["classes"]),
                   split_source(meta, split), meta)


def split_source(meta: Dict, split: str) -> str:
    """Where the cached `split` came from: its own source, else (meta.json of older versions) the
    dataset's."""
    own = meta.get("sources")
    if isinstance(own, dict) and isinstance(own.get(split), dict) and "source" in own[split]:
        return str(own[split]["source"])
    return str(meta.get("source", ""))


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
                  classes: Sequence[str], source: str, extra: Optional[Dict] = None, *,
                  sources: Optional[Dict[str, Dict]] = None) -> Path:
    """Atomically write `splits` = {split: (images, labels)} into `<root>/<name>`.

    The splits given replace their cached versions; a cached split not given is kept as it is (see
    the module docstring), or the whole write is refused with a one-line error when it cannot be
    kept. `sources` gives each written split's provenance ({"source", "source_files",
    "incomplete"}); by default every split's source is `source`. `extra` adds dataset-wide fields to
    meta.json.
    """
    name = canonical_name(name)
    info = DATASETS[name]
    base = data_root(root)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for split in splits:
        check_split(split)
    written: Dict[str, Dict] = {}
    for split in SPLITS:
        if split not in splits:
            continue
        images = splits[split][0]
        if images.shape[0] == 0:
            raise DeepslothError(f"no {split} images found for {name}")
        given = dict((sources or {}).get(split) or {})
        prov = {"source": str(given.get("source", source)), "count": int(images.shape[0]),
                "source_files": list(given.get("source_files", [])), "imported_at": now,
                "deepsloth_version": __version__}
        if given.get("incomplete"):
            prov["incomplete"] = list(given["incomplete"])
        written[split] = prov
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepslothError(f"cannot create the data cache in {base}: {exc.strerror or exc}") from None
    # One writer per dataset folder: a concurrent import or download stops with an error naming the
    # first, instead of silently replacing its result. The kept splits are checked under the lock.
    with exclusive(base / name, f"the {name} dataset cache in {base}"):
        kept = kept_splits(name, base, written, classes, source)
        meta = _meta(name, info.image_size, classes, written, kept, now, extra)
        _swap_in(base, name, splits, meta, keep=list(kept))
    return base / name


def _meta(name: str, image_size: int, classes: Sequence[str], written: Dict[str, Dict],
          kept: Dict[str, Dict], now: str, extra: Optional[Dict]) -> Dict:
    present = {s: (written.get(s) or kept[s]) for s in SPLITS if s in written or s in kept}
    texts = list(dict.fromkeys(p.get("source", "") for p in present.values()))
    files: Dict[str, Dict] = {}
    incomplete: List[str] = []
    for p in present.values():
        for f in p.get("source_files", []):
            files.setdefault(json.dumps(f, sort_keys=True), f)
        incomplete += [q for q in p.get("incomplete", []) if q not in incomplete]
    meta = {
        "name": name,
        "classes": list(classes),
        "num_classes": len(classes),
        "image_size": image_size,
        "splits": {s: int(p["count"]) for s, p in present.items()},
        "source": texts[0] if len(texts) == 1 else "; ".join(f"{s}: {p.get('source', '')}"
                                                             for s, p in present.items()),
        "sources": present,
        "last_import": {"splits": list(written), "kept": list(kept)},
        "order": ORDER_NOTE,
        "deepsloth_version": __version__,
        "imported_at": now,
    }
    news = list(dict.fromkeys(q for p in written.values() for q in p.get("incomplete", [])))
    if news:   # the shortfalls of the splits this import wrote (`data import` notes them)
        meta["last_import"]["incomplete"] = news
    if files:
        meta["source_files"] = list(files.values())
    if incomplete:
        meta["incomplete"] = incomplete
    if extra:
        meta.update(extra)
    return meta


def kept_splits(name: str, root: Optional[os.PathLike | str], importing: Sequence[str],
                classes: Sequence[str], what: str) -> Dict[str, Dict]:
    """The cached splits of `name` that an import writing `importing` keeps: {split: provenance}.

    Importers call it before decoding (a refusal then costs nothing); `write_dataset` calls it again
    under the write lock. A cached split that cannot be trusted is a one-line error (`what` names
    the import): its meta.json unreadable, its class list other than `classes`, its file not the
    uint8 [N, 3, S, S] images and N labels meta.json promises.
    """
    name = canonical_name(name)
    folder = data_root(root) / name
    others = [s for s in SPLITS if s not in importing and (folder / f"{s}.safetensors").is_file()]
    if not others or not (folder / "meta.json").is_file():
        return {}   # nothing cached besides the splits written (a split file without meta.json never loaded)

    def refuse(split: str, why: str) -> DeepslothError:
        return DeepslothError(f"cannot keep the cached {name} {split} split: {why}; import both splits together "
                              f"to replace the dataset, or remove {folder}")
    try:
        meta = read_json(folder / "meta.json")
    except DeepslothError as exc:
        raise refuse(others[0], str(exc)) from None
    if not isinstance(meta, dict):
        raise refuse(others[0], f"{folder / 'meta.json'} is not a JSON object")
    if meta.get("classes") != list(classes):
        raise refuse(others[0], f"its class list differs from this import's ({what})")
    counts = meta.get("splits") if isinstance(meta.get("splits"), dict) else {}
    size = DATASETS[name].image_size
    out: Dict[str, Dict] = {}
    for split in others:
        path = folder / f"{split}.safetensors"
        try:
            images, labels = _header(path)
        except Exception as exc:   # safetensors raises its own error types
            raise refuse(split, f"cannot read {path} as safetensors ({' '.join(str(exc).split())})") from None
        n = counts.get(split)
        if not isinstance(n, int) or isinstance(n, bool):
            raise refuse(split, f"{folder / 'meta.json'} lists no image count for it")
        if images != ("U8", [n, 3, size, size]) or labels[1] != [n]:
            raise refuse(split, f"{path} does not hold the {n} uint8 {size}x{size} images and labels that "
                                f"{folder / 'meta.json'} lists")
        out[split] = dict(_old_provenance(meta, split), count=n)
    return out


def _header(path: Path) -> tuple:
    """(dtype, shape) of the `images` and `labels` tensors of a safetensors file, tensors unread."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return tuple((f.get_slice(k).get_dtype(), list(f.get_slice(k).get_shape())) for k in ("images", "labels"))


def _old_provenance(meta: Dict, split: str) -> Dict:
    """The provenance of a kept split, from its meta.json (read as text and lists of plain values)."""
    own = meta.get("sources")
    if isinstance(own, dict) and isinstance(own.get(split), dict):
        old = own[split]
        incomplete = [str(q) for q in old.get("incomplete", [])] if isinstance(old.get("incomplete"), list) else []
    else:   # meta.json of earlier versions: one source for the whole dataset
        old = meta
        incomplete = [str(q) for q in meta.get("incomplete", []) if isinstance(meta.get("incomplete"), list)
                      and (f"the {split} split" in str(q) or not any(f"the {s} split" in str(q) for s in SPLITS))]
    prov = {"source": str(old.get("source", "")), "imported_at": str(old.get("imported_at", "")),
            "deepsloth_version": str(old.get("deepsloth_version", ""))}
    if isinstance(old.get("source_files"), list):
        prov["source_files"] = [f for f in old["source_files"] if isinstance(f, dict)]
    if incomplete:
        prov["incomplete"] = incomplete
    return prov


def _swap_in(base: Path, name: str, splits: Dict[str, tuple], meta: Dict, keep: Sequence[str] = ()) -> None:
    """Write the dataset into a hidden folder under `base`, then swap it in for `base/name`; the split
    files in `keep` are carried over from the folder replaced."""
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
        for split in keep:
            src, dst = target / f"{split}.safetensors", tmp / f"{split}.safetensors"
            try:
                os.link(src, dst)          # the same bytes, no copy; the old folder is removed below
            except OSError:
                shutil.copy2(src, dst)
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
                "sources": {s: split_source(meta, s) for s in SPLITS if int(splits.get(s, 0))},
                "imported_at": meta.get("imported_at", ""),
                "path": str(base / name),
            }
            if isinstance(meta.get("last_import"), dict):
                out[name]["last_import"] = meta["last_import"]
            if meta.get("incomplete"):
                out[name]["incomplete"] = [str(p) for p in meta["incomplete"]]
        except (DeepslothError, AttributeError, TypeError, ValueError) as exc:
            out[name] = {"error": f"unreadable meta.json: {exc}", "path": str(base / name)}
    return out


__all__ = ["Dataset", "load_dataset", "write_dataset", "kept_splits", "split_source", "dataset_info",
           "interleave_order", "ORDER_NOTE"]
