"""An import that lacks a class, or whose per-class counts differ from what the layout promises,
is refused before the cache is touched; `--allow-incomplete` / `allow_incomplete=True` lets it in
and records the shortfall. Small image-folder trees of real JPEGs written with Pillow."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
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


# ------------------------------------------------------------------ imports merge by split

def split_file(root: Path, split: str, name: str = "cifar10") -> Path:
    return root / name / f"{split}.safetensors"


def test_test_only_import_keeps_the_cached_train_split(tmp_path, good_cache):
    """The reported bug: a test-only archive imported after a full import dropped the train split."""
    train_before = split_file(good_cache, "train").read_bytes()
    old_source = json.loads((good_cache / "cifar10" / "meta.json").read_text())["source"]
    new = zipped(cifar_folder(tmp_path / "new", per_class={"test": 3}), tmp_path / "new-test.zip")
    import_cifar10([new], good_cache)
    assert split_file(good_cache, "train").read_bytes() == train_before
    tr, te = load_dataset("cifar10", "train", good_cache), load_dataset("cifar10", "test", good_cache)
    assert len(tr) == 20 and len(te) == 30
    meta = json.loads((good_cache / "cifar10" / "meta.json").read_text())
    assert meta["splits"] == {"train": 20, "test": 30}
    new_source = "cifar10 JPEG image-folder zips: new-test.zip"
    assert meta["sources"]["train"]["source"] == old_source == "cifar10 JPEG image-folder folders: good"
    assert meta["sources"]["test"]["source"] == new_source
    assert [f["name"] for f in meta["sources"]["train"]["source_files"]] == ["good"]
    assert [f["name"] for f in meta["sources"]["test"]["source_files"]] == ["new-test.zip"]
    assert [f["name"] for f in meta["source_files"]] == ["good", "new-test.zip"]
    assert meta["source"] == f"train: {old_source}; test: {new_source}"
    assert meta["last_import"] == {"splits": ["test"], "kept": ["train"]}
    assert tr.source == old_source and te.source == new_source
    info = dataset_info(good_cache)["cifar10"]
    assert (info["train"], info["test"]) == (20, 30)
    assert info["sources"] == {"train": old_source, "test": new_source}
    assert sorted(p.name for p in good_cache.iterdir()) == ["cifar10"]
    assert sorted(p.name for p in (good_cache / "cifar10").iterdir()) == ["meta.json", "test.safetensors",
                                                                         "train.safetensors"]


def test_train_only_import_keeps_the_cached_test_split(tmp_path, good_cache):
    test_before = split_file(good_cache, "test").read_bytes()
    import_cifar10([cifar_folder(tmp_path / "tr", per_class={"train": 4})], good_cache)
    assert split_file(good_cache, "test").read_bytes() == test_before
    meta = json.loads((good_cache / "cifar10" / "meta.json").read_text())
    assert meta["splits"] == {"train": 40, "test": 10}
    assert meta["last_import"] == {"splits": ["train"], "kept": ["test"]}
    assert meta["sources"]["train"]["source"] == "cifar10 JPEG image-folder folders: tr"
    assert len(load_dataset("cifar10", "train", good_cache)) == 40


def test_full_reimport_replaces_both_splits(tmp_path, good_cache):
    import_cifar10([cifar_folder(tmp_path / "again", per_class={"train": 3, "test": 2})], good_cache)
    meta = json.loads((good_cache / "cifar10" / "meta.json").read_text())
    assert meta["splits"] == {"train": 30, "test": 20} and meta["last_import"] == {"splits": ["train", "test"],
                                                                                   "kept": []}
    assert meta["source"] == "cifar10 JPEG image-folder folders: again"
    assert set(meta["sources"]) == {"train", "test"}
    assert all(s["source"] == meta["source"] for s in meta["sources"].values())


def test_two_archive_import_records_each_splits_own_source(tmp_path):
    """Imported together from a train zip and a test folder, each split names only the archive it came
    from (so a later one-split import keeps a split whose provenance is right)."""
    train = zipped(cifar_folder(tmp_path / "tr", per_class={"train": 1}), tmp_path / "train.zip")
    test = cifar_folder(tmp_path / "te", per_class={"test": 1})
    root = tmp_path / "cache"
    import_cifar10([train, test], root)
    meta = json.loads((root / "cifar10" / "meta.json").read_text())
    assert meta["sources"]["train"]["source"] == "cifar10 JPEG image-folder zips: train.zip"
    assert meta["sources"]["test"]["source"] == "cifar10 JPEG image-folder folders: te"
    assert [f["name"] for f in meta["sources"]["train"]["source_files"]] == ["train.zip"]
    assert meta["sources"]["test"]["source_files"] == [{"name": "te", "kind": "folder"}]
    assert meta["source"] == ("train: cifar10 JPEG image-folder zips: train.zip; "
                              "test: cifar10 JPEG image-folder folders: te")
    assert meta["last_import"] == {"splits": ["train", "test"], "kept": []} and meta["splits"] == {"train": 10,
                                                                                                 "test": 10}
    assert load_dataset("cifar10", "test", root).source == "cifar10 JPEG image-folder folders: te"


def test_split_option_imports_one_split_of_a_full_archive(tmp_path, good_cache):
    train_before = split_file(good_cache, "train").read_bytes()
    both = zipped(cifar_folder(tmp_path / "both", per_class={"train": 5, "test": 4}), tmp_path / "both.zip")
    import_cifar10([both], good_cache, splits=["test"])
    assert split_file(good_cache, "train").read_bytes() == train_before
    assert json.loads((good_cache / "cifar10" / "meta.json").read_text())["splits"] == {"train": 20, "test": 40}
    with pytest.raises(DeepslothError, match="unknown split 'val'"):
        import_cifar10([both], good_cache, splits=["val"])


def test_split_option_refuses_an_archive_without_that_split(tmp_path, good_cache):
    before = snapshot(good_cache)
    test_only = zipped(cifar_folder(tmp_path / "t", per_class={"test": 1}), tmp_path / "test-only.zip")
    with pytest.raises(DeepslothError) as exc:
        import_cifar10([test_only], good_cache, splits=["train"])
    assert str(exc.value) == (f"no CIFAR-10 train images found in {test_only}: expected <split>/<class>/<image> "
                              f"with split 'train' (or the canonical cifar-10-python batches)")
    assert snapshot(good_cache) == before


def test_cli_one_split_import_keeps_the_other_and_says_so(tmp_path, good_cache, capsys):
    train_before = split_file(good_cache, "train").read_bytes()
    both = zipped(cifar_folder(tmp_path / "both", per_class={"train": 5, "test": 4}), tmp_path / "both.zip")
    root = str(good_cache)
    assert main(["data", "import", "cifar10", str(both), "--split", "test", "--data-root", root]) == 0
    out, err = capsys.readouterr()
    assert out == (f"imported cifar10: 20 train / 40 test images, 10 classes, into {good_cache / 'cifar10'} in "
                   f"{out.rsplit(' in ', 1)[1].split(' s')[0]} s (imported the test split; kept the cached train "
                   f"split from cifar10 JPEG image-folder folders: good)\n")
    assert err == "" and split_file(good_cache, "train").read_bytes() == train_before
    test_only = zipped(cifar_folder(tmp_path / "t", per_class={"test": 1}), tmp_path / "test-only.zip")
    before = snapshot(good_cache)
    assert main(["data", "import", "cifar10", str(test_only), "--split", "train", "--data-root", root]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CIFAR-10 train images found in" in err and snapshot(good_cache) == before
    with pytest.raises(SystemExit) as e:
        main(["data", "import", "cifar10", str(both), "--split", "val", "--data-root", root])
    assert e.value.code == 2 and "invalid choice: 'val'" in capsys.readouterr().err


def test_import_help_documents_one_split_imports(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "import", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--split {train,test}" in text
    assert ("An import replaces only the splits it brings: an archive holding only the test split (e.g. "
            "cifar10-jpeg-test.zip) replaces the cached test split and keeps the cached train split, and vice "
            "versa.") in text
    assert "import only this split from the given archives, even if they hold both; the other split stays as " \
           "cached" in text


@pytest.mark.parametrize("damage", ["deep", "garbage", "list", "other classes"])
def test_a_cache_that_cannot_be_kept_refuses_the_partial_import(tmp_path, good_cache, damage):
    """Nothing is lost: a split that cannot be kept (unreadable meta.json, other classes) refuses the import
    of the other split, with a one-line error saying how to replace the dataset instead."""
    meta_path = good_cache / "cifar10" / "meta.json"
    if damage == "deep":
        meta_path.write_text("[" * 100_000)
    elif damage == "garbage":
        meta_path.write_text("{not json")
    elif damage == "list":
        meta_path.write_text("[1, 2]")
    else:
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps(dict(meta, classes=list(reversed(meta["classes"])))))
    before = snapshot(good_cache)
    src = cifar_folder(tmp_path / "t", per_class={"test": 1})
    with pytest.raises(DeepslothError) as exc:
        import_cifar10([src], good_cache)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("cannot keep the cached cifar10 train split: ")
    assert msg.endswith(f"; import both splits together to replace the dataset, or remove {good_cache / 'cifar10'}")
    assert ("class list differs from this import's" in msg) == (damage == "other classes")
    assert snapshot(good_cache) == before
    import_cifar10([cifar_folder(tmp_path / "full")], good_cache)           # a full import replaces it
    assert json.loads(meta_path.read_text())["splits"] == {"train": 20, "test": 10}


def test_a_damaged_kept_split_file_refuses_the_partial_import(tmp_path, good_cache):
    split_file(good_cache, "train").write_bytes(b"not safetensors")
    before = snapshot(good_cache)
    with pytest.raises(DeepslothError, match=r"^cannot keep the cached cifar10 train split: .*train\.safetensors"):
        import_cifar10([cifar_folder(tmp_path / "t", per_class={"test": 1})], good_cache)
    assert snapshot(good_cache) == before


def test_a_cache_written_before_per_split_sources_is_kept(tmp_path, good_cache):
    """meta.json files written by earlier versions (one source for the whole dataset) merge too."""
    meta_path = good_cache / "cifar10" / "meta.json"
    meta = json.loads(meta_path.read_text())
    legacy = {k: v for k, v in meta.items() if k not in ("sources", "last_import")}
    meta_path.write_text(json.dumps(legacy))
    import_cifar10([cifar_folder(tmp_path / "t", per_class={"test": 2})], good_cache)
    meta = json.loads(meta_path.read_text())
    assert meta["sources"]["train"]["source"] == legacy["source"]
    assert meta["sources"]["train"]["source_files"] == legacy["source_files"]
    assert meta["splits"] == {"train": 20, "test": 20}


def test_tinyimagenet_test_only_import_keeps_the_cached_train_split(tmp_path, tiny_good):
    root = tmp_path / "cache"
    shutil.copytree(tiny_good, root)
    train_before = split_file(root, "train", "tinyimagenet").read_bytes()
    import_tinyimagenet(tiny_zip(tmp_path / "val-only.zip", train=0), root)
    assert split_file(root, "train", "tinyimagenet").read_bytes() == train_before
    meta = json.loads((root / "tinyimagenet" / "meta.json").read_text())
    assert meta["splits"] == {"train": 200, "test": 200}
    assert meta["last_import"] == {"splits": ["test"], "kept": ["train"]}
    assert meta["sources"]["test"]["source"] == "val-only.zip (tiny-imagenet-200 layout; official val as test)"
    assert meta["sources"]["train"]["source"] == "good.zip (tiny-imagenet-200 layout; official val as test)"


def test_tinyimagenet_split_option_skips_the_other_split(tmp_path, tiny_good):
    """--split train reads no validation data: a missing val_annotations.txt does not matter."""
    root = tmp_path / "cache"
    shutil.copytree(tiny_good, root)
    test_before = split_file(root, "test", "tinyimagenet").read_bytes()
    z = tiny_zip(tmp_path / "t.zip", train=2)
    no_ann = tmp_path / "no-annotations.zip"
    with zipfile.ZipFile(z) as src, zipfile.ZipFile(no_ann, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("val_annotations.txt"):
                dst.writestr(info, src.read(info))
    with pytest.raises(DeepslothError, match="val_annotations.txt is missing"):
        import_tinyimagenet(no_ann, root)
    import_tinyimagenet(no_ann, root, splits=["train"])
    assert split_file(root, "test", "tinyimagenet").read_bytes() == test_before
    assert json.loads((root / "tinyimagenet" / "meta.json").read_text())["splits"] == {"train": 400, "test": 200}


def test_tinyimagenet_partial_import_with_other_wnids_is_refused_before_decoding(tmp_path, tiny_good, monkeypatch):
    import deepsloth.data.tinyimagenet as ti
    root = tmp_path / "cache"
    shutil.copytree(tiny_good, root)
    before = snapshot(root)
    other = tmp_path / "other.zip"
    z = tiny_zip(tmp_path / "t.zip", train=0)
    with zipfile.ZipFile(z) as src, zipfile.ZipFile(other, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("wnids.txt"):
                data = b"\n".join(reversed(data.split())) + b"\n"
            dst.writestr(info, data)
    monkeypatch.setattr(ti, "decode_images", lambda *a, **k: pytest.fail("decoded before refusing"))
    with pytest.raises(DeepslothError) as exc:
        import_tinyimagenet(other, root)
    assert str(exc.value) == (f"cannot keep the cached tinyimagenet train split: its class list differs from this "
                              f"import's (other.zip); import both splits together to replace the dataset, or "
                              f"remove {root / 'tinyimagenet'}")
    assert snapshot(root) == before


# ------------------------------------------------------------------ download tinyimagenet

def test_download_tinyimagenet_from_a_file_url(tmp_path):
    from deepsloth.data import download
    z = tiny_zip(tmp_path / "tiny-imagenet-200.zip")
    md5 = hashlib.md5(z.read_bytes()).hexdigest()
    root = tmp_path / "cache"
    assert download("tinyimagenet", root, url=z.as_uri(), md5=md5) == root / "tinyimagenet"
    tr, te = load_dataset("tinyimagenet", "train", root), load_dataset("tinyimagenet", "test", root)
    assert (len(tr), len(te), tr.num_classes) == (200, 200, 200)
    assert te.source == "tiny-imagenet-200.zip (tiny-imagenet-200 layout; official val as test)"
    assert sorted(p.name for p in root.iterdir()) == ["tinyimagenet"]      # the archive was removed


def test_cli_download_tinyimagenet_checksum(tmp_path, tiny_good, monkeypatch, capsys):
    """The canonical MD5 is checked: a fake archive under the canonical name is refused, nothing kept (also
    with --keep-archive); with the registry's MD5 set to the fake's, the same command imports it."""
    import dataclasses
    from deepsloth.data import DATASETS
    z = tiny_zip(tmp_path / "tiny-imagenet-200.zip")
    md5 = hashlib.md5(z.read_bytes()).hexdigest()
    root = tmp_path / "cache"
    shutil.copytree(tiny_good, root)
    before = snapshot(root)
    for extra in ([], ["--keep-archive"]):
        argv = ["data", "download", "tinyimagenet", "--url", z.as_uri(), "--data-root", str(root)] + extra
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err == (f"deepsloth: error: checksum mismatch for tiny-imagenet-200.zip: MD5 {md5}, expected "
                       f"90528d7ca1a48142e341f4ef8d21d0de (incomplete or altered download)\n")
        assert snapshot(root) == before and sorted(p.name for p in root.iterdir()) == ["tinyimagenet"]
    monkeypatch.setitem(DATASETS, "tinyimagenet", dataclasses.replace(DATASETS["tinyimagenet"], md5=md5))
    assert main(["data", "download", "tinyimagenet", "--url", z.as_uri(), "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"downloaded tinyimagenet: 200 train / 200 test images, 200 classes, into "
                          f"{root / 'tinyimagenet'} in ")
    meta = json.loads((root / "tinyimagenet" / "meta.json").read_text())
    assert meta["last_import"] == {"splits": ["train", "test"], "kept": []}
    assert meta["source_files"][0]["sha256"] == hashlib.sha256(z.read_bytes()).hexdigest()
