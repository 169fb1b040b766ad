"""Shared fixtures: the real CIFAR-10 archives from ../shared/data, imported once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_TRAIN_ZIP = SHARED_DATA / "cifar10-jpeg-train.zip"
CIFAR_TEST_ZIP = SHARED_DATA / "cifar10-jpeg-test.zip"


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("DEEPSLOTH_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """A data root holding the real CIFAR-10 (train and test) from the shared zips."""
    for z in (CIFAR_TRAIN_ZIP, CIFAR_TEST_ZIP):
        if not z.is_file():
            pytest.skip(f"real dataset archive {z} not present (see shared/data/README.md)")
    from deepsloth.data import import_cifar10
    root = tmp_path_factory.mktemp("cifar10-cache")
    import_cifar10([CIFAR_TRAIN_ZIP, CIFAR_TEST_ZIP], root)
    return root


@pytest.fixture(scope="session")
def cifar10_test_root(tmp_path_factory) -> Path:
    """A data root holding only the real CIFAR-10 test split (10,000 images; ~10 s to import).

    Used by the evaluation tests, which need real test images but no training set."""
    if not CIFAR_TEST_ZIP.is_file():
        pytest.skip(f"real dataset archive {CIFAR_TEST_ZIP} not present (see shared/data/README.md)")
    from deepsloth.data import import_cifar10
    root = tmp_path_factory.mktemp("cifar10-test-cache")
    import_cifar10([CIFAR_TEST_ZIP], root)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Run a module single-threaded (`pytestmark = pytest.mark.usefixtures("one_thread")`).

    Small models and batch-1 inference gain nothing from intra-op threads, and on a busy
    2-core machine OpenMP's spinning makes every small op wait for a time slice. On CUDA the
    CPU thread count does not matter and is left alone."""
    import torch
    before = torch.get_num_threads()
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_ZIP = SHARED_DATA / "tiny-imagenet-200-subset.zip"


@pytest.fixture(scope="session")
def tinyimagenet_root(tmp_path_factory) -> Path:
    """A data root holding the shared Tiny ImageNet subset (20,000 train / 10,000 test, 64x64)."""
    if not TINY_ZIP.is_file():
        pytest.skip(f"real dataset archive {TINY_ZIP} not present (see shared/data/README.md)")
    from deepsloth.data import import_tinyimagenet
    root = tmp_path_factory.mktemp("tinyimagenet-cache")
    import_tinyimagenet(TINY_ZIP, root)
    return root
