"""Datasets: import/download into a tensor cache, load as uint8 tensors, augment, batch.

Cache: `<root>/<name>/{train,test}.safetensors` (`images` uint8 [N,3,H,W], `labels` int64
[N]) plus `meta.json` (classes in label order, counts and sources per split, image size, version,
time). An import replaces the splits it brings and keeps the other cached split (`cache`).
The root is `--data-root`, else `$DEEPSLOTH_DATA`, else `$XDG_CACHE_HOME/deepsloth`
(`~/.cache/deepsloth`).

Stored order (both splits, every dataset): files are sorted by (class, file name in natural
order: 2 before 10), then interleaved by (index within class, class): item 0 of every class,
then item 1 of every class, and so on. The order is deterministic, and any prefix -- "the
first N test images" -- is as class-balanced as possible. For the canonical CIFAR-10 batches
the order inside a class is the canonical one.

    from deepsloth.data import load_dataset, TensorLoader
    ds = load_dataset("cifar10", "train")
    for x, y in TensorLoader(ds, batch_size=128, augment=True, device="cuda"): ...
"""
from .augment import augment_batch, color_jitter, crop_flip, cutout, random_crop_flip
from .cache import Dataset, dataset_info, load_dataset
from .cifar10 import import_cifar10
from .download import download, fetch, verify_checksum
from .loader import TensorLoader
from .registry import CIFAR10_CLASSES, DATASETS, DatasetInfo, canonical_name, data_root
from .tinyimagenet import import_tinyimagenet

__all__ = [
    "DATASETS", "DatasetInfo", "CIFAR10_CLASSES", "Dataset", "TensorLoader",
    "load_dataset", "dataset_info", "data_root", "canonical_name",
    "import_cifar10", "import_tinyimagenet", "download", "fetch", "verify_checksum",
    "augment_batch", "random_crop_flip", "crop_flip", "color_jitter", "cutout",
]
