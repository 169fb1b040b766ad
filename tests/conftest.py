"""Shared fixtures: the real CIFAR-10 archives beside the checkout (shared/data), imported once per test session."""
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


def synthetic_sdn(base: Path, n_train: int, n_test: int, *, model_dir: Path = None, store_cost: bool = False,
                  seed: int = 0):
    """An untrained ResNet-56 SDN saved to `model_dir` (default base/"model") and a synthetic CIFAR-10
    cache under base/"data" whose labels are that model's own final-exit predictions, so its final
    exit is 100% accurate and thresholds always qualify. Returns (data_root, model_dir, model)."""
    import torch
    from deepsloth.data import CIFAR10_CLASSES
    from deepsloth.data.cache import write_dataset
    from deepsloth.models import create_model
    from deepsloth.models.io import save_model_dir

    g = torch.Generator().manual_seed(seed)
    model = create_model("resnet56", "cifar10", sdn=True, seed=seed).eval()
    meta = {"arch": "resnet56", "dataset": "cifar10", "mode": "sdn", "num_classes": 10, "input_size": 32}
    if store_cost:   # stored in model.json: not measured again by every command
        from deepsloth.exits.cost import measure_exit_costs
        meta["cost"] = measure_exit_costs(model, (3, 32, 32)).to_dict()
    model_dir = Path(model_dir or base / "model")
    save_model_dir(model_dir, model, meta)

    def split(n):
        x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        with torch.no_grad():
            return x, model(x.float() / 255)[-1].argmax(1)

    root = base / "data"
    write_dataset("cifar10", root, {"train": split(n_train), "test": split(n_test)}, CIFAR10_CLASSES, "synthetic")
    return root, model_dir, model


def synthetic_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """A synthetic CIFAR-10 cache at `root`: seeded random uint8 images, labels 0..9 in turn
    (for training tests that need data of the right shape, not a learnable task)."""
    import torch
    from deepsloth.data import CIFAR10_CLASSES
    from deepsloth.data.cache import write_dataset

    g = torch.Generator().manual_seed(seed)

    def split(n):
        return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n) % 10

    write_dataset("cifar10", root, {"train": split(n_train), "test": split(n_test)}, CIFAR10_CLASSES, "synthetic")
    return root


def colour_images(n: int, seed: int = 0, noise: float = 0.3):
    """uint8 images [n,3,32,32] whose label (4 classes) is their dominant colour, under `noise` of uniform noise:
    learnable in a few steps, so a tiny model's exits get spread-out confidences. Returns (images, labels)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    base = torch.tensor([[.8, .2, .2], [.2, .8, .2], [.2, .2, .8], [.6, .6, .2]])[y]
    x = base[:, :, None, None] * (1 - noise) + noise * torch.rand(n, 3, 32, 32, generator=g)
    return (x.clamp(0, 1) * 255).to(torch.uint8), y


def check_runtime_agrees(model, images, quantiles, batch_size: int) -> set:
    """Run the early-exit runtime at thresholds at the given quantiles of the ICs' confidences and assert it
    stops early and agrees exactly with the batched evaluation; returns the exits that answered."""
    import torch
    from deepsloth.exits.forward import collect_exit_outputs
    from deepsloth.exits.runtime import EarlyExitRunner, compare_with_batched, supports_early_exit
    outputs = collect_exit_outputs(model, images)
    assert supports_early_exit(model)
    used = set()
    for q in torch.quantile(outputs.confidence[:-1].flatten(), torch.tensor(quantiles)).tolist():
        res = EarlyExitRunner(model, q).run(images, batch_size=batch_size, warmup=0)
        assert res.early_exit
        report = compare_with_batched(res, outputs, q)
        assert report["mismatch"] == report["near_threshold_ties"] == 0, report
        used.update(res.exit_index.tolist())
    return used
