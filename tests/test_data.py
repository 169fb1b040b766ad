"""Unit tests of deepsloth.data on tiny archives built inside each test (no real data)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepsloth.errors import DeepslothError
from deepsloth.data import (CIFAR10_CLASSES, DATASETS, Dataset, TensorLoader, augment_batch,
                            color_jitter, crop_flip, cutout, data_root, dataset_info, download,
                            import_cifar10, import_tinyimagenet, load_dataset, random_crop_flip,
                            verify_checksum)
from deepsloth.data.cache import interleave_order
from deepsloth.data.cifar10 import safe_unpickle
from deepsloth.cli.main import main


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DEEPSLOTH_NO_PROGRESS", "1")


# ---------------------------------------------------------------- helpers

def pixels(seed: int, size: int = 32) -> np.ndarray:
    """A deterministic, nonzero uint8 HxWx3 image."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, size=(size, size, 3), dtype=np.uint8)


def png_bytes(arr: np.ndarray, mode: str = "RGB") -> bytes:
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def cifar_tree(split_counts, classes=("airplane", "cat", "truck"), top="cifar10-png"):
    """{member name: bytes} for <top>/<split>/<class>/<i>.png and the expected pixels."""
    files, expected = {}, {}
    for split, n in split_counts.items():
        for c in classes:
            for i in range(n):
                arr = pixels(hash((split, c, i)) % 10_000)
                name = f"{top}/{split}/{c}/{i:04d}.png"
                files[name] = png_bytes(arr)
                expected[(split, c, i)] = arr
    return files, expected


def write_zip(path: Path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def write_folder(path: Path, files: dict) -> Path:
    for name, data in files.items():
        p = path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return path


def chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1)


# ---------------------------------------------------------------- root and registry

def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPSLOTH_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("DEEPSLOTH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "xdg" / "deepsloth"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_root() == Path.home() / ".cache" / "deepsloth"


def test_registry():
    assert DATASETS["cifar10"].num_classes == 10 and DATASETS["cifar10"].image_size == 32
    assert DATASETS["tinyimagenet"].num_classes == 200 and DATASETS["tinyimagenet"].image_size == 64
    assert list(CIFAR10_CLASSES) == "airplane automobile bird cat deer dog frog horse ship truck".split()


def test_interleave_order_prefix_is_balanced():
    labels = [0] * 3 + [1] * 2 + [2] * 3
    order = interleave_order(labels)
    assert [labels[i] for i in order] == [0, 1, 2, 0, 1, 2, 0, 2]
    assert order[:3] == [0, 3, 5]  # first file of each class, in name order


# ---------------------------------------------------------------- CIFAR-10 image folders

def test_import_cifar10_zip_tree(tmp_path):
    files, expected = cifar_tree({"train": 3, "test": 2})
    z = write_zip(tmp_path / "c.zip", files)
    root = tmp_path / "cache"
    folder = import_cifar10([z], root, allow_incomplete=True)   # a 3-class toy tree
    assert folder == root / "cifar10"

    tr = load_dataset("cifar10", "train", root)
    te = load_dataset("cifar10", "test", root)
    assert isinstance(tr, Dataset) and len(tr) == 9 and len(te) == 6
    assert tr.images.dtype == torch.uint8 and tuple(tr.images.shape) == (9, 3, 32, 32)
    assert tr.images.is_contiguous() and tr.labels.dtype == torch.int64
    assert tr.classes == list(CIFAR10_CLASSES) and tr.num_classes == 10 and tr.image_size == 32
    # class-interleaved order: (index within class, class); canonical label numbers.
    a, c, t = (CIFAR10_CLASSES.index(k) for k in ("airplane", "cat", "truck"))
    assert tr.labels.tolist() == [a, c, t] * 3
    assert te.labels.tolist() == [a, c, t] * 2
    for pos, (cls, i) in enumerate([(k, i) for i in range(3) for k in ("airplane", "cat", "truck")]):
        assert torch.equal(tr.images[pos], chw(expected[("train", cls, i)]))
    assert "c.zip" in tr.source
    sub = te.subset(4)
    assert len(sub) == 4 and torch.equal(sub.images, te.images[:4]) and sub.classes == te.classes
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["splits"] == {"train": 9, "test": 6} and meta["classes"] == list(CIFAR10_CLASSES)
    assert meta["image_size"] == 32 and "deepsloth_version" in meta and "imported_at" in meta
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_import_cifar10_two_archives_and_folder(tmp_path):
    files, expected = cifar_tree({"train": 2, "test": 1})
    train = {k: v for k, v in files.items() if "/train/" in k}
    test = {k: v for k, v in files.items() if "/test/" in k}
    ztrain = write_zip(tmp_path / "train.zip", train)
    ftest = write_folder(tmp_path / "testdir", test)
    import_cifar10([ztrain, ftest], tmp_path / "cache", allow_incomplete=True)
    assert len(load_dataset("cifar10", "train", tmp_path / "cache")) == 6
    te = load_dataset("cifar10", "test", tmp_path / "cache")
    assert len(te) == 3
    assert torch.equal(te.images[0], chw(expected[("test", "airplane", 0)]))


def test_import_converts_modes_to_rgb(tmp_path):
    arr = pixels(7)
    files = {
        "train/cat/gray.png": png_bytes(arr, "L"),
        "train/cat/rgba.png": png_bytes(arr, "RGBA"),
        "train/cat/pal.png": png_bytes(arr, "P"),
    }
    import_cifar10(write_zip(tmp_path / "m.zip", files), tmp_path / "cache", allow_incomplete=True)
    ds = load_dataset("cifar10", "train", tmp_path / "cache")
    assert len(ds) == 3 and ds.images.shape[1] == 3
    gray = np.asarray(Image.fromarray(arr).convert("L").convert("RGB"))
    names = sorted(files)  # gray, pal, rgba in name order
    assert torch.equal(ds.images[names.index("train/cat/gray.png")], chw(gray))
    assert torch.equal(ds.images[names.index("train/cat/rgba.png")], chw(arr))


def test_missing_split_gives_import_hint(tmp_path):
    files, _ = cifar_tree({"test": 1})
    import_cifar10(write_zip(tmp_path / "t.zip", files), tmp_path / "cache", allow_incomplete=True)
    with pytest.raises(DeepslothError, match="train split of cifar10 was not imported"):
        load_dataset("cifar10", "train", tmp_path / "cache")


def test_not_imported_message_names_command(tmp_path):
    with pytest.raises(DeepslothError) as e:
        load_dataset("cifar10", "test", tmp_path / "nothing")
    msg = str(e.value)
    assert "deepsloth data import cifar10" in msg and "deepsloth data download cifar10" in msg
    assert f"--data-root {tmp_path / 'nothing'}" in msg and "\n" not in msg
    with pytest.raises(DeepslothError, match="unknown dataset"):
        load_dataset("mnist", "train", tmp_path)
    with pytest.raises(DeepslothError, match="unknown split"):
        load_dataset("cifar10", "val", tmp_path)


def _corrupt_zip(path: Path) -> Path:
    files, _ = cifar_tree({"train": 1})
    write_zip(path, files)
    data = bytearray(path.read_bytes())
    start = data.index(b"\x89PNG")  # damage stored image bytes: CRC check fails on read
    data[start + 40:start + 60] = b"\x00" * 20
    path.write_bytes(bytes(data))
    return path


BAD_INPUTS = {
    "missing": (lambda d: d / "nope.zip", "file not found"),
    "not an archive": (lambda d: (d / "x.bin").write_bytes(os.urandom(300)) and d / "x.bin",
                       "not a zip archive, tar archive or folder"),
    "truncated zip": (lambda d: (d / "t.zip").write_bytes(b"PK\x03\x04garbage") and d / "t.zip",
                      "corrupt or truncated zip"),
    "bad crc": (lambda d: _corrupt_zip(d / "crc.zip"), "crc.zip is corrupt"),
    "unknown class": (lambda d: write_zip(d / "u.zip", {"top/train/unicorn/1.png": png_bytes(pixels(1))}),
                      "unknown class folder 'unicorn'"),
    "wrong layout": (lambda d: write_zip(d / "w.zip", {"airplane/1.png": png_bytes(pixels(1))}),
                     "no CIFAR-10 images found"),
    "undecodable": (lambda d: write_zip(d / "b.zip", {"train/cat/1.jpg": b"not a jpeg"}),
                    "cannot decode image b.zip:train/cat/1.jpg"),
    "wrong size": (lambda d: write_zip(d / "s.zip", {"test/cat/big.png": png_bytes(pixels(1, 40))}),
                   "is 40x40, expected 32x32"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_cifar10_bad_input_leaves_no_cache(tmp_path, case):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    root = tmp_path / "cache"
    with pytest.raises(DeepslothError, match=message) as e:
        import_cifar10([path], root, allow_incomplete=True)   # one-class trees: the error under test comes first
    assert "\n" not in str(e.value)
    assert not root.exists()


def test_failed_reimport_keeps_good_cache(tmp_path):
    files, _ = cifar_tree({"test": 2})
    root = tmp_path / "cache"
    import_cifar10(write_zip(tmp_path / "good.zip", files), root, allow_incomplete=True)
    before = (root / "cifar10" / "test.safetensors").read_bytes()
    bad = write_zip(tmp_path / "bad.zip", {"test/cat/1.jpg": b"garbage"})
    with pytest.raises(DeepslothError):
        import_cifar10([bad], root, allow_incomplete=True)
    assert (root / "cifar10" / "test.safetensors").read_bytes() == before
    assert len(load_dataset("cifar10", "test", root)) == 6
    assert sorted(p.name for p in root.iterdir()) == ["cifar10"]


def test_duplicate_images_rejected(tmp_path):
    files, _ = cifar_tree({"test": 1})
    z = write_zip(tmp_path / "a.zip", files)
    with pytest.raises(DeepslothError, match="appears twice"):
        import_cifar10([z, z], tmp_path / "cache")


@pytest.mark.parametrize("workers", [1, 3])
def test_decode_workers_same_result_and_errors(tmp_path, workers):
    from deepsloth.data.archive import open_archive
    from deepsloth.data.decode import decode_images
    import deepsloth.data.decode as dec
    files = {f"train/cat/{i}.png": png_bytes(pixels(i)) for i in range(40)}
    with open_archive(write_zip(tmp_path / "d.zip", files)) as a:
        names = sorted(a.names())[::-1]
        old = dec.CHUNK
        dec.CHUNK = 7  # several chunks in flight
        try:
            x = decode_images(a, names, 32, workers=workers)
        finally:
            dec.CHUNK = old
        assert torch.equal(x[0], chw(pixels(int(names[0].split("/")[-1][:-4]))))
    files["train/cat/bad.png"] = b"junk"
    with open_archive(write_zip(tmp_path / "e.zip", files)) as a:
        with pytest.raises(DeepslothError, match="bad.png"):
            decode_images(a, sorted(a.names()), 32, workers=workers)


# ---------------------------------------------------------------- canonical tarball

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct


class Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` opcodes and numpy's reconstructor under its old module
    name, as the canonical cifar-10-python batches (made by Python 2 cPickle) do."""
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_bytes

    def save_global(self, obj, name=None):
        if obj is _reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def fake_cifar_tarball(path: Path, per_batch: int = 2, batches: dict | None = None):
    """cifar-10-python.tar.gz with `per_batch` images per batch; returns {batch: (data, labels)}."""
    rng = np.random.default_rng(0)
    contents = {}
    with tarfile.open(path, "w:gz") as tar:
        def add(name, payload):
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for b in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            if batches and b in batches:
                add(b, batches[b])
                continue
            data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            labels = [int(x) for x in rng.integers(0, 10, size=per_batch)]
            contents[b] = (data, labels)
            add(b, py2_pickle({b"batch_label": b.encode(), b"labels": labels, b"data": data,
                               b"filenames": [b"x.png"] * per_batch}))
        add("batches.meta", py2_pickle({b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                                        b"num_cases_per_batch": per_batch, b"num_vis": 3072}))
    return contents


def test_canonical_tarball_import_and_checksum(tmp_path):
    tgz = tmp_path / "cifar-10-python.tar.gz"
    contents = fake_cifar_tarball(tgz)
    md5 = hashlib.md5(tgz.read_bytes()).hexdigest()
    assert verify_checksum(tgz, md5) == md5
    with pytest.raises(DeepslothError, match="checksum mismatch"):
        verify_checksum(tgz, "0" * 32)

    root = tmp_path / "cache"
    import_cifar10(tgz, root)
    tr = load_dataset("cifar10", "train", root)
    te = load_dataset("cifar10", "test", root)
    assert len(tr) == 10 and len(te) == 2 and "(canonical)" in tr.source
    data = np.concatenate([contents[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = np.concatenate([contents[f"data_batch_{i}"][1] for i in range(1, 6)])
    # Every canonical image is present with its label (order is class-interleaved).
    got = {(bytes(tr.images[k].reshape(-1).numpy()), int(tr.labels[k])) for k in range(len(tr))}
    want = {(bytes(data[k]), int(labels[k])) for k in range(len(labels))}
    assert got == want
    assert tr.labels.tolist()[: len(set(labels.tolist()))] == sorted(set(labels.tolist()))
    # Extracted folder works too.
    with tarfile.open(tgz) as tar:
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path / "x", **extra)
    import_cifar10(tmp_path / "x", tmp_path / "cache2")
    assert torch.equal(load_dataset("cifar10", "train", tmp_path / "cache2").images, tr.images)


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_restricted_unpickler_refuses_globals(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": _Evil(marker)}, protocol=2)
    with pytest.raises(DeepslothError, match="refusing to load global"):
        safe_unpickle(payload, "evil")
    assert not marker.exists()
    # Inside an archive: the import fails cleanly and nothing runs.
    tgz = tmp_path / "cifar-10-python.tar.gz"
    fake_cifar_tarball(tgz, batches={"data_batch_3": payload})
    with pytest.raises(DeepslothError, match="data_batch_3.*refusing"):
        import_cifar10(tgz, tmp_path / "cache")
    assert not marker.exists() and not (tmp_path / "cache").exists()


def test_canonical_tarball_missing_batch(tmp_path):
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        payload = py2_pickle({b"labels": [0], b"data": np.zeros((1, 3072), np.uint8)})
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DeepslothError, match="lacks data_batch_2"):
        import_cifar10(tgz, tmp_path / "cache")


# ---------------------------------------------------------------- download

def test_download_file_url_verifies_and_imports(tmp_path):
    tgz = tmp_path / "src.tar.gz"
    fake_cifar_tarball(tgz)
    md5 = hashlib.md5(tgz.read_bytes()).hexdigest()
    root = tmp_path / "cache"
    folder = download("cifar10", root, url=tgz.as_uri(), md5=md5)
    assert folder == root / "cifar10" and len(load_dataset("cifar10", "test", root)) == 2
    assert not (root / ".downloads").exists()  # archive removed after import


def test_download_bad_checksum_leaves_nothing(tmp_path):
    tgz = tmp_path / "src.tar.gz"
    fake_cifar_tarball(tgz)
    root = tmp_path / "cache"
    with pytest.raises(DeepslothError, match="checksum mismatch"):
        download("cifar10", root, url=tgz.as_uri(), md5="0" * 32)
    assert not root.exists()


def test_download_bad_checksum_keeps_no_archive_even_with_keep_archive(tmp_path):
    """--keep-archive keeps a *verified* archive; a download that fails its checksum is never kept."""
    tgz = tmp_path / "src.tar.gz"
    fake_cifar_tarball(tgz)
    root = tmp_path / "cache"
    with pytest.raises(DeepslothError, match="checksum mismatch for cifar-10-python.tar.gz"):
        download("cifar10", root, url=tgz.as_uri(), md5="0" * 32, keep_archive=True)
    assert not root.exists()
    root.mkdir()                                         # an existing root: left exactly as it was
    with pytest.raises(DeepslothError, match="checksum mismatch"):
        download("cifar10", root, url=tgz.as_uri(), md5="0" * 32, keep_archive=True)
    assert list(root.iterdir()) == []


def test_download_registry_facts():
    """The canonical archives and the MD5s every widely used loader checks them against."""
    tiny, cifar = DATASETS["tinyimagenet"], DATASETS["cifar10"]
    assert (tiny.url, tiny.md5, tiny.archive) == ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                                                  "90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200.zip")
    assert (cifar.url, cifar.md5, cifar.archive) == ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                                                     "c58f30108f718f92721af3b95e74349a", "cifar-10-python.tar.gz")


def test_download_help_states_the_registry_facts(capsys):
    """`data download --help` names each canonical URL and MD5 (written out: building the parser imports
    no torch, hence not the registry); they must agree with the registry."""
    with pytest.raises(SystemExit) as e:
        main(["data", "download", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for info in DATASETS.values():
        assert f"{info.name}: {info.url}, MD5 {info.md5}." in text
    assert "An archive failing the check is deleted and the cache is left as it was." in text


def test_download_offline_message(tmp_path):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    root = tmp_path / "cache"
    with pytest.raises(DeepslothError) as e:
        download("tinyimagenet", root, opener=offline)
    msg = str(e.value)
    assert msg.startswith("cannot reach cs231n.stanford.edu")
    assert "deepsloth data import tinyimagenet" in msg and "\n" not in msg
    assert not root.exists()


# ---------------------------------------------------------------- Tiny ImageNet

WNIDS = ["n0003", "n0001", "n0002"]  # wnids.txt order defines labels, not sorted order


def tiny_tree(train_per_class=2, gray=True, annotations=True, extra=None):
    files = {"tiny-imagenet-200/wnids.txt": "\n".join(WNIDS).encode() + b"\n",
             "tiny-imagenet-200/words.txt": b"n0001\tone\nn0002\ttwo\nn0003\tthree\nn9999\tnine\n"}
    for w in WNIDS:
        for i in range(train_per_class):
            arr = pixels(hash((w, i)) % 10_000, 64)
            mode = "L" if (gray and i == 0 and w == "n0002") else "RGB"
            files[f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG"] = png_bytes(arr, mode)
        files[f"tiny-imagenet-200/train/{w}/{w}_boxes.txt"] = b""
    ann = []
    for j, w in enumerate(["n0002", "n0003", "n0002", "n0001"]):
        files[f"tiny-imagenet-200/val/images/val_{j}.JPEG"] = png_bytes(pixels(100 + j, 64))
        ann.append(f"val_{j}.JPEG\t{w}\t0\t0\t63\t63")
    if annotations:
        files["tiny-imagenet-200/val/val_annotations.txt"] = ("\n".join(ann) + "\n").encode()
    files["tiny-imagenet-200/test/images/test_0.JPEG"] = png_bytes(pixels(999, 64))
    files.update(extra or {})
    return files


def test_import_tinyimagenet(tmp_path):
    z = write_zip(tmp_path / "tiny-imagenet-200.zip", tiny_tree(train_per_class=3))
    root = tmp_path / "cache"
    import_tinyimagenet(z, root, allow_incomplete=True)   # 3 wnids, uneven val classes
    tr = load_dataset("tinyimagenet", "train", root)
    te = load_dataset("tinyimagenet", "test", root)
    assert tr.classes == WNIDS and tr.num_classes == 3 and tr.image_size == 64
    assert len(tr) == 9 and tr.labels.tolist() == [0, 1, 2] * 3
    assert len(te) == 4 and sorted(te.labels.tolist()) == [0, 1, 2, 2]
    assert te.labels.tolist() == [0, 1, 2, 2]  # (index within class, class)
    # val_1 is the only n0003 (label 0) image
    assert torch.equal(te.images[0], chw(pixels(101, 64)))
    gray = tr.images[tr.labels.tolist().index(2)]  # n0002_0 was stored grayscale
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    meta = json.loads((root / "tinyimagenet" / "meta.json").read_text())
    assert meta["class_descriptions"] == ["three", "one", "two"]
    info = dataset_info(root)["tinyimagenet"]
    assert info["train"] == 9 and info["test"] == 4 and info["classes"] == 3


@pytest.mark.parametrize("files, message", [
    (tiny_tree(annotations=False), "val_annotations.txt is missing"),
    (tiny_tree(extra={"tiny-imagenet-200/train/n7777/images/n7777_0.JPEG": b"x"}),
     "unknown class folder train/n7777"),
    ({"foo/bar.JPEG": b"x"}, "no wnids.txt"),
    (tiny_tree(extra={"tiny-imagenet-200/val/images/val_9.JPEG": png_bytes(pixels(1, 64))}),
     "no annotation"),
    (tiny_tree(extra={"tiny-imagenet-200/train/n0001/images/n0001_9.JPEG": png_bytes(pixels(1))}),
     "is 32x32, expected 64x64"),
])
def test_tinyimagenet_bad_input(tmp_path, files, message):
    z = write_zip(tmp_path / "t.zip", files)
    with pytest.raises(DeepslothError, match=message):   # 3-wnid trees: allowed, so other errors show
        import_tinyimagenet(z, tmp_path / "cache", allow_incomplete=message != "no annotation")
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- augmentation

def test_crop_flip_matches_padded_slices():
    x = torch.randint(0, 256, (4, 3, 8, 6), dtype=torch.uint8)
    pad = 2
    dy, dx = torch.tensor([0, 4, 1, 2]), torch.tensor([3, 0, 4, 2])
    flip = torch.tensor([False, True, True, False])
    out = crop_flip(x, pad, dy, dx, flip)
    xp = torch.nn.functional.pad(x, (pad,) * 4)
    for b in range(4):
        ref = xp[b, :, dy[b]:dy[b] + 8, dx[b]:dx[b] + 6]
        if flip[b]:
            ref = ref.flip(-1)
        assert torch.equal(out[b], ref)
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_flip_is_exact_mirror_and_zero_offsets_identity():
    x = torch.rand(3, 3, 5, 7)
    zeros = torch.zeros(3, dtype=torch.long)
    assert torch.equal(crop_flip(x, 0, zeros, zeros, torch.ones(3, dtype=torch.bool)), x.flip(-1))
    assert torch.equal(crop_flip(x, 4, zeros + 4, zeros + 4, torch.zeros(3, dtype=torch.bool)), x)
    # A constructed image: left half 1, right half 0 -> mirrored is right half 1.
    img = torch.zeros(1, 3, 4, 4)
    img[..., :2] = 1
    out = crop_flip(img, 0, zeros[:1], zeros[:1], torch.ones(1, dtype=torch.bool))
    assert out[..., 2:].eq(1).all() and out[..., :2].eq(0).all()


def test_random_crop_flip_is_some_shifted_crop_and_deterministic():
    x = torch.randint(1, 256, (16, 3, 6, 6), dtype=torch.uint8)
    pad = 2
    g1 = torch.Generator().manual_seed(5)
    g2 = torch.Generator().manual_seed(5)
    out = random_crop_flip(x, pad, g1)
    assert torch.equal(out, random_crop_flip(x, pad, g2))
    xp = torch.nn.functional.pad(x, (pad,) * 4)
    flips = 0
    for b in range(16):
        matches = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                   if torch.equal(out[b], (lambda c: c.flip(-1) if f else c)(
                       xp[b, :, dy:dy + 6, dx:dx + 6]))]
        assert matches, f"image {b} is not a crop of the padded input"
        flips += matches[0][2]
    assert 0 < flips < 16  # both flipped and unflipped images occur


def test_color_jitter_properties():
    x = torch.rand(8, 3, 5, 5)
    g = torch.Generator().manual_seed(1)
    y = color_jitter(x, 0.2, 0.2, 0.2, generator=g)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, color_jitter(x, 0.2, 0.2, 0.2, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(y, x)
    assert torch.equal(color_jitter(x, 0, 0, 0), x)
    gray = x[:, :1].expand(-1, 3, -1, -1).contiguous()  # saturation leaves gray images gray
    z = color_jitter(gray, 0, 0, 0.5, generator=g)
    assert torch.allclose(z, gray, atol=1e-6)
    with pytest.raises(DeepslothError):
        color_jitter(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


def test_cutout_blanks_one_clipped_square_per_image():
    x = torch.rand(64, 3, 12, 12) * 0.4           # never 0.5, so the blanked pixels are exactly the 0.5 ones
    y = cutout(x, 4, torch.Generator().manual_seed(3))
    assert torch.equal(y, cutout(x, 4, torch.Generator().manual_seed(3)))
    blank = (y == 0.5).all(dim=1)                 # [B, H, W]: all channels blanked together
    assert torch.equal((y == 0.5).any(dim=1), blank) and torch.equal(y[~blank[:, None].expand_as(y)],
                                                                     x[~blank[:, None].expand_as(x)])
    for b in range(64):   # one axis-aligned rectangle, a 4 x 4 square clipped at the border
        rows, cols = blank[b].any(1).nonzero().flatten(), blank[b].any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4
        assert rows.tolist() == list(range(rows[0], rows[0] + len(rows)))
        assert cols.tolist() == list(range(cols[0], cols[0] + len(cols)))
        assert int(blank[b].sum()) == len(rows) * len(cols)
        assert (len(rows) == 4 or rows[0] == 0 or rows[-1] == 11) and (len(cols) == 4 or cols[0] == 0 or cols[-1] == 11)
    assert int(blank.sum(dim=(1, 2)).eq(16).sum()) > 32   # most squares lie inside
    assert torch.equal(cutout(x, 0), x)
    with pytest.raises(DeepslothError):
        cutout(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 2)
    # in the training augmentation it comes last: the other draws are unchanged
    u = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    plain = augment_batch(u, "cifar10", torch.Generator().manual_seed(0))
    cut = augment_batch(u, "cifar10", torch.Generator().manual_seed(0), cutout_size=8)
    keep = (cut != 0.5)
    assert torch.equal(cut[keep], plain[keep]) and bool((~keep).any())


@pytest.mark.parametrize("name, size", [("cifar10", 32), ("tinyimagenet", 64)])
def test_augment_batch_recipe(name, size):
    x = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8)
    y = augment_batch(x, name, torch.Generator().manual_seed(0))
    assert y.dtype == torch.float32 and y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    y2 = augment_batch(x, name, torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augment_and_loader_on_cuda_match_cpu():
    x = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    cpu = augment_batch(x, "tinyimagenet", torch.Generator().manual_seed(2))
    gpu = augment_batch(x.cuda(), "tinyimagenet", torch.Generator().manual_seed(2))
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-5)
    ds = _toy(20)
    a = [y for _, y in TensorLoader(ds, batch_size=6, seed=4, augment=True)]
    b = [y for _, y in TensorLoader(ds, batch_size=6, seed=4, augment=True, device="cuda")]
    assert all(torch.equal(p, q.cpu()) for p, q in zip(a, b))


# ---------------------------------------------------------------- loader

def _toy(n=10, name="cifar10"):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return Dataset(name, "train", images, torch.arange(n) % 3, ["a", "b", "c"], "toy")


def test_loader_batches_and_order():
    ds = _toy(10)
    plain = TensorLoader(ds, batch_size=4, shuffle=False)
    batches = list(plain)
    assert len(plain) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x0, y0 = batches[0]
    assert x0.dtype == torch.float32 and torch.allclose(x0[:, 0, 0, 0] * 255, torch.arange(4.0))
    assert torch.equal(torch.cat([y for _, y in batches]), ds.labels)
    assert len(TensorLoader(ds, batch_size=4, drop_last=True)) == 2
    assert len(list(TensorLoader(ds, batch_size=4, drop_last=True))) == 2


def test_loader_shuffle_determinism():
    ds = _toy(50)
    def order(seed, epoch):
        loader = TensorLoader(ds, batch_size=8, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return torch.cat([(x[:, 0, 0, 0] * 255).round().long() for x, _ in loader])
    a = order(0, 0)
    assert sorted(a.tolist()) == list(range(50))            # a permutation
    assert torch.equal(a, order(0, 0))                      # deterministic
    assert not torch.equal(a, order(0, 1))                  # epochs differ
    assert not torch.equal(a, order(1, 0))                  # seeds differ
    loader = TensorLoader(ds, batch_size=8, seed=0)
    first, second = [torch.cat([y for _, y in loader]) for _ in range(2)]
    assert not torch.equal(first, second)                   # iterating advances the epoch


def test_loader_augment_channels_last_and_sharding():
    ds = _toy(10)
    loader = TensorLoader(ds, batch_size=5, augment=True, channels_last=True, seed=3)
    x, y = next(iter(loader))
    assert x.dtype == torch.float32 and x.shape == (5, 3, 4, 4)
    assert x.is_contiguous(memory_format=torch.channels_last)
    seen = []
    for rank in range(3):
        shard = TensorLoader(ds, batch_size=2, seed=1, rank=rank, world_size=3)
        assert len(shard) == 2
        seen += [int(v) for x, _ in shard for v in (x[:, 0, 1, 1] * 255).round().long()]
    assert len(seen) == 9 and len(set(seen)) == 9          # disjoint, equal shares


# ---------------------------------------------------------------- CLI

def test_cli_import_and_info(tmp_path, capsys):
    files, _ = cifar_tree({"train": 2, "test": 1})
    z = write_zip(tmp_path / "c.zip", files)
    root = str(tmp_path / "cache")
    assert main(["data", "info", "--json", "--data-root", root]) == 0
    assert json.loads(capsys.readouterr().out)["datasets"] == {}
    assert main(["data", "import", "cifar10", str(z), "--data-root", root, "--allow-incomplete"]) == 0
    assert "imported cifar10: 6 train / 3 test" in capsys.readouterr().out
    assert main(["data", "info", "--json", "--data-root", root]) == 0
    info = json.loads(capsys.readouterr().out)["datasets"]
    assert info["cifar10"]["train"] == 6 and info["cifar10"]["test"] == 3
    assert info["cifar10"]["classes"] == 10
    assert main(["data", "info", "--data-root", root]) == 0
    out = capsys.readouterr().out
    assert "cifar10" in out and "not imported" in out


def test_cli_bad_path_one_line_error(tmp_path, capsys):
    rc = main(["data", "import", "cifar10", str(tmp_path / "missing.zip"),
               "--data-root", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "file not found" in err
    assert "Traceback" not in err and not (tmp_path / "cache").exists()
    assert main(["data", "import", "tinyimagenet", "a", "b", "--data-root", str(tmp_path)]) == 2
    assert "takes one archive" in capsys.readouterr().err
    assert main(["data", "import", "mnist", "x", "--data-root", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_cli_download_offline(tmp_path, capsys, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    rc = main(["data", "download", "cifar10", "--data-root", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "cannot reach www.cs.toronto.edu" in err and "deepsloth data import cifar10" in err


# ---------------------------------------------------------------- hostile archives

def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with only a few bytes of image data: opening
    it costs nothing, decoding it would allocate width * height * 3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 32x32 JPEG whose frame header (SOF0) is patched to claim width x height."""
    buf = io.BytesIO()
    Image.fromarray(pixels(3)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def tree_snapshot(root: Path) -> dict:
    """Every file under `root` with its bytes (and every folder), to prove nothing changed."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def full_cache(tmp_path):
    """A CIFAR-10 cache holding both splits (6 train / 3 test images)."""
    files, _ = cifar_tree({"train": 2, "test": 1})
    root = tmp_path / "cache"
    import_cifar10(write_zip(tmp_path / "good.zip", files), root, allow_incomplete=True)
    return root


def test_zip_with_a_duplicated_member_is_refused(tmp_path, full_cache):
    files, _ = cifar_tree({"test": 1})
    z = tmp_path / "dup.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # zipfile warns "Duplicate name" and writes it anyway
        with zipfile.ZipFile(z, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
            zf.writestr("cifar10-png/test/cat/0000.png", png_bytes(pixels(77)))
    before = tree_snapshot(full_cache)
    for root in (full_cache, tmp_path / "fresh"):
        with pytest.raises(DeepslothError) as e:
            import_cifar10([z], root, allow_incomplete=True)
        msg = str(e.value)
        assert msg == (f"{z} holds the member cifar10-png/test/cat/0000.png twice (a duplicated name in a zip "
                       f"archive is ambiguous: refusing the archive)")
    assert tree_snapshot(full_cache) == before and not (tmp_path / "fresh").exists()


def test_tar_with_a_duplicated_member_is_refused(tmp_path):
    tgz = tmp_path / "dup.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, data in [("./train/cat/1.png", png_bytes(pixels(1))), ("train/cat/1.png", png_bytes(pixels(2)))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DeepslothError, match=r"holds the member train/cat/1\.png twice") as e:
        import_cifar10([tgz], tmp_path / "cache", allow_incomplete=True)
    assert "\n" not in str(e.value) and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("kind", ["png", "jpeg"])
@pytest.mark.parametrize("dataset", ["cifar10", "tinyimagenet"])
def test_decompression_bomb_member_is_refused(tmp_path, full_cache, kind, dataset):
    bomb = png_claiming(30_000, 30_000) if kind == "png" else jpeg_claiming(30_000, 30_000)
    if dataset == "cifar10":
        member = "cifar10-png/test/cat/0000.png"
        files, _ = cifar_tree({"test": 1})
        files[member] = bomb
        importer = import_cifar10
    else:
        member = "tiny-imagenet-200/val/images/val_2.JPEG"
        files = tiny_tree()
        files[member] = bomb
        importer = import_tinyimagenet
    z = write_zip(tmp_path / "bomb.zip", files)
    before = tree_snapshot(full_cache)
    with pytest.raises(DeepslothError) as e:
        importer(z, full_cache, allow_incomplete=True)
    msg = str(e.value)
    assert msg.startswith(f"refusing image bomb.zip:{member}: a decompression bomb (Image size (900000000 pixels) "
                          f"exceeds limit of 178956970 pixels"), msg
    assert "\n" not in msg and tree_snapshot(full_cache) == before


def test_oversized_image_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    """Below Pillow's bomb limit (12,000 x 12,000 = 144 M pixels only warns), the size is checked on the
    header: the 432 MB of pixels are never allocated."""
    import PIL.ImageFile
    loads = []
    real_load = PIL.ImageFile.ImageFile.load
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: loads.append(self.size) or real_load(self))
    z = write_zip(tmp_path / "big.zip", {"train/cat/0.png": png_claiming(12_000, 12_000),
                                         "train/cat/1.jpg": jpeg_claiming(12_000, 12_000)})
    with pytest.raises(DeepslothError) as e:
        import_cifar10([z], tmp_path / "cache", allow_incomplete=True)
    assert str(e.value) == "image big.zip:train/cat/0.png is 12000x12000, expected 32x32"
    assert loads == [] and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("exc", [struct.error("unpack requires a buffer of 4 bytes"),
                                 IndexError("list index out of range"), RuntimeError("decoder error -9"),
                                 MemoryError()])
def test_any_decoder_failure_is_a_one_line_error(tmp_path, full_cache, monkeypatch, exc):
    import PIL.ImageFile

    def broken(self):
        raise exc
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", broken)
    files, _ = cifar_tree({"test": 1})
    before = tree_snapshot(full_cache)
    with pytest.raises(DeepslothError) as e:
        import_cifar10([write_zip(tmp_path / "b.zip", files)], full_cache, allow_incomplete=True)
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    assert str(e.value) == f"cannot decode image b.zip:cifar10-png/test/airplane/0000.png ({what})"
    assert tree_snapshot(full_cache) == before


def test_image_member_in_an_unlisted_format_is_refused(tmp_path):
    """Only the formats of the accepted file names are decoded (JPEG, PNG, BMP, GIF, PPM/PGM, TIFF, WebP): a
    `.png` member holding, say, a Targa image is not handed to another of Pillow's decoders."""
    buf = io.BytesIO()
    Image.fromarray(pixels(5)).save(buf, format="TGA")
    z = write_zip(tmp_path / "tga.zip", {"train/cat/0.png": buf.getvalue()})
    with pytest.raises(DeepslothError, match=r"^cannot decode image tga\.zip:train/cat/0\.png "
                                             r"\(not a JPEG, PNG, BMP, GIF, PPM/PGM, TIFF or WebP image\)$"):
        import_cifar10([z], tmp_path / "cache", allow_incomplete=True)
    assert not (tmp_path / "cache").exists()


def test_member_declaring_a_huge_size_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A zip member that inflates far beyond any image (a zip bomb) is refused from its declared size."""
    import deepsloth.data.archive as arch
    z = tmp_path / "zbomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/cat/0.png", png_bytes(pixels(1)))
        zf.writestr("train/cat/1.png", b"\x00" * (8 << 20))      # 8 MiB of zeros, about 8 KB compressed
    assert z.stat().st_size < 100_000
    reads = []
    real = arch.ZipArchive.read
    monkeypatch.setattr(arch.ZipArchive, "read", lambda self, name: reads.append(name) or real(self, name))
    with pytest.raises(DeepslothError) as e:
        import_cifar10([z], tmp_path / "cache", allow_incomplete=True)
    assert str(e.value) == ("image zbomb.zip:train/cat/1.png is 8388608 bytes unpacked, more than the 4194304 "
                            "a 32x32 image can take")
    assert reads == [] and not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- bounded JSON reading

def test_read_json_nesting_limit(tmp_path):
    from deepsloth.io import MAX_JSON_DEPTH, read_json
    assert MAX_JSON_DEPTH == 64
    ok = tmp_path / "ok.json"
    ok.write_text('{"a": ' * 63 + "[1]" + "}" * 63)                  # 63 objects and a list: 64 levels
    value = read_json(ok)
    for _ in range(63):
        value = value["a"]
    assert value == [1]
    for depth, text in [(65, "[" * 65 + "]" * 65), (100_000, "[" * 100_000),
                        (5000, '{"k": ' * 5000 + "0" + "}" * 5000)]:
        deep = tmp_path / f"deep-{depth}.json"
        deep.write_text(text)
        with pytest.raises(DeepslothError) as e:
            read_json(deep)
        assert str(e.value) == f"{deep} is nested more than 64 levels deep (the limit for a JSON file deepsloth reads)"
    # brackets inside strings (escaped quotes too) are text, not nesting
    strings = tmp_path / "strings.json"
    strings.write_text(json.dumps({"s": "[" * 5000 + '"' + "{" * 100, "t": ["]]]", "\\"]}))
    assert read_json(strings) == {"s": "[" * 5000 + '"' + "{" * 100, "t": ["]]]", "\\"]}


def test_read_json_unterminated_strings_are_invalid_not_slow(tmp_path):
    """An unterminated string full of escaped quotes is rejected in one pass (no quadratic rescanning)."""
    import time
    from deepsloth.io import read_json
    bad = tmp_path / "bad.json"
    bad.write_text('["' + '\\"[' * 300_000)
    t0 = time.perf_counter()
    with pytest.raises(DeepslothError, match=r"bad\.json is not valid JSON \(Unterminated string"):
        read_json(bad)
    assert time.perf_counter() - t0 < 5.0


def test_read_json_size_limit_and_huge_numbers(tmp_path):
    from deepsloth.io import MAX_JSON_BYTES, read_json
    assert MAX_JSON_BYTES == 16 << 20
    big = tmp_path / "big.json"
    with open(big, "wb") as f:                                      # sparse: costs no disk space
        f.truncate(MAX_JSON_BYTES + 1)
    with pytest.raises(DeepslothError) as e:
        read_json(big)
    assert str(e.value) == (f"{big} is larger than 16 MiB (16777217 bytes), the limit for a JSON file "
                            f"deepsloth reads")
    digits = tmp_path / "digits.json"
    digits.write_text('{"a": ' + "9" * 5000 + "}")
    with pytest.raises(DeepslothError, match=r"digits\.json is not valid JSON \(Exceeds the limit \(4300 digits\)"):
        read_json(digits)


def test_parse_json_is_bounded_like_read_json():
    """The same bounds for JSON text from elsewhere (e.g. a safetensors header's metadata)."""
    from deepsloth.io import parse_json
    assert parse_json('{"a": [1, {"b": "[[["}]}', "x") == {"a": [1, {"b": "[[["}]}
    with pytest.raises(DeepslothError) as e:
        parse_json("[" * 100_000 + "]" * 100_000, "universal.safetensors metadata 'info'")
    assert str(e.value) == ("universal.safetensors metadata 'info' is nested more than 64 levels deep (the limit "
                            "for a JSON file deepsloth reads)")
    with pytest.raises(DeepslothError, match=r"^m is not valid JSON \(Expecting value at line 1\)$"):
        parse_json("", "m")


def test_read_json_reads_the_shipped_json_files_as_before():
    """Every JSON file in the repository (zoo model.json, saved results and reports) reads exactly as
    `json.loads` reads it, and the callers still get their dicts."""
    from deepsloth.io import read_json
    from deepsloth.models.io import read_model_meta
    repo = Path(__file__).resolve().parents[1]
    files = sorted(p for d in ("src", "docs") for p in (repo / d).rglob("*.json"))
    assert len(files) >= 100
    for f in files:
        assert read_json(f) == json.loads(f.read_text()), f
    zoo = sorted((repo / "src" / "deepsloth" / "zoo").glob("*/model.json"))
    assert len(zoo) >= 3
    for f in zoo:
        meta = read_model_meta(f.parent)
        assert isinstance(meta, dict) and meta["arch"] in ("resnet56", "vgg16bn", "mobilenet", "msdnet", "vit")
