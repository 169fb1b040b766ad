"""Tiny ImageNet importer for the canonical `tiny-imagenet-200` layout (zip, tar or folder).

    tiny-imagenet-200/wnids.txt                       class order (one wnid a line)
    tiny-imagenet-200/words.txt                       wnid -> description (optional)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG      training images (any number per class)
    tiny-imagenet-200/val/images/*.JPEG               official validation images, our test set
    tiny-imagenet-200/val/val_annotations.txt         <file> TAB <wnid> TAB box...

The unlabelled `test/` folder is ignored. Grayscale JPEGs (there are some) become RGB.

An import must be complete: 200 wnids, every class with training and validation images, as
many images in every class of a split, and an annotation for every validation image (and an
image for every annotation). Anything less is refused before decoding, the cache untouched,
unless `allow_incomplete=True` (`--allow-incomplete`): then unannotated validation images are
left out and the shortfalls are recorded in meta.json (`data.complete`).

An archive holding only one split (say, only val/) replaces that split and keeps the other cached
split; `splits=["train"]` (`--split train`) imports one split of an archive holding both, and reads
nothing of the other (its problems, e.g. a missing val_annotations.txt, then do not matter).
"""
from __future__ import annotations

import os
import time
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import DeepslothError
from .archive import Archive, file_fingerprint, open_archive
from .cache import interleave_order, kept_splits, write_dataset
from .complete import class_problems, settle
from .decode import decode_images
from .registry import SPLITS, wanted_splits
from .sorting import natural_key

SIZE = 64
NUM_CLASSES = 200


def _text(archive: Archive, name: str) -> str:
    try:
        return archive.read(name).decode("utf-8")
    except UnicodeDecodeError:
        raise DeepslothError(f"{archive.path}:{name} is not UTF-8 text") from None


def _find_base(archive: Archive) -> str:
    """Prefix ('' or 'some/dir/') of the folder holding wnids.txt (the shallowest one)."""
    hits = [n for n in archive.names() if PurePosixPath(n).name == "wnids.txt"
            and "__MACOSX" not in n]
    if not hits:
        raise DeepslothError(f"no wnids.txt in {archive.path}: not a tiny-imagenet-200 layout "
                             f"(expected tiny-imagenet-200/wnids.txt, train/, val/)")
    best = min(hits, key=lambda n: (n.count("/"), n))
    parent = str(PurePosixPath(best).parent)
    return "" if parent == "." else parent + "/"


def _scan(archive: Archive, wanted: Sequence[str] = SPLITS) \
        -> Tuple[List[str], Dict[str, str], Dict[str, List[Tuple[int, str]]], Dict[str, List[str]]]:
    """(wnids, descriptions, {split: [(label, member)]}, {split: shortfalls, "": all of them}) for
    the `wanted` splits (a split not wanted is not read: `--split train` ignores the val folder)."""
    base = _find_base(archive)
    wnids = [w.strip() for w in _text(archive, base + "wnids.txt").splitlines() if w.strip()]
    if len(set(wnids)) != len(wnids) or not wnids:
        raise DeepslothError(f"{archive.path}: wnids.txt is empty or lists a class twice")
    index = {w: i for i, w in enumerate(wnids)}
    names = set(archive.names())
    words: Dict[str, str] = {}
    if base + "words.txt" in names:
        for line in _text(archive, base + "words.txt").splitlines():
            wnid, _, desc = line.partition("\t")
            if wnid in index:
                words[wnid] = desc.strip()

    train: List[Tuple[int, str]] = []
    val_files: Dict[str, str] = {}
    for name in names:
        if not name.startswith(base):
            continue
        parts = PurePosixPath(name[len(base):]).parts
        if parts[-1].startswith(".") or not parts[-1].lower().endswith((".jpeg", ".jpg", ".png")):
            continue
        if len(parts) == 4 and parts[0] == "train" and parts[2] == "images" and "train" in wanted:
            if parts[1] not in index:
                raise DeepslothError(f"unknown class folder train/{parts[1]} in {archive.path} "
                                     f"(not listed in wnids.txt)")
            train.append((index[parts[1]], name))
        elif len(parts) == 3 and parts[0] == "val" and parts[1] == "images" and "test" in wanted:
            val_files[parts[2]] = name

    test: List[Tuple[int, str]] = []
    val_problems: List[str] = []
    ann_name = base + "val/val_annotations.txt"
    if val_files:
        if ann_name not in names:
            raise DeepslothError(f"{archive.path}: val/images present but "
                                 f"val/val_annotations.txt is missing")
        labelled = set()
        absent: List[str] = []
        for lineno, line in enumerate(_text(archive, ann_name).splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise DeepslothError(f"{archive.path}: val_annotations.txt line {lineno} has "
                                     f"no known wnid: {line[:80]!r}")
            if fields[0] in labelled:
                raise DeepslothError(f"{archive.path}: val_annotations.txt lists {fields[0]} twice")
            labelled.add(fields[0])
            if fields[0] not in val_files:
                absent.append(fields[0])
                continue
            test.append((index[fields[1]], val_files[fields[0]]))
        unlabelled = sorted(set(val_files) - labelled, key=natural_key)
        if unlabelled:
            val_problems.append(f"{len(unlabelled)} val images have no annotation (e.g. {unlabelled[0]})")
        if absent:
            val_problems.append(f"val_annotations.txt lists {len(absent)} images missing from val/images "
                            f"(e.g. {absent[0]})")
    layout = {"train": f"{base}train/<wnid>/images/*.JPEG", "test": f"{base}val/images/*.JPEG"}
    if not train and not test:
        if tuple(wanted) == SPLITS:
            raise DeepslothError(f"no images found in {archive.path}: expected "
                                 f"{layout['train']} and {layout['test']}")
        raise DeepslothError(f"no {wanted[0]} images found in {archive.path}: expected {layout[wanted[0]]}")
    splits = {s: v for s, v in (("train", train), ("test", test)) if v}
    general = []
    if len(wnids) != NUM_CLASSES:
        general.append(f"wnids.txt lists {len(wnids)} classes, Tiny ImageNet has {NUM_CLASSES}")
    per_class = {s: class_problems({s: [y for y, _ in v]}, wnids) for s, v in splits.items()}
    problems = {s: (val_problems if s == "test" else []) + general + per_class[s] for s in splits}
    problems[""] = val_problems + general + [q for s in splits for q in per_class[s]]   # all, in report order
    return wnids, words, splits, problems


def import_tinyimagenet(path: os.PathLike | str, root: Optional[os.PathLike | str] = None, *,
                        allow_incomplete: bool = False, splits: Optional[Sequence[str]] = None) -> Path:
    """Import Tiny ImageNet (zip, tar or extracted folder) into the cache; returns its folder.

    The import replaces the splits the archive brings and keeps the other cached split (it must
    have been imported with the same wnids.txt); `splits` (e.g. ["test"]) imports only those.
    An incomplete import (see the module docstring) is refused unless `allow_incomplete`."""
    wanted = wanted_splits(splits)
    path = Path(path).expanduser()
    t0 = time.perf_counter()
    with open_archive(path) as archive:
        wnids, words, found, problems = _scan(archive, wanted)
        settle(problems[""], "tinyimagenet", path.name, allow_incomplete)
        kept_splits("tinyimagenet", root, list(found), wnids, path.name)   # refuse before decoding
        decoded = {}
        for split, items in found.items():
            items.sort(key=lambda t: (t[0], natural_key(PurePosixPath(t[1]).name)))
            items = [items[i] for i in interleave_order([y for y, _ in items])]
            images = decode_images(archive, [n for _, n in items], SIZE,
                                   desc=f"tinyimagenet {split}")
            decoded[split] = (images, torch.tensor([y for y, _ in items], dtype=torch.int64))
    source = f"{path.name} (tiny-imagenet-200 layout; official val as test)"
    files = [file_fingerprint(path)]
    sources = {s: {"source": source, "source_files": files, "incomplete": problems[s]} for s in decoded}
    extra = {"class_descriptions": [words.get(w, "") for w in wnids],
             "import_seconds": round(time.perf_counter() - t0, 2)}
    return write_dataset("tinyimagenet", root, decoded, wnids, source, extra, sources=sources)
