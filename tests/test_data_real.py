"""Integration tests on the real archives in ../shared/data (skipped when absent).

Only the CIFAR-10 *test* zip (10,000 images) and the Tiny ImageNet subset are imported here,
to keep the run short; the 50,000-image train zip goes through the same code path.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepsloth.data import CIFAR10_CLASSES, dataset_info, import_cifar10, import_tinyimagenet, \
    load_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_TEST = SHARED / "cifar10-jpeg-test.zip"
TINY = SHARED / "tiny-imagenet-200-subset.zip"

pytestmark = pytest.mark.slow


def _need(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"real dataset archive {path} not present (see shared/data/README.md)")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DEEPSLOTH_NO_PROGRESS", "1")


def test_import_real_cifar10_test_zip(tmp_path):
    _need(CIFAR_TEST)
    root = tmp_path / "cache"
    import_cifar10([CIFAR_TEST], root)
    ds = load_dataset("cifar10", "test", root)
    assert len(ds) == 10_000 and tuple(ds.images.shape) == (10_000, 3, 32, 32)
    assert ds.classes == list(CIFAR10_CLASSES)
    assert torch.bincount(ds.labels, minlength=10).tolist() == [1000] * 10
    assert ds.labels[:20].tolist() == list(range(10)) * 2   # class-interleaved order
    # The first stored image is the first airplane file, decoded exactly as Pillow does.
    with zipfile.ZipFile(CIFAR_TEST) as z:
        ref = np.asarray(Image.open(io.BytesIO(z.read("cifar10-jpeg/test/airplane/0000.jpg")))
                         .convert("RGB"))
        ref_cat = np.asarray(Image.open(io.BytesIO(z.read("cifar10-jpeg/test/cat/0001.jpg")))
                             .convert("RGB"))
    assert torch.equal(ds.images[0], torch.from_numpy(ref.copy()).permute(2, 0, 1))
    assert torch.equal(ds.images[13], torch.from_numpy(ref_cat.copy()).permute(2, 0, 1))
    assert ds.images[0].float().mean() > 10
    assert "cifar10-jpeg-test.zip" in ds.source
    with pytest.raises(Exception, match="train split of cifar10 was not imported"):
        load_dataset("cifar10", "train", root)
    assert dataset_info(root)["cifar10"]["test"] == 10_000


def test_import_real_tinyimagenet_subset(tmp_path):
    _need(TINY)
    root = tmp_path / "cache"
    import_tinyimagenet(TINY, root)
    tr = load_dataset("tinyimagenet", "train", root)
    te = load_dataset("tinyimagenet", "test", root)
    assert len(tr) == 20_000 and len(te) == 10_000
    assert tr.num_classes == 200 and tr.image_size == 64 and tr.classes == te.classes
    assert torch.bincount(tr.labels, minlength=200).tolist() == [100] * 200
    assert torch.bincount(te.labels, minlength=200).tolist() == [50] * 200
    with zipfile.ZipFile(TINY) as z:
        wnids = z.read("tiny-imagenet-200/wnids.txt").decode().split()
    assert tr.classes == wnids
    assert tr.images.float().mean() > 10 and te.images.float().mean() > 10


def _synthetic_cache(root, name, size, n, n_test, classes, seed):
    """A cached `name` dataset of n synthetic train images (labels cycling over the classes) and the first
    n_test of them as its test split: (the train split, the bytes of its cache file)."""
    from deepsloth.data.cache import write_dataset
    g = torch.Generator().manual_seed(seed)
    train = (torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8), torch.arange(n) % len(classes))
    write_dataset(name, root, {"train": train, "test": (train[0][:n_test], train[1][:n_test])}, classes, "synthetic")
    return train, (root / name / "train.safetensors").read_bytes()


def test_real_test_zip_import_keeps_the_cached_train_split(tmp_path, capsys):
    """The reported bug on the real archive: `data import cifar10 cifar10-jpeg-test.zip` after a full import
    must replace the test split only. The cached train split here is synthetic (decoding the real 50,000
    train images would add a minute); it must come through byte for byte."""
    _need(CIFAR_TEST)
    from deepsloth.cli.main import main
    root = tmp_path / "cache"
    train, before = _synthetic_cache(root, "cifar10", 32, 50, 10, CIFAR10_CLASSES, seed=0)
    assert main(["data", "import", "cifar10", str(CIFAR_TEST), "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("imported cifar10: 50 train / 10000 test images, 10 classes")
    assert out.endswith("(imported the test split; kept the cached train split from synthetic)\n")
    assert (root / "cifar10" / "train.safetensors").read_bytes() == before
    tr, te = load_dataset("cifar10", "train", root), load_dataset("cifar10", "test", root)
    assert torch.equal(tr.images, train[0]) and tr.source == "synthetic"
    assert len(te) == 10_000 and te.source == "cifar10 JPEG image-folder zips: cifar10-jpeg-test.zip"
    assert dataset_info(root)["cifar10"]["sources"] == {"train": "synthetic", "test": te.source}


def test_real_tinyimagenet_one_split_import_keeps_the_other(tmp_path):
    """`--split test` on the real subset (which holds both splits) replaces only the test split."""
    _need(TINY)
    with zipfile.ZipFile(TINY) as z:
        wnids = z.read("tiny-imagenet-200/wnids.txt").decode().split()
    root = tmp_path / "cache"
    train, before = _synthetic_cache(root, "tinyimagenet", 64, 400, 200, wnids, seed=1)
    import_tinyimagenet(TINY, root, splits=["test"])
    assert (root / "tinyimagenet" / "train.safetensors").read_bytes() == before
    te = load_dataset("tinyimagenet", "test", root)
    assert len(te) == 10_000 and torch.bincount(te.labels, minlength=200).tolist() == [50] * 200
    assert dataset_info(root)["tinyimagenet"]["train"] == 400
