"""Training recipes: the paper's (docs/method.md §3) as defaults, and a fast one-cycle recipe for CPUs."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

from ..errors import DeepslothError

MODES = ("cnn", "ic-only", "sdn")


@dataclass
class Recipe:
    name: str
    optimizer: str            # "sgd" | "adam" | "adamw"
    lr: float
    weight_decay: float
    epochs: int
    schedule: str             # "multistep" | "onecycle"
    milestones: Tuple[int, ...] = ()
    gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    batch_size: int = 128
    warmup: float = 0.2       # one-cycle: fraction of steps spent warming up
    label_smoothing: float = 0.0
    cutout: int = 0           # side of the cutout square in px (0: none; deepsloth.data.augment.cutout)
    exit_weights: str = "cost"  # joint training: "cost" (the SDN schedule) or "equal" (MSDNet: every exit 1)

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """Learning rate at `step` of `epoch` (both 0-based), a pure function (resumable)."""
        if self.schedule == "multistep":
            return self.lr * self.gamma ** sum(1 for m in self.milestones if epoch >= m)
        if self.schedule == "onecycle":
            total = max(1, self.epochs * steps_per_epoch)
            t = (epoch * steps_per_epoch + step) / total
            if t < self.warmup:
                return self.lr * (0.1 + 0.9 * t / self.warmup)
            frac = (t - self.warmup) / max(1e-12, 1 - self.warmup)
            return self.lr * (0.5 * (1 + math.cos(math.pi * min(1.0, frac))) * 0.999 + 0.001)
        raise DeepslothError(f"unknown schedule {self.schedule!r}")

    def to_dict(self) -> Dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        if not d["cutout"]:   # recorded only when used: recipes (and checkpoints) from before it are unchanged
            del d["cutout"]
        if d["exit_weights"] == "cost":   # the same for the SDN recipes made before it existed
            del d["exit_weights"]
        return d

    @classmethod
    def from_dict(cls, d: Dict) -> "Recipe":
        d = dict(d)
        d["milestones"] = tuple(d.get("milestones", ()))
        return cls(**d)


def _weight_decay(arch: str) -> float:
    return 5e-4 if arch.startswith("vgg") else 1e-4


def _multi_exit_recipe(arch: str, mode: str, kind: str) -> Recipe:
    """Architectures built with their exits train jointly, every exit's loss weighted 1.

    MSDNet (docs/method.md §2.4): "paper" is the MSDNet paper's CIFAR schedule (SGD, lr 0.1, batch 64,
    300 epochs, /10 at 150 and 225, Nesterov); "fast" one-cycle at lr 0.1, batch 128, for CPUs.
    The early-exit ViT (§2.5): AdamW at lr 1e-3, weight decay 0.05, label smoothing 0.1, one-cycle with
    20% warm-up; "fast" 15 epochs for CPUs, "paper" 200 (a GPU schedule; no paper defines one)."""
    if mode != "sdn":
        raise DeepslothError(f"{arch} is trained jointly (--mode sdn), not --mode {mode}")
    if kind not in ("paper", "fast"):
        raise DeepslothError(f"unknown recipe {kind!r}; use paper or fast")
    if arch == "vit":
        return Recipe(f"{kind}-vit", "adamw", 1e-3, 0.05, 200 if kind == "paper" else 15, "onecycle",
                      label_smoothing=0.1, exit_weights="equal")
    if kind == "paper":
        return Recipe("paper-msdnet", "sgd", 0.1, 1e-4, 300, "multistep", (150, 225), nesterov=True,
                      batch_size=64, exit_weights="equal")
    return Recipe("fast-msdnet", "sgd", 0.1, 5e-4, 15, "onecycle", nesterov=True, exit_weights="equal")


def default_recipe(arch: str, mode: str, kind: str = "paper", epochs: Optional[int] = None,
                   lr: Optional[float] = None, batch_size: Optional[int] = None, cutout: Optional[int] = None) -> Recipe:
    """The recipe for `mode`; `kind` is "paper" (docs/method.md §3) or "fast" (one-cycle, for CPUs)."""
    if mode not in MODES:
        raise DeepslothError(f"unknown training mode {mode!r}; choose from {', '.join(MODES)}")
    wd = _weight_decay(arch)
    if arch in ("msdnet", "vit"):
        r = _multi_exit_recipe(arch, mode, kind)
    elif kind == "paper":
        if mode == "cnn":
            r = Recipe("paper-cnn", "sgd", 0.01, wd, 100, "multistep", (10, 20))
        elif mode == "ic-only":
            r = Recipe("paper-ic-only", "adam", 1e-3, wd, 25, "multistep", (15,))
        else:  # the SDN authors' schedule for joint training
            r = Recipe("paper-sdn", "sgd", 0.1, wd, 100, "multistep", (35, 60, 85))
    elif kind == "fast":
        if mode == "ic-only":
            r = Recipe("fast-ic-only", "adam", 2e-3, wd, 4, "onecycle")
        else:
            r = Recipe(f"fast-{mode}", "sgd", 0.15, 5e-4, 15, "onecycle", nesterov=True)
    else:
        raise DeepslothError(f"unknown recipe {kind!r}; use paper or fast")
    if epochs is not None:
        if epochs < 1:
            raise DeepslothError("--epochs must be at least 1")
        r.epochs = epochs
    if lr is not None:
        r.lr = lr
    if batch_size is not None:
        r.batch_size = batch_size
    if cutout is not None:
        if cutout < 0:
            raise DeepslothError("--cutout must be >= 0")
        r.cutout = cutout
    return r
