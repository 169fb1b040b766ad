"""`deepsloth data import | download | info`: manage the dataset cache."""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..errors import DeepslothError
from .common import nonempty, writable_dir


def register(sub) -> None:
    p = sub.add_parser("data", help="import, download and inspect datasets",
                       description="Manage the dataset cache (--data-root, else $DEEPSLOTH_DATA, "
                                   "else ~/.cache/deepsloth).")
    p.set_defaults(func=lambda args: _help(p))
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    def root_arg(sp):
        sp.add_argument("--data-root", default=None, metavar="DIR", type=nonempty,
                        help="dataset cache folder (default: $DEEPSLOTH_DATA or ~/.cache/deepsloth)")

    imp = dsub.add_parser(
        "import", help="import a dataset from local archives or folders",
        description="cifar10: cifar-10-python.tar.gz, or image-folder zips/folders laid out "
                    "<split>/<class>/<image> (one per split, or one holding both). "
                    "tinyimagenet: tiny-imagenet-200.zip or its extracted folder (its val images are the "
                    "test split). "
                    "An import replaces only the splits it brings: an archive holding only the test split "
                    "(e.g. cifar10-jpeg-test.zip) replaces the cached test split and keeps the cached train "
                    "split, and vice versa. --split imports one split from archives holding both. A cached "
                    "split that cannot be kept (other classes, damaged) refuses the import; import both "
                    "splits together to replace the dataset. Bad input changes nothing.")
    imp.add_argument("name", metavar="DATASET", type=nonempty, help="cifar10 or tinyimagenet")
    imp.add_argument("paths", nargs="+", metavar="PATH", type=nonempty, help="archive(s) or folder(s)")
    imp.add_argument("--split", choices=("train", "test"), default=None,
                     help="import only this split from the given archives, even if they hold both; the other "
                          "split stays as cached (default: every split the archives hold)")
    imp.add_argument("--allow-incomplete", action="store_true",
                     help="import even when a class is missing from a split or the per-class counts differ "
                          "from what the layout promises (refused by default; the old cache then stays)")
    imp.add_argument("--json", action="store_true", help="print the result as JSON")
    root_arg(imp)
    imp.set_defaults(func=_import)

    dl = dsub.add_parser(
        "download", help="download the canonical archive, verify and import it",
        description="Fetches the dataset's canonical archive, checks its MD5 and imports it (both splits). "
                    "cifar10: https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, MD5 "
                    "c58f30108f718f92721af3b95e74349a. tinyimagenet: "
                    "http://cs231n.stanford.edu/tiny-imagenet-200.zip, MD5 90528d7ca1a48142e341f4ef8d21d0de. "
                    "An archive failing the check is deleted and the cache is left as it was.")
    dl.add_argument("name", metavar="DATASET", type=nonempty, help="cifar10 or tinyimagenet")
    dl.add_argument("--url", default=None, help="alternative URL (mirror) for the archive")
    dl.add_argument("--keep-archive", action="store_true",
                    help="keep the downloaded archive in <data-root>/.downloads")
    dl.add_argument("--json", action="store_true", help="print the result as JSON")
    root_arg(dl)
    dl.set_defaults(func=_download)

    info = dsub.add_parser("info", help="list imported datasets")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    root_arg(info)
    info.set_defaults(func=_info)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _summary(name: str, root, seconds: float) -> dict:
    from ..data import dataset_info
    entry = dataset_info(root).get(name, {})
    return {"dataset": name, **entry, "seconds": round(seconds, 1)}


def _print_summary(s: dict, as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps(s, indent=2))
        return
    last = s.get("last_import") or {}
    kept = [k for k in last.get("kept", []) if isinstance(k, str)]
    note = ""
    if kept:   # a partial import: say which split it replaced and which it left as it was
        sources = s.get("sources") or {}
        imported = " and ".join(f"the {k}" for k in last.get("splits", []))
        note = (f" ({verb} {imported} split; kept the cached "
                + "; ".join(f"{k} split from {sources.get(k, 'an earlier import')}" for k in kept) + ")")
    print(f"{verb} {s['dataset']}: {s.get('train', 0)} train / {s.get('test', 0)} test images, "
          f"{s.get('classes')} classes, into {s.get('path')} in {s['seconds']:.1f} s{note}")


def _cache_root(args, write: bool):
    """The data root, checked before any work: a directory (or creatable), writable when `write`."""
    from ..data import data_root
    root = data_root(args.data_root)
    if write:
        writable_dir(root, "--data-root")
    elif root.exists() and not root.is_dir():
        raise DeepslothError(f"--data-root {root} is not a directory")
    return root


def _import(args) -> int:
    from ..data import canonical_name, import_cifar10, import_tinyimagenet
    name = canonical_name(args.name)
    if name != "cifar10" and len(args.paths) != 1:
        raise DeepslothError("tinyimagenet takes one archive or folder "
                             "(tiny-imagenet-200.zip or its extracted folder)")
    _cache_root(args, write=True)
    t0 = time.perf_counter()
    splits = [args.split] if args.split else None
    if name == "cifar10":
        import_cifar10(args.paths, root=args.data_root, allow_incomplete=args.allow_incomplete, splits=splits)
    else:
        import_tinyimagenet(args.paths[0], root=args.data_root, allow_incomplete=args.allow_incomplete,
                            splits=splits)
    summary = _summary(name, args.data_root, time.perf_counter() - t0)
    _print_summary(summary, args.json, "imported")
    for problem in summary.get("last_import", {}).get("incomplete", summary.get("incomplete", [])):
        print(f"deepsloth: note: imported although incomplete: {problem}", file=sys.stderr)
    return 0


def _download(args) -> int:
    from ..data import canonical_name, download
    name = canonical_name(args.name)
    _cache_root(args, write=True)
    t0 = time.perf_counter()
    download(name, root=args.data_root, url=args.url, keep_archive=args.keep_archive)
    _print_summary(_summary(name, args.data_root, time.perf_counter() - t0), args.json,
                   "downloaded")
    return 0


def _info(args) -> int:
    from ..data import DATASETS, dataset_info
    root = _cache_root(args, write=False)
    found = dataset_info(args.data_root)
    if args.json:
        print(json.dumps({"data_root": str(root), "datasets": found}, indent=2))
        return 0
    print(f"data root: {root}")
    rows = [("dataset", "train", "test", "classes", "size", "source")]
    for name in DATASETS:
        e = found.get(name)
        if e is None:
            rows.append((name, "-", "-", "-", "-",
                         f"not imported (deepsloth data download {name} | "
                         f"deepsloth data import {name} PATH)"))
        elif "error" in e:
            rows.append((name, "?", "?", "?", "?", e["error"]))
        else:
            rows.append((name, str(e["train"]), str(e["test"]), str(e["classes"]),
                         str(e["image_size"]), e["source"]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 5)] + [r[5]]
        print("  ".join(cells))
    return 0
