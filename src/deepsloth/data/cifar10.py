"""CIFAR-10 importers: image-folder trees/zips and the canonical pickled tarball.

Image folders: files laid out `<split>/<class>/<file>` (split `train` or `test`, class one of
the canonical ten names), possibly under any top folders, e.g.
`cifar10-jpeg/train/airplane/0001.jpg`. Several trees or zips may be given (one per split). An
import replaces the splits it brings and keeps the other cached split (`cache.write_dataset`);
`splits=["test"]` (`--split test`) imports one split from archives holding both.
Every split found must hold all ten classes with the same number of images each (CIFAR-10's
5,000 / 1,000); anything less is refused before the cache is touched unless
`allow_incomplete=True` (`--allow-incomplete`), see `data.complete`.

Canonical archive: `cifar-10-python.tar.gz` with pickled batches `data_batch_1..5` and
`test_batch` (also accepted: the extracted `cifar-10-batches-py` folder). The pickles are
read with an unpickler that resolves only numpy's array-reconstruction globals, so a
tampered archive cannot run code.
"""
from __future__ import annotations

import io
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import DeepslothError
from .archive import Archive, file_fingerprint, open_archive
from .cache import interleave_order, kept_splits, write_dataset
from .complete import class_problems, settle
from .decode import decode_images
from .registry import CIFAR10_CLASSES, SPLITS, wanted_splits
from .sorting import natural_key

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
CANONICAL_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


# ---------------------------------------------------------------- restricted unpickling

def _numpy_globals() -> Dict[Tuple[str, str], object]:
    try:  # NumPy 2 moved the implementation to numpy._core; old pickles name numpy.core
        from numpy._core import multiarray as _ma  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray as _ma  # type: ignore[no-redef]
    allowed: Dict[Tuple[str, str], object] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = _ma._reconstruct
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain data (dicts, lists, str/bytes, numbers) plus numpy arrays, nothing else.

    Any other global (a function or class the pickle asks for) is refused, which is what
    stops a malicious pickle from calling e.g. `os.system`.
    """
    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def safe_unpickle(data: bytes, where: str):
    """Load a CIFAR batch pickle (Python 2 or 3) with `SafeUnpickler`."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DeepslothError(f"{where}: unsafe or corrupt pickle ({exc})") from None
    except Exception as exc:  # truncated data, bad opcodes, numpy state errors...
        raise DeepslothError(f"{where}: corrupt pickle ({type(exc).__name__}: {exc})") from None


def _get(d: dict, key: str):
    if key in d:
        return d[key]
    return d.get(key.encode())


def _read_batch(blob: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
    batch = safe_unpickle(blob, where)
    if not isinstance(batch, dict):
        raise DeepslothError(f"{where}: expected a dict, got {type(batch).__name__}")
    data, labels = _get(batch, "data"), _get(batch, "labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DeepslothError(f"{where}: missing 'data' array or 'labels' list")
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
            or data.shape[0] != labels.shape[0]:
        raise DeepslothError(f"{where}: expected uint8 data [N, 3072] and N labels, got "
                             f"{data.dtype} {data.shape} and {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise DeepslothError(f"{where}: labels outside 0..9")
    return data, labels


def _canonical_members(archive: Archive) -> Optional[Dict[str, str]]:
    """Map batch name -> member path when `archive` holds the pickled batches, else None."""
    found: Dict[str, str] = {}
    wanted = set(sum(CANONICAL_BATCHES.values(), [])) | {"batches.meta"}
    for name in archive.names():
        base = PurePosixPath(name).name
        if base in wanted and (base not in found or len(name) < len(found[base])):
            found[base] = name
    if not any(b in found for b in ("data_batch_1", "test_batch")):
        return None
    missing = sorted(b for b in wanted - {"batches.meta"} if b not in found)
    if missing:
        raise DeepslothError(f"{archive.path} looks like cifar-10-python but lacks "
                             f"{', '.join(missing)}")
    return found


def _import_canonical(archive: Archive, members: Dict[str, str],
                      wanted: Sequence[str] = SPLITS) -> Dict[str, tuple]:
    # One pass in storage order: a .tar.gz is a stream, and seeking back re-decompresses.
    needed = {b for s in wanted for b in CANONICAL_BATCHES[s]} | {"batches.meta"}
    members = {b: m for b, m in members.items() if b in needed}
    blobs = dict(archive.read_many(members.values()))
    where = {b: f"{archive.path.name}:{m}" for b, m in members.items()}
    if "batches.meta" in members:
        meta = safe_unpickle(blobs[members["batches.meta"]], where["batches.meta"])
        names = _get(meta, "label_names") if isinstance(meta, dict) else None
        if names is not None:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
            if tuple(names) != CIFAR10_CLASSES:
                raise DeepslothError(f"{archive.path}: label names {names} are not CIFAR-10's")
    splits = {}
    for split, batches in CANONICAL_BATCHES.items():
        if split not in wanted:
            continue
        parts = [_read_batch(blobs[members[b]], where[b]) for b in batches]
        data = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        # Stable sort by class keeps the canonical order inside each class.
        by_class = np.argsort(labels, kind="stable")
        order = np.asarray(interleave_order(labels[by_class].tolist()), dtype=np.int64)
        idx = by_class[order]
        images = torch.from_numpy(np.ascontiguousarray(data[idx].reshape(-1, 3, 32, 32)))
        splits[split] = (images, torch.from_numpy(labels[idx]))
    return splits


# ---------------------------------------------------------------- image folders

def _scan_tree(archive: Archive, wanted: Sequence[str] = SPLITS) -> Dict[str, List[Tuple[int, str]]]:
    """{split: [(label, member name), ...]} for `.../<split>/<class>/<image>` members of the
    `wanted` splits."""
    index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    found: Dict[str, List[Tuple[int, str]]] = {s: [] for s in wanted}
    for name in archive.names():
        parts = PurePosixPath(name).parts
        if len(parts) < 3 or any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        split, cls, fname = parts[-3], parts[-2], parts[-1]
        if split not in found or PurePosixPath(fname).suffix.lower() not in IMAGE_EXTS:
            continue
        if cls not in index:
            raise DeepslothError(
                f"unknown class folder {cls!r} in {archive.path} ({'/'.join(parts[:-1])}); "
                f"CIFAR-10 classes are: {' '.join(CIFAR10_CLASSES)}")
        found[split].append((index[cls], name))
    return {s: v for s, v in found.items() if v}


# ---------------------------------------------------------------- entry point

def import_cifar10(paths: Sequence[os.PathLike | str] | os.PathLike | str,
                   root: Optional[os.PathLike | str] = None, *, allow_incomplete: bool = False,
                   splits: Optional[Sequence[str]] = None) -> Path:
    """Import CIFAR-10 into the cache at `root`; returns the dataset folder.

    `paths`: the canonical `cifar-10-python.tar.gz` (or its extracted folder), or one or more
    image-folder trees/zips. The import replaces the splits it brings, atomically, and keeps the
    other cached split (a test-only zip leaves the cached train split as it was); `splits`
    (e.g. ["test"]) imports only those splits from archives that hold more.
    Image folders lacking a class in a split, or with unequal per-class counts, are refused
    (before decoding, the cache untouched) unless `allow_incomplete`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p).expanduser() for p in paths]
    if not paths:
        raise DeepslothError("no CIFAR-10 archive or folder given")
    wanted = wanted_splits(splits)
    t0 = time.perf_counter()
    archives: List[Archive] = []
    try:
        for p in paths:
            archives.append(open_archive(p))
        what = ", ".join(a.path.name for a in archives)
        canonical = [(a, m) for a in archives if (m := _canonical_members(a)) is not None]
        if canonical:
            if len(archives) != 1:
                raise DeepslothError("give the canonical cifar-10-python archive on its own, "
                                     "not together with other archives")
            archive, members = canonical[0]
            kept_splits("cifar10", root, wanted, CIFAR10_CLASSES, what)   # refuse before any work
            found = _import_canonical(archive, members, wanted)
            source = f"{archive.path.name} (canonical)"
            files = [file_fingerprint(archive.path)]
            sources = {s: {"source": source, "source_files": files} for s in found}
        else:
            plan = _plan_folders(archives, wanted, allow_incomplete)
            kept_splits("cifar10", root, list(plan.items), CIFAR10_CLASSES, what)   # refuse before decoding
            found = _decode_folders(plan)
            source = _folder_source(archives)
            sources = {}
            for s in found:   # each split's provenance names the archives that held it
                mine = [a for a in archives if any(t[2] is a for t in plan.items[s])]
                sources[s] = {"source": _folder_source(mine), "incomplete": plan.problems.get(s, []),
                              "source_files": [file_fingerprint(a.path) for a in mine]}
    finally:
        for a in archives:
            a.close()
    extra = {"import_seconds": round(time.perf_counter() - t0, 2)}
    return write_dataset("cifar10", root, found, CIFAR10_CLASSES, source, extra, sources=sources)


def _folder_source(archives: Sequence[Archive]) -> str:
    kinds = {type(a).__name__ for a in archives}
    kind = "zips" if kinds == {"ZipArchive"} else "folders" if kinds == {"FolderArchive"} \
        else "archives"
    jpeg = any(n.lower().endswith((".jpg", ".jpeg")) for a in archives for n in a.names()[:50])
    what = "JPEG image-folder" if jpeg else "image-folder"
    return f"cifar10 {what} {kind}: " + ", ".join(a.path.name for a in archives)


@dataclass
class _Plan:
    """What an image-folder import will decode: {split: [(label, member, archive)]} in stored order,
    and the shortfalls allowed per split."""
    items: Dict[str, List[Tuple[int, str, Archive]]]
    problems: Dict[str, List[str]]


def _plan_folders(archives: Sequence[Archive], wanted: Sequence[str] = SPLITS,
                  allow_incomplete: bool = False) -> _Plan:
    """Scan the trees, check duplicates and completeness (refusing before any decoding)."""
    per_split: Dict[str, List[Tuple[int, str, Archive]]] = {s: [] for s in wanted}
    owner: Dict[Tuple[str, int, str], Path] = {}
    for archive in archives:
        scanned = _scan_tree(archive, wanted)
        if not scanned:
            which = " " + wanted[0] if len(wanted) == 1 else ""
            splits_text = " or ".join(f"'{s}'" for s in wanted)
            raise DeepslothError(
                f"no CIFAR-10{which} images found in {archive.path}: expected <split>/<class>/<image> "
                f"with split {splits_text} (or the canonical cifar-10-python batches)")
        for split, items in scanned.items():
            for label, name in items:
                key = (split, label, PurePosixPath(name).name)
                if key in owner:
                    raise DeepslothError(
                        f"image {split}/{CIFAR10_CLASSES[label]}/{key[2]} appears twice "
                        f"({owner[key].name} and {archive.path.name})")
                owner[key] = archive.path
                per_split[split].append((label, name, archive))
    per_split = {s: items for s, items in per_split.items() if items}
    problems = {s: class_problems({s: [y for y, _, _ in items]}, CIFAR10_CLASSES) for s, items in per_split.items()}
    settle([q for s in per_split for q in problems[s]], "cifar10",
           ", ".join(a.path.name for a in archives), allow_incomplete)
    for split, items in per_split.items():
        # Sort by (class, file name); the archive only breaks ties between distinct names.
        items.sort(key=lambda t: (t[0], natural_key(PurePosixPath(t[1]).name), str(t[2].path)))
        order = interleave_order([y for y, _, _ in items])
        per_split[split] = [items[i] for i in order]
    return _Plan(per_split, problems)


def _decode_folders(plan: _Plan) -> Dict[str, tuple]:
    splits = {}
    for split, items in plan.items.items():
        images = torch.empty((len(items), 3, 32, 32), dtype=torch.uint8)
        for archive in {id(a): a for _, _, a in items}.values():
            pos = [i for i, t in enumerate(items) if t[2] is archive]
            names = [items[i][1] for i in pos]
            images[pos] = decode_images(archive, names, 32, desc=f"cifar10 {split}")
        labels = torch.tensor([y for y, _, _ in items], dtype=torch.int64)
        splits[split] = (images, labels)
    return splits
