"""The evaluation context every study shares: model, inputs, exit policy and thresholds.

    ctx = load_context("resnet56_sdn_cifar10", n=1000)     # zoo name or model directory
    ctx.clean_outputs                # all-exit outputs of the clean inputs (computed once)
    ctx.thresholds                   # {"5": {...}, "15": {...}} calibrated on clean inputs
    ctx.train_pool()                 # training images universal attacks are crafted on

Inputs are the first `n` images of the dataset's test split in stored order (`data="test"`),
or of the CIFAR-10 subset bundled with the package (`data="bundled"`). Thresholds come from
the content-keyed calibration cache (`exits.calibrate`: never written into the package).

What fits the device: the evaluation batch (`batch_size=None`) is 500 on a CPU and, on CUDA, the
largest power of two up to 4096 whose inference forward fits the free GPU memory
(`device.auto_batch`); a convolutional model runs channels-last on a CPU and on CUDA
(`device.prefers_channels_last`). The evaluation batch changes no number beyond float rounding
(each input's exit outputs do not depend on its batch).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..data import Dataset, load_dataset
from ..data.bundled import load_bundled
from ..data.selection import subset_dataset
from ..device import auto_batch, peak_bytes_per_item, prefers_channels_last, resolve_device
from ..errors import DeepslothError
from ..exits.calibrate import DEFAULT_RADS, calibration_for, data_sha256, weights_sha256
from ..exits.cost import ExitCosts
from ..exits.evaluate import exit_costs_for
from ..exits.forward import ExitOutputs, collect_exit_outputs
from ..exits.policies import ExitPolicy, make_policy
from ..metrics.latency import LatencyModel, split_tensor_bytes
from ..models.fold import fold_batchnorm
from ..models.registry import create_model
from ..models.zoo import ZOO_DIR
from ..validate import check_count, check_rad

DATA_CHOICES = ("test", "bundled")
EVAL_BATCH = 500   # the evaluation batch on a CPU (and wherever no GPU memory decides it)


@dataclass
class Context:
    model: nn.Module
    meta: Dict[str, Any]
    path: Path
    name: str                       # zoo name, or the model directory's name
    device: torch.device
    test: Dataset                   # the selected clean inputs (uint8) and labels
    data_kind: str                  # "test" or "bundled"
    label: Optional[int]            # when set: only test images of this class
    policy: ExitPolicy
    rads: Tuple[float, ...]
    costs: ExitCosts
    calib_n: int
    batch_size: int = EVAL_BATCH    # of the evaluation forwards
    data_root: Optional[str] = None
    channels_last: bool = False     # the model's memory format
    defence: Optional[str] = None   # the defence this deployment runs (experiments.deployment); None: bare
    _cache: Dict[str, Any] = field(default_factory=dict, repr=False)

    # -- identity ----------------------------------------------------------------------------
    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def n(self) -> int:
        return len(self.test)

    @property
    def num_exits(self) -> int:
        return len(self.costs.ops)

    @property
    def weights_sha256(self) -> str:
        if "wsha" not in self._cache:
            self._cache["wsha"] = weights_sha256(self.path)
        return self._cache["wsha"]

    def model_record(self) -> Dict[str, Any]:
        m = self.meta
        return {"name": self.name, "path": str(self.path), "arch": m.get("arch"), "dataset": self.dataset,
                "mode": m.get("mode"), "exits": self.num_exits, "num_classes": m.get("num_classes"),
                "input_size": m.get("input_size"), "weights_sha256": self.weights_sha256,
                "final_accuracy": (m.get("accuracy") or {}).get("final"), "train_seconds": m.get("train_seconds"),
                "data_selection": m.get("data_selection"), "adversarial": m.get("adversarial"),
                "parent_adversarial": (m.get("parent") or {}).get("adversarial"),
                "parent_train_seconds": (m.get("parent") or {}).get("train_seconds")}

    def data_record(self) -> Dict[str, Any]:
        """The clean-input selection: what, how many, and a fingerprint of the bytes."""
        if "data" not in self._cache:
            what = "images" if self.label is None else f"images of class {self.label}"
            self._cache["data"] = {
                "dataset": self.dataset, "split": "test", "kind": self.data_kind, "n": self.n,
                "selection": f"the first {self.n} {what} in stored order", "source": self.test.source,
                "sha256": data_sha256(self.test.images, self.test.labels)}
            if self.label is not None:
                self._cache["data"]["label"] = self.label
        return self._cache["data"]

    # -- inputs ------------------------------------------------------------------------------
    @property
    def clean(self) -> torch.Tensor:
        """The clean inputs as float [n,3,H,W] in [0, 1]."""
        if "clean" not in self._cache:
            self._cache["clean"] = self.test.images.float().div_(255)
        return self._cache["clean"]

    @property
    def labels(self) -> torch.Tensor:
        return self.test.labels

    def train_pool(self) -> Dataset:
        """Training images universal and class-universal attacks are crafted on."""
        if "train" not in self._cache:
            train = (load_bundled("train") if self.data_kind == "bundled"
                     else load_dataset(self.dataset, "train", self.data_root))
            self._cache["train"] = _class_subset(train, self.meta)
        return self._cache["train"]

    def train_record(self) -> Dict[str, Any]:
        if "train_rec" not in self._cache:
            t = self.train_pool()
            self._cache["train_rec"] = {"split": "train", "n": len(t), "source": t.source,
                                        "sha256": data_sha256(t.images, t.labels)}
        return self._cache["train_rec"]

    # -- evaluation --------------------------------------------------------------------------
    def outputs(self, x: torch.Tensor, desc: str = "forward") -> ExitOutputs:
        out = collect_exit_outputs(self.model, x, batch_size=self.batch_size, device=self.device, desc=desc)
        if out.num_exits != self.num_exits:
            raise DeepslothError(f"the model returns {out.num_exits} exits but its cost record has "
                                 f"{self.num_exits}")
        return out

    @property
    def clean_outputs(self) -> ExitOutputs:
        if "clean_out" not in self._cache:
            self._cache["clean_out"] = self.outputs(self.test.images, desc="clean forward")
        return self._cache["clean_out"]

    def _calibrate(self) -> None:
        if self.calib_n == self.n and self.label is None:
            images, labels, outs = self.test.images, self.test.labels, self.clean_outputs
        else:
            source = self.test_pool()
            images, labels, outs = source.images[:self.calib_n], source.labels[:self.calib_n], None
        thresholds, info = calibration_for(self.path, self.model, self.meta, images, labels, rads=self.rads,
                                           policy=self.policy, device=self.device, outputs=outs,
                                           batch_size=self.batch_size)
        self._cache["thresholds"], self._cache["calibration"] = thresholds, info

    def test_pool(self) -> Dataset:
        """The whole test split (the model's classes) the selected inputs come from."""
        return _class_subset(load_bundled("test") if self.data_kind == "bundled" else load_dataset(
            self.dataset, "test", self.data_root), self.meta)

    @property
    def thresholds(self) -> Dict[str, Dict[str, Any]]:
        if "thresholds" not in self._cache:
            self._calibrate()
        return self._cache["thresholds"]

    @property
    def calibration(self) -> Dict[str, Any]:
        if "calibration" not in self._cache:
            self._calibrate()
        return self._cache["calibration"]

    def latency_model(self, **overrides: Any) -> LatencyModel:
        """The IoT latency model (docs/method.md §6) from the measured per-exit ops; the bytes
        uploaded default to the float32 block output at the split."""
        key = "latency" + repr(sorted(overrides.items()))
        if key not in self._cache:
            tx = overrides.pop("tx_bytes", None)
            lat = LatencyModel.from_ops(self.costs.ops, tx_bytes=0, **overrides)
            lat.tx_bytes = int(tx) if tx is not None else split_tensor_bytes(
                self.model, tuple(self.test.images.shape[1:]), lat.split)
            self._cache[key] = lat
        return self._cache[key]


def _class_subset(ds: Dataset, meta: Dict[str, Any]) -> Dataset:
    """A model trained on a class subset (`deepsloth train --classes`) sees only those classes,
    relabelled as in training (model.json "class_subset")."""
    subset = meta.get("class_subset")
    if not subset:
        return ds
    return subset_dataset(ds, subset["classes"])


def model_name(path: Path) -> str:
    """The zoo name, else the directory name (with its parent's for the generic names a training
    pipeline gives its stages, e.g. `frac10/sdn` -> `frac10-sdn`)."""
    p = Path(path)
    try:
        if p.resolve().parent == ZOO_DIR.resolve():
            return p.name
    except OSError:
        pass
    if p.name in ("sdn", "cnn", "cnn-avg") and p.parent.name:
        return f"{p.parent.name}-{p.name}"
    return p.name or str(p)


def load_context(model: os.PathLike | str, *, data: str = "test", n: Optional[int] = None,
                 calib_n: Optional[int] = None, policy: str | ExitPolicy = "confidence",
                 rads: Sequence[float] = DEFAULT_RADS, device: str | torch.device = "auto",
                 data_root: Optional[str] = None, batch_size: Optional[int] = None,
                 channels_last: Optional[bool] = None, label: Optional[int] = None) -> Context:
    """Load a model (zoo name or directory) and select its clean inputs; see the module docstring.

    `label` keeps only the test images of that class (the first `n` of them); thresholds are then
    calibrated on the first `calib_n` (default: all) test images of every class, as usual.
    `batch_size` (evaluation forwards) and `channels_last` default to what fits the device (see the
    module docstring). Every argument is checked before the model or data are loaded."""
    if data not in DATA_CHOICES:
        raise DeepslothError(f"data must be one of {', '.join(DATA_CHOICES)}, got {data!r}")
    rads = tuple(check_rad(r) for r in rads)
    if not rads:
        raise DeepslothError("at least one RAD budget is needed")
    for what, value in (("n", n), ("calib_n", calib_n)):
        if value is not None:
            check_count(what, value)
    if batch_size is not None:
        check_count("batch_size", batch_size)
    dev = resolve_device(device)
    net = create_model(model, device=dev)
    meta, path = net.meta, net.model_dir
    if meta.get("mode") == "cnn" or int(meta.get("exits") or 2) < 2:
        raise DeepslothError(f"{model} is a plain CNN (one exit); slowdown needs a multi-exit model")
    if channels_last is None:
        channels_last = prefers_channels_last(net, dev)
    if channels_last:  # convolutions run faster channels-last; the logits are the same model's
        net = net.to(memory_format=torch.channels_last)
    if data == "bundled":
        if meta["dataset"] != "cifar10":
            raise DeepslothError(f"the bundled inputs are CIFAR-10 but {model} is a {meta['dataset']} model; "
                                 f"use the {meta['dataset']} test split")
        full = load_bundled("test")
    else:
        full = load_dataset(meta["dataset"], "test", data_root)
    full = _class_subset(full, meta)
    size = int(meta.get("input_size") or full.image_size)
    if tuple(full.images.shape[1:]) != (3, size, size):
        raise DeepslothError(f"{model} takes {meta.get('input_size')}px inputs, the {full.name} test images "
                             f"are {full.image_size}px")
    calib_total = len(full)
    if label is not None:
        classes = int(meta.get("num_classes") or full.num_classes)
        check_count("label", label, minimum=0)
        if label >= classes:
            raise DeepslothError(f"class {label} does not exist: the model has classes 0..{classes - 1}")
        keep = (full.labels == label).nonzero().flatten()
        full = subset_dataset(full, indices=keep)
        if calib_n is None:
            calib_n = calib_total
    total = len(full)
    for what, value, limit in (("n", n, total), ("calib_n", calib_n, calib_total)):
        if value is not None and value > limit:
            raise DeepslothError(f"{what} = {value} exceeds the {limit} available test images ({full.source}"
                                 + ("" if what == "calib_n" or label is None else f", class {label}") + ")")
    if total == 0:
        raise DeepslothError(f"no test images of class {label} ({full.source})")
    n = n or total
    test = full.subset(n) if n < total else full
    pol = make_policy(policy, meta.get("num_classes") or full.num_classes)
    costs = exit_costs_for(net, meta, tuple(full.images.shape[1:]))
    batch_size = eval_batch(net, tuple(full.images.shape[1:]), dev, batch_size)
    return Context(net, meta, Path(path), model_name(Path(path)), dev, test, data, label, pol, rads, costs,
                   calib_n or n, batch_size, data_root, bool(channels_last))


def eval_batch(model: nn.Module, shape: Tuple[int, ...], device: torch.device, given: Optional[int] = None) -> int:
    """The evaluation batch: `given`, else `EVAL_BATCH` on a CPU and `device.auto_batch` on CUDA, from
    the memory of one inference forward of every exit on the BN-folded network
    (`collect_exit_outputs` runs that one), plus each input's uint8 and float copies."""
    def step(b: int) -> None:
        with torch.inference_mode():
            fold_batchnorm(model)(torch.rand((b,) + tuple(shape), device=device))

    return auto_batch(device, default=EVAL_BATCH, given=given,
                      per_item_bytes=lambda: peak_bytes_per_item(step, device) + 5 * math.prod(shape))


__all__ = ["Context", "load_context", "eval_batch", "DATA_CHOICES", "EVAL_BATCH"]
