"""Which datasets exist, where they are cached, and how they are named on the command line."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from ..errors import DeepslothError

CIFAR10_CLASSES: Tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset (docs/method.md §1) and where its canonical archive lives."""
    name: str
    num_classes: int
    image_size: int
    train_size: int          # size of the full canonical training set
    test_size: int
    url: str                 # canonical archive
    md5: str                 # published MD5 of that archive
    archive: str             # its file name
    crop_pad: int            # zero padding of the training random crop
    jitter: float            # colour-jitter strength (0 = none) in the training recipe
    description: str = ""


DATASETS = {
    "cifar10": DatasetInfo(
        name="cifar10", num_classes=10, image_size=32, train_size=50_000, test_size=10_000,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a", archive="cifar-10-python.tar.gz",
        crop_pad=4, jitter=0.0, description="CIFAR-10, 32x32 RGB, 10 classes"),
    # The Stanford CS231n page publishes no checksum. This MD5 is the one every widely used
    # loader checks the archive against (248,100,043 bytes); a mismatch is reported, not ignored.
    "tinyimagenet": DatasetInfo(
        name="tinyimagenet", num_classes=200, image_size=64, train_size=100_000, test_size=10_000,
        url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        md5="90528d7ca1a48142e341f4ef8d21d0de", archive="tiny-imagenet-200.zip",
        crop_pad=8, jitter=0.2,
        description="Tiny ImageNet, 64x64 RGB, 200 classes (official val split used as test)"),
}

SPLITS = ("train", "test")

_ALIASES = {"cifar10": "cifar10", "tinyimagenet": "tinyimagenet", "tinyimagenet200": "tinyimagenet"}


def canonical_name(name: str) -> str:
    """'CIFAR-10', 'cifar_10', 'tiny-imagenet-200' ... -> the registry key, else a clear error."""
    key = "".join(ch for ch in str(name).lower() if ch.isalnum())
    if key not in _ALIASES:
        raise DeepslothError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return _ALIASES[key]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DeepslothError(f"unknown split {split!r} (use 'train' or 'test')")
    return split


def wanted_splits(splits: Optional[Sequence[str]]) -> Tuple[str, ...]:
    """The splits an import may write, in stored order: all of them by default."""
    if splits is None:
        return SPLITS
    if isinstance(splits, str):
        splits = [splits]
    for s in splits:
        check_split(s)
    if not splits:
        raise DeepslothError("no split to import (choose train and/or test)")
    return tuple(s for s in SPLITS if s in splits)


def default_data_root() -> Path:
    """$DEEPSLOTH_DATA, else $XDG_CACHE_HOME/deepsloth, else ~/.cache/deepsloth."""
    env = os.environ.get("DEEPSLOTH_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "deepsloth"


def data_root(arg: Optional[os.PathLike | str] = None) -> Path:
    """The data cache root: `arg` if given, else `default_data_root()`."""
    if arg is not None and str(arg) != "":
        return Path(arg).expanduser()
    return default_data_root()


def root_option(root: Optional[os.PathLike | str]) -> str:
    """' --data-root ROOT' when `root` is not the default, for commands quoted in messages."""
    if root is None:
        return ""
    if Path(root).expanduser().resolve() == default_data_root().resolve():
        return ""
    return f" --data-root {root}"
