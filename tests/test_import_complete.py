"""An import that lacks a class, or whose per-class counts differ from what the layout promises,
is refused before the cache is touched; `--allow-incomplete` / `allow_incomplete=True` lets it in
and records the shortfall. Small image-folder trees of real JPEGs written with Pillow."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from deepsloth.cli.main import main
from deepsloth.data import CIFAR10_CLASSES, dataset_info, import_cifar10, import_tinyimagenet, load_dataset
from deepsloth.errors import DeepslothError


def jpeg(seed: int, size: int = 32) -> bytes:
    im = Image.new("RGB", (size, size), ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def cifar_folder(path: Path, per_class=None, drop=(), extra=None) -> Path:
    """<path>/cifar10-jpeg/<split>/<class>/<i>.jpg; `per_class` {split: n}; `drop` {(split, class)}."""
    per_class = per_class or {"train": 2, "test": 1}
    for split, n in per_class.items():
        for k, c in enumerate(CIFAR10_CLASSES):
            if (split, c) in drop:
                continue
            folder = path / "cifar10-jpeg" / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"{i}.jpg").write_bytes(jpeg(100 * k + i))
    for rel, data in (extra or {}).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return path


def zipped(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder).as_posix())
    return dest


def snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def good_cache(tmp_path):
    root = tmp_path / "cache"
    import_cifar10([cifar_folder(tmp_path / "good")], root)
    return root


def test_complete_image_folders_import(tmp_path, good_cache):
    tr, te = load_dataset("cifar10", "train", good_cache), load_dataset("cifar10", "test", good_cache)
    assert len(tr) == 20 and len(te) == 10 and tr.labels.tolist()[:10] == list(range(10))
    meta = json.loads((good_cache / "cifar10" / "meta.json").read_text())
    assert "incomplete" not in meta and "incomplete" not in dataset_info(good_cache)["cifar10"]


@pytest.mark.parametrize("case, make, message", [
    ("missing class", dict(drop={("train", "truck"), ("test", "truck")}),
     "the train split has no images of class truck (and 1 more shortfall)"),
    ("missing in one split", dict(drop={("test", "cat")}), "the test split has no images of class cat;"),
    ("several missing", dict(drop={("train", c) for c in CIFAR10_CLASSES[:6]}),
     "no images of classes airplane, automobile, bird, cat, ... (6 in all)"),
    ("unequal counts", dict(extra={"cifar10-jpeg/train/dog/9.jpg": jpeg(999)}),
     "the train split has unequal class counts (airplane: 2, dog: 3;"),
])
@pytest.mark.parametrize("as_zip", [False, True])
def test_incomplete_import_is_refused_and_the_old_cache_stays(tmp_path, good_cache, case, make, message, as_zip):
    before = snapshot(good_cache)
    src = cifar_folder(tmp_path / "incomplete", **make)
    if as_zip:
        src = zipped(src, tmp_path / "incomplete.zip")
    with pytest.raises(DeepslothError) as exc:
        import_cifar10([src], good_cache)
    msg = str(exc.value)
    assert "\n" not in msg and message in msg and "--allow-incomplete" in msg and "cache was not changed" in msg
    assert snapshot(good_cache) == before
    assert sorted(p.name for p in good_cache.iterdir()) == ["cifar10"]   # no temporary folders left


def test_refused_before_any_image_is_decoded(tmp_path, good_cache):
    """The completeness check runs on the file listing: an undecodable image in an incomplete
    tree is never reached (a full-size refusal costs no decoding time)."""
    src = cifar_folder(tmp_path / "x", drop={("train", "frog")}, extra={"cifar10-jpeg/train/cat/bad.jpg": b"nope"})
    with pytest.raises(DeepslothError, match="no images of class frog"):
        import_cifar10([src], good_cache)


def test_split_trees_given_separately_are_checked_per_split(tmp_path):
    train = cifar_folder(tmp_path / "tr", per_class={"train": 2})
    test = cifar_folder(tmp_path / "te", per_class={"test": 1}, drop={("test", "ship")})
    with pytest.raises(DeepslothError, match="test split has no images of class ship"):
        import_cifar10([zipped(train, tmp_path / "train.zip"), test], tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    import_cifar10([zipped(train, tmp_path / "train.zip")], tmp_path / "cache")   # one complete split is fine
    assert len(load_dataset("cifar10", "train", tmp_path / "cache")) == 20


def test_allow_incomplete_library_records_the_shortfall(tmp_path, good_cache):
    src = cifar_folder(tmp_path / "nine", drop={("train", "truck"), ("test", "truck")})
    import_cifar10([src], good_cache, allow_incomplete=True)
    te = load_dataset("cifar10", "test", good_cache)
    assert len(te) == 9 and 9 not in te.labels.tolist()
    meta = json.loads((good_cache / "cifar10" / "meta.json").read_text())
    assert meta["incomplete"] == ["the train split has no images of class truck",
                                  "the test split has no images of class truck"]
    assert dataset_info(good_cache)["cifar10"]["incomplete"] == meta["incomplete"]


def test_cli_refuses_then_allows(tmp_path, good_cache, capsys):
    src = cifar_folder(tmp_path / "nine", drop={("test", "truck")})
    before = snapshot(good_cache)
    argv = ["data", "import", "cifar10", str(src), "--data-root", str(good_cache)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no images of class truck" in err and "Traceback" not in err
    assert snapshot(good_cache) == before
    assert main(argv + ["--allow-incomplete"]) == 0
    out, err = capsys.readouterr()
    assert "imported cifar10: 20 train / 9 test" in out
    assert err == "deepsloth: note: imported although incomplete: the test split has no images of class truck\n"


# ------------------------------------------------------------------ Tiny ImageNet

def tiny_zip(path: Path, n_wnids: int = 200, train: int = 1, unannotated: int = 0, drop_val=()) -> Path:
    """A tiny-imagenet-200 layout with `n_wnids` classes, `train` images per class and one val
    image per class (plus `unannotated` val images without an annotation)."""
    wnids = [f"n{i:08d}" for i in range(n_wnids)]
    ann = []
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids) + "\n")
        for k, w in enumerate(wnids):
            for i in range(train):
                z.writestr(f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG", jpeg(k + i, 64))
            if w not in drop_val:
                z.writestr(f"tiny-imagenet-200/val/images/val_{k}.JPEG", jpeg(k, 64))
                ann.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
        for j in range(unannotated):
            z.writestr(f"tiny-imagenet-200/val/images/val_extra_{j}.JPEG", jpeg(j, 64))
        z.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(ann) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_good(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    root = base / "cache"
    import_tinyimagenet(tiny_zip(base / "good.zip"), root)
    return root


def test_tinyimagenet_complete_import(tiny_good):
    tr, te = load_dataset("tinyimagenet", "train", tiny_good), load_dataset("tinyimagenet", "test", tiny_good)
    assert len(tr) == 200 and len(te) == 200 and tr.num_classes == 200


@pytest.mark.parametrize("make, message", [
    (dict(n_wnids=199), "wnids.txt lists 199 classes, Tiny ImageNet has 200"),
    (dict(unannotated=2), "2 val images have no annotation (e.g. val_extra_0.JPEG)"),
    (dict(drop_val={"n00000007"}), "the test split has no images of class n00000007"),
])
def test_tinyimagenet_incomplete_is_refused_then_allowed(tmp_path, tiny_good, make, message):
    before = snapshot(tiny_good)
    z = tiny_zip(tmp_path / "t.zip", **make)
    with pytest.raises(DeepslothError) as exc:
        import_tinyimagenet(z, tiny_good)
    assert message in str(exc.value) and "--allow-incomplete" in str(exc.value) and "\n" not in str(exc.value)
    assert snapshot(tiny_good) == before
    root = tmp_path / "allowed"
    import_tinyimagenet(z, root, allow_incomplete=True)
    meta = json.loads((root / "tinyimagenet" / "meta.json").read_text())
    assert message in meta["incomplete"][0]
    te = load_dataset("tinyimagenet", "test", root)
    assert len(te) == (199 if "drop_val" in make else len(meta["classes"]))   # unannotated images left out


def test_concurrent_import_is_refused_and_the_cache_kept(tmp_path, good_cache):
    """An import while another process writes the same dataset cache stops with a clear error."""
    import os
    import socket
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = good_cache / "cifar10.lock"
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "now"}))
        before = snapshot(good_cache)
        with pytest.raises(DeepslothError, match=f"pid {holder.pid}.*is writing the cifar10 dataset cache"):
            import_cifar10([cifar_folder(tmp_path / "other", per_class={"test": 3})], good_cache)
        assert snapshot(good_cache) == before and os.path.exists(lock)
    finally:
        holder.kill()
        holder.wait()
    import_cifar10([cifar_folder(tmp_path / "other", per_class={"test": 3})], good_cache)   # holder gone
    assert len(load_dataset("cifar10", "test", good_cache)) == 30 and not lock.exists()
