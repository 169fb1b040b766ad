"""Options and helpers shared by several commands (nothing here imports torch)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import DeepslothError
from .types import (any_int, nonempty, nonneg_float, nonneg_int, positive_float, positive_int,  # noqa: F401
                    positive_number, rad_value, seed_int, thread_count)

DEFAULT_RESULTS = "deepsloth-results"
AMP_CHOICES = ("off", "bf16", "auto")   # deepsloth.precision.AMP_CHOICES, kept here so that --help does not import torch


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default: auto)")


def add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, type=nonempty,
                   help="dataset cache directory (default: $DEEPSLOTH_DATA, else ~/.cache/deepsloth)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def emit(result: Any, as_json: bool, print_report) -> int:
    """Print a command's result as JSON (`--json`) or as its text report; exit code 0."""
    if as_json:
        print_json(result)
    else:
        print_report(result)
    return 0


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=seed_int, default=0, help="random seed, 0 .. 2^63 - 1 (default: %(default)s)")


def add_rad(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rad", type=rad_value, nargs="+", default=[5.0, 15.0], metavar="R",
                   help="relative accuracy drop budgets in percent, each in (0, 100) (default: 5 15)")


def add_context(p: argparse.ArgumentParser, several_models: bool = False) -> None:
    """--model, --n, --calib-n, --policy, --rad, --eval-batch-size, --device, --data-root."""
    p.add_argument("--model", required=True, nargs="+" if several_models else None, type=nonempty,
                   help="model directories or zoo names" if several_models else "model directory or zoo name")
    p.add_argument("--n", "--first-n", dest="n", type=positive_int, default=None,
                   help="use the first N test images in the dataset's stored order (default: all); under torchrun "
                        "write --first-n (torchrun reads --n as one of its own options)")
    p.add_argument("--calib-n", type=positive_int, default=None,
                   help="calibrate thresholds on the first N clean test images (default: --n)")
    p.add_argument("--policy", default="confidence", choices=("confidence", "entropy", "patience"),
                   help="exit policy: confidence (max softmax >= q, the paper's), entropy or patience")
    add_rad(p)
    p.add_argument("--eval-batch-size", type=positive_int, default=None,
                   help="batch size of evaluation forwards (default: 500 on CPU and under torchrun; on CUDA the "
                        "largest power of two up to 4096 that fits the free GPU memory)")
    add_device(p)
    add_data_root(p)


def dist_from(args):
    """The torch.distributed setting: under torchrun, this process's rank (deepsloth.distributed)."""
    from ..distributed import Dist
    return Dist.from_env(getattr(args, "device", "auto"))


def context_from(args, model=None, device=None):
    """The experiments Context for the options of `add_context`. Without --eval-batch-size the batch
    fits the device (experiments.context), except under torchrun: the ranks split the evaluation by
    batch, so they all take the fixed default."""
    from ..distributed import launched_by_torchrun
    from ..experiments.context import EVAL_BATCH, load_context
    batch = args.eval_batch_size
    if batch is None and launched_by_torchrun():
        batch = EVAL_BATCH
    return load_context(model or args.model, n=args.n, calib_n=args.calib_n, policy=args.policy,
                        rads=args.rad, device=device or args.device, data_root=args.data_root,
                        batch_size=batch)


def amp_from(args, device=None) -> str:
    """--amp as given, else the device's default (`deepsloth.precision.default_amp`): auto (bf16 where the
    GPU computes it natively) on CUDA, off (fp32) elsewhere. For commands whose --amp defaults to None."""
    if getattr(args, "amp", None) is not None:
        return args.amp
    from ..device import resolve_device
    from ..precision import default_amp
    return default_amp(resolve_device(device or getattr(args, "device", "auto")))


def model_dataset(model: str) -> str:
    """The dataset a model (zoo name or directory) was trained on, read from its model.json only."""
    from ..models.io import read_model_meta
    from ..models.zoo import resolve_model
    meta = read_model_meta(resolve_model(model))
    if not isinstance(meta, dict) or "dataset" not in meta:
        raise DeepslothError(f"{model}: model.json does not describe a model (no dataset)")
    return str(meta["dataset"])


def writable_dir(path: Path | str, what: str = "--out") -> Path:
    """Check, before any work, that `path` is a writable directory or can be created as one.

    Nothing is created here (a command refused later leaves no empty folder behind): the
    nearest existing ancestor must be a directory in which a file can really be created (a
    probe file, removed at once; permission bits alone do not tell for root or read-only mounts)."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise DeepslothError(f"{what} {path}: {probe} is a broken symbolic link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == path else f": {probe}"
        raise DeepslothError(f"{what} {path}{where} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".deepsloth-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if probe != path:
            reason = f"cannot create files in {probe}: {reason}"
        raise DeepslothError(f"{what} {path} is not writable ({reason})") from None
    return path


MODEL_FILES = ("model.json", "model.safetensors")


def writable_file(path: Path | str, what: str = "--out") -> Path:
    """Check that a file can be written at `path` (its folder exists or can be made, is writable),
    and that it is not one of a model directory's or an attack result's own files."""
    from ..experiments.results import is_attack_record

    path = Path(path)
    if path.is_dir():
        raise DeepslothError(f"{what} {path} is a directory, expected a file name")
    if path.name in MODEL_FILES and (path.parent / MODEL_FILES[0]).is_file():
        raise DeepslothError(f"{what} {path} is a file of the model directory {path.parent}; "
                             f"write the result elsewhere")
    if is_attack_record(path) or (path.suffix == ".safetensors" and is_attack_record(path.with_suffix(".json"))):
        raise DeepslothError(f"{what} {path} is a file of the attack result {path.with_suffix('')}; "
                             f"write the result elsewhere")
    writable_dir(path.parent, what)
    return path
