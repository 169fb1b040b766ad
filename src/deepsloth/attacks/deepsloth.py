"""DeepSloth (docs/method.md §5.2-5.5): push every internal classifier towards the uniform distribution
so that no early exit fires and every input runs the whole network.

    x_adv  = DeepSloth(model, norm="linf")(x)                       # per-sample, [N,3,H,W]
    delta  = DeepSloth(model, scope="universal")(x_train)           # one delta [3,H,W]
    deltas = DeepSloth(model, scope="class")(x_train, y_train)      # one per class [C,3,H,W]

Defaults are the paper's (docs/method.md §5.3-5.5), per norm and dataset (`dataset="cifar10"|"tinyimagenet"`; when not
given it is guessed from the input size: 64 px and up means Tiny ImageNet):

* l_inf: eps 8/255, 30 steps of 0.002, uniform random start; x' <- x' - step * sign(grad).
* l_2 (decoupled-direction style): delta starts Gaussian with l_2 norm `eps` (1.0); SGD on
  delta with learning rate `step_size` (1.0) cosine-annealed to `lr_min` (0.01) over the
  iterations (550); each input's gradient clipped to l_2 norm <= `grad_clip` (1); after each
  step delta is projected to the current budget, which starts at `eps` and is multiplied by
  (1 - gamma) every `decay_every` iterations (50 for 550 iterations, i.e. 10 decays;
  gamma 0.1 on CIFAR-10, final budget ~0.35, 0.05 on Tiny ImageNet, ~0.60). `eps` is thus
  the starting budget; `final_eps` in `last_info` is the one the output satisfies.
* l_1 (sparse descent): eps 8 (16 on Tiny ImageNet), step 0.5 (1.0), 250 iterations, no
  random start; only coordinates with |grad| at or above the 99th percentile move, along
  their sign divided by their count; projection onto the l_1 ball is exact.

Universal (`scope="universal"`): one delta shared by all inputs, crafted on (training)
inputs passed to the call and applied as clamp(x + delta). The crafting set is `n_images`
inputs chosen by a seeded permutation (default 250, the paper's), visited `epochs`
times in batches of `batch_size`, with `steps` iterations per batch (l_inf: 20 steps of
0.005, minimising the batch-averaged loss). `preset="strong"` uses 10x the images and two
epochs; what was used is in `config()` and `last_info`. Class-universal (`scope="class"`)
runs the universal attack on each class's inputs, for every class of the model's output.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from ..io import load_tensors, parse_json, read_metadata, save_tensors
from ..validate import check_count, check_eps, check_number, check_positive
from ..progress import progress
from .base import Attack, derive_seed
from .params import SCOPES, Param, Params
from .norms import (check_norm, clip_grad_l2, clip_to_ball, project, random_in_ball,
                    steepest_direction)
from .objectives import get_objective, objective_name, uniform_ic_loss

DATASET_FAMILIES = ("cifar10", "tinyimagenet")

# docs/method.md §5.3 (per-sample) and 5.4 (universal), per norm and dataset family.
SAMPLE_DEFAULTS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "linf": {
        "cifar10": {"eps": 8 / 255, "steps": 30, "step_size": 0.002, "random_start": True},
        "tinyimagenet": {"eps": 8 / 255, "steps": 30, "step_size": 0.002, "random_start": True},
    },
    "l2": {
        "cifar10": {"eps": 1.0, "steps": 550, "step_size": 1.0, "random_start": True, "gamma": 0.1},
        "tinyimagenet": {"eps": 1.0, "steps": 550, "step_size": 1.0, "random_start": True, "gamma": 0.05},
    },
    "l1": {
        "cifar10": {"eps": 8.0, "steps": 250, "step_size": 0.5, "random_start": False},
        "tinyimagenet": {"eps": 16.0, "steps": 250, "step_size": 1.0, "random_start": False},
    },
}
UNIVERSAL_OVERRIDES: Dict[str, Dict[str, Any]] = {
    "linf": {"steps": 20, "step_size": 0.005},
}
PRESETS: Dict[str, Dict[str, int]] = {
    "reference": {"n_images": 250, "batch_size": 250, "epochs": 1},
    "strong": {"n_images": 2500, "batch_size": 250, "epochs": 2},
}


def dataset_family(dataset: Optional[str], image_size: Optional[int] = None) -> str:
    """'tinyimagenet' for Tiny ImageNet (or, without a name, inputs of 64 px and up), else 'cifar10'."""
    if dataset is not None:
        key = str(dataset).lower().replace("-", "").replace("_", "")
        return "tinyimagenet" if key.startswith("tiny") else "cifar10"
    return "tinyimagenet" if (image_size or 0) >= 64 else "cifar10"


def deepsloth_defaults(norm: str, scope: str = "sample", dataset: Optional[str] = None,
                       image_size: Optional[int] = None, preset: str = "reference") -> Dict[str, Any]:
    """The default hyper-parameters (docs/method.md §5) for one configuration."""
    norm = check_norm(norm)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose from {', '.join(SCOPES)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    family = dataset_family(dataset, image_size)
    p = dict(SAMPLE_DEFAULTS[norm][family])
    p.setdefault("gamma", None)
    if scope != "sample":
        p.update(UNIVERSAL_OVERRIDES.get(norm, {}))
        p.update(PRESETS[preset])
    p["dataset_family"] = family
    return p


REFERENCE_START = 0.002   # the reference code's random start: uniform in [-0.002, 0.002], unclamped


def _checked(p: Dict[str, Any], norm: str) -> Dict[str, Any]:
    """Validate resolved hyper-parameters (one clear error naming the bad one)."""
    check_eps(p["eps"], norm)
    check_count("steps", p["steps"])
    check_positive("step_size", p["step_size"])
    if p.get("gamma") is not None:
        check_number("gamma", p["gamma"], low=0.0, high=1.0, high_open=True)
    for key in ("n_images", "batch_size", "epochs"):
        if p.get(key) is not None:
            check_count(key, p[key])
    if p.get("random_start") not in (True, False, "reference"):
        raise ValueError(f"random_start must be True, False or 'reference', got {p.get('random_start')!r}")
    return p


def _random_start(value):
    if value not in (True, False, "reference"):
        raise ValueError(f"random_start must be True, False or 'reference', got {value!r}")
    return value


def _choice(name: str, choices) -> Any:
    def check(value):
        if value not in choices:
            raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")
        return value
    return check


NON_SAMPLE = ("universal", "class")
# the options whose defaults come from SAMPLE_DEFAULTS / UNIVERSAL_OVERRIDES / PRESETS
TABLED = ("eps", "steps", "step_size", "random_start", "gamma", "n_images", "batch_size", "epochs")


class DeepSloth(Attack):
    """`random_start`: True (uniform in the eps ball, the default), False, or "reference" (uniform
    in [-0.002, 0.002] and not clamped to [0, 1] before the first step, as the paper's code did;
    docs/method.md §7)."""

    name = "deepsloth"
    PARAMS = Params(
        "deepsloth",
        Param("eps", "budget (l_2: the starting budget); default per norm and dataset", flag="--eps"),
        Param("steps", "iterations (universal: per batch)", flag="--steps"),
        Param("step_size", "step size (l_2: the starting learning rate)", flag="--step-size"),
        Param("random_start", "True, False or 'reference' (the paper code's start)", flag="--random-start",
              check=_random_start),
        Param("dataset", "whose defaults apply: cifar10 or tinyimagenet (default: from the input size)",
              check=str),
        Param("gamma", "l_2: budget decay factor", record_norms=("l2",)),
        Param("lr_min", "l_2: final learning rate of the cosine schedule", default=0.01, record_norms=("l2",),
              check=float),
        Param("decay_every", "l_2: decay the budget every this many iterations (default iterations // 11)",
              record_norms=("l2",), check=lambda v: check_count("decay_every", v)),
        Param("grad_clip", "l_2: per-input gradient l_2 clip", default=1.0, record_norms=("l2",), check=float),
        Param("percentile", "l_1: share of gradient coordinates that move", default=99.0, record_norms=("l1",),
              check=float),
        Param("preset", "crafting data schedule: reference (250 images, 1 epoch) or strong (2500, 2)",
              default="reference", scopes=NON_SAMPLE, flag="--preset", check=_choice("preset", tuple(PRESETS))),
        Param("n_images", "crafting images", scopes=NON_SAMPLE, flag="--craft-n"),
        Param("batch_size", "crafting batch", scopes=NON_SAMPLE),
        Param("epochs", "passes over the crafting images", scopes=NON_SAMPLE, flag="--epochs"),
        Param("num_classes", "class-universal: classes to craft for (default: the model's output size)",
              scopes=("class",), record="changed", check=lambda v: check_count("num_classes", v)),
        Param("objective", "loss to minimise (default: the uniform-IC loss of docs/method.md §5.2)",
              record="changed"),
    )

    def __init__(self, model: nn.Module, norm: str = "linf", scope: str = "sample", seed: int = 0,
                 device=None, **options: Any):
        super().__init__(model, seed=seed, device=device)
        self.norm = check_norm(norm)
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; choose from {', '.join(SCOPES)}")
        self.scope = scope
        self.options = self.PARAMS.resolve(options, scope=scope)
        o = self.options
        self.dataset, self.preset = o["dataset"], o.get("preset", "reference")
        self.objective = uniform_ic_loss if o["objective"] is None else get_objective(o["objective"])
        self.lr_min, self.grad_clip, self.percentile = o["lr_min"], o["grad_clip"], o["percentile"]
        self.num_classes, self.decay_every, self.amp = o.get("num_classes"), o["decay_every"], o["amp"]
        self.overrides = {k: o[k] for k in TABLED if o.get(k) is not None}
        self.last_info: Dict[str, Any] = {}
        self._image_size: Optional[int] = None
        self.params()   # validate the hyper-parameters now, not at the first call

    # -- hyper-parameters ----------------------------------------------------------------
    def params(self, image_size: Optional[int] = None) -> Dict[str, Any]:
        """Resolved hyper-parameters (the defaults, then the caller's overrides)."""
        p = deepsloth_defaults(self.norm, self.scope, self.dataset,
                               image_size or self._image_size, self.preset)
        p.update(self.overrides)
        if self.norm == "l2" and p.get("gamma") is None:
            p["gamma"] = SAMPLE_DEFAULTS["l2"][p["dataset_family"]]["gamma"]
        return _checked(p, self.norm)

    def spec_params(self) -> Dict[str, Any]:
        r = self.params()
        values = dict(self.options, amp=self.amp, dataset=r["dataset_family"])
        values.update({k: r[k] for k in TABLED if k in values})
        return self.PARAMS.spec(values, norm=self.norm, scope=self.scope)

    def config(self) -> Dict[str, Any]:
        return {"attack": "deepsloth", "norm": self.norm, "scope": self.scope, **self.spec_params(),
                "objective": objective_name(self.objective), "seed": self.seed}

    # -- entry -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor],
                generator: torch.Generator) -> torch.Tensor:
        self._image_size = int(x.shape[-1])
        p = self.params()
        if self.scope == "sample":
            return self._per_sample(self.prepare(x), p, generator)
        if self.scope == "universal":
            delta, info = self._universal(x, p, generator)
            self.last_info = info
            return delta
        if y is None:
            raise ValueError("class-universal DeepSloth needs the labels of the crafting inputs")
        return self._class_universal(x, y, p, generator)

    # -- schedules -------------------------------------------------------------------------
    def _lr(self, p: Dict[str, Any], t: int, total: int) -> float:
        lr0 = float(p["step_size"])
        return self.lr_min + (lr0 - self.lr_min) * (1 + math.cos(math.pi * t / total)) / 2

    def _decay_every(self, total: int) -> int:
        return int(self.decay_every) if self.decay_every else max(1, total // 11)

    def _start(self, shape, p: Dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """Initial perturbation (rows of `shape`), on the attack's device."""
        eps = float(p["eps"])
        if not p["random_start"]:
            return torch.zeros(shape, device=self.device)
        if p["random_start"] == "reference":
            u = torch.rand(shape, generator=generator) * (2 * REFERENCE_START) - REFERENCE_START
            return u.to(self.device)
        if self.norm == "l2":        # Gaussian direction with l_2 norm eps (docs/method.md §5.3)
            g = torch.randn(shape, generator=generator)
            g = project(g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1)) * eps,
                        "l2", eps)
            return g.to(self.device)
        return random_in_ball(shape, self.norm, eps, generator, device=self.device)

    def _update(self, delta: torch.Tensor, grad: torch.Tensor, p: Dict[str, Any], t: int,
                total: int, budget: float) -> torch.Tensor:
        """One descent step on the perturbation rows, projected to the ball of `budget`."""
        if self.norm == "l2":
            delta = delta - self._lr(p, t, total) * clip_grad_l2(grad, self.grad_clip)
        else:
            delta = delta - float(p["step_size"]) * steepest_direction(grad, self.norm, self.percentile)
        return project(delta, self.norm, budget)

    def _budget(self, p: Dict[str, Any], t: int, total: int, budget: float) -> float:
        if self.norm == "l2" and t > 0 and t % self._decay_every(total) == 0:
            return budget * (1 - float(p["gamma"]))
        return budget

    # -- per-sample ------------------------------------------------------------------------
    def _per_sample(self, x: torch.Tensor, p: Dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        total, budget = int(p["steps"]), float(p["eps"])
        if p["random_start"] == "reference":   # the reference's first iterate is not clamped
            x_adv = x + self._start(x.shape, p, generator)
        else:
            x_adv = clip_to_ball(x + self._start(x.shape, p, generator), x, self.norm, budget)
        for t in range(total):
            budget = self._budget(p, t, total, budget)
            grad = self.input_grad(x_adv, self.objective, None)
            delta = self._update(x_adv - x, grad, p, t, total, budget)
            x_adv = (x + delta).clamp_(0.0, 1.0)
        self.last_info = {"iterations": total, "final_eps": budget}
        return x_adv

    # -- universal -------------------------------------------------------------------------
    def _universal(self, x_all: torch.Tensor, p: Dict[str, Any], generator: torch.Generator):
        n_all = int(x_all.shape[0])
        if n_all == 0:
            raise ValueError("universal DeepSloth needs at least one crafting input")
        n = n_all if p.get("n_images") is None else min(int(p["n_images"]), n_all)
        chosen = torch.randperm(n_all, generator=generator)[:n]
        xs = self.prepare(x_all[chosen.to(x_all.device)])
        bs = int(p.get("batch_size") or n)
        batches: List[torch.Tensor] = [xs[i:i + bs] for i in range(0, n, bs)]
        epochs, steps = int(p.get("epochs") or 1), int(p["steps"])
        total, budget = epochs * len(batches) * steps, float(p["eps"])
        delta = self._start((1,) + tuple(xs.shape[1:]), p, generator)
        t = 0
        bar = progress(total=total, desc=f"universal DeepSloth ({self.norm})", unit="step")
        for _ in range(epochs):
            for xb in batches:
                for _ in range(steps):
                    bar.update(1)
                    budget = self._budget(p, t, total, budget)
                    d = delta.detach().requires_grad_(True)
                    loss = self.objective(self.logits((xb + d).clamp(0.0, 1.0)), None).mean()
                    (grad,) = torch.autograd.grad(loss, d)
                    delta = self._update(delta, grad, p, t, total, budget)
                    t += 1
        bar.close()
        info = {"n_images": n, "batches": len(batches), "epochs": epochs, "iterations": total,
                "final_eps": budget}
        return delta[0].detach(), info

    def _class_universal(self, x_all: torch.Tensor, y: torch.Tensor, p: Dict[str, Any],
                         generator: torch.Generator) -> torch.Tensor:
        labels = y.detach().to("cpu").long()
        num_classes = self.num_classes
        if num_classes is None:
            with torch.no_grad():
                num_classes = int(self.logits(self.prepare(x_all[:1]))[-1].shape[-1])
        base = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        deltas = torch.zeros((num_classes,) + tuple(x_all.shape[1:]), device=self.device)
        missing, per_class, resumed, resumed_seconds = [], {}, 0, 0.0
        for c in progress(range(num_classes), desc="class-universal DeepSloth", unit="class"):
            members = (labels == c).nonzero().flatten()
            if members.numel() == 0:
                missing.append(c)
                continue
            kept = None if self.resume_dir is None else Path(self.resume_dir) / f"class-{c:05d}.safetensors"
            if kept is not None and kept.is_file():   # crafted before a kill: each class has its own seed
                meta = read_metadata(kept)
                deltas[c] = load_tensors(kept)["delta"].to(deltas.device)
                info = parse_json(meta["info"], f"{kept} metadata 'info'")
                resumed, resumed_seconds = resumed + 1, resumed_seconds + float(meta.get("seconds", 0.0))
            else:
                gen_c = torch.Generator().manual_seed(derive_seed(base, "class", c))
                t0 = time.perf_counter()
                deltas[c], info = self._universal(x_all[members.to(x_all.device)], p, gen_c)
                if kept is not None:
                    save_tensors(kept, {"delta": deltas[c].float()},
                                 metadata={"info": json.dumps(info), "seconds": f"{time.perf_counter() - t0:.6f}"})
            per_class[c] = info["n_images"]
        self.last_info = {"num_classes": num_classes, "classes_without_data": missing,
                          "images_per_class": {"min": min(per_class.values(), default=0),
                                               "max": max(per_class.values(), default=0)},
                          "iterations_per_class": info["iterations"] if per_class else 0,
                          "final_eps": info["final_eps"] if per_class else float(p["eps"])}
        if resumed:
            self.last_info.update(resumed_classes=resumed, resumed_seconds=round(resumed_seconds, 3))
        return deltas


__all__ = ["DeepSloth", "SCOPES", "SAMPLE_DEFAULTS", "UNIVERSAL_OVERRIDES", "PRESETS",
           "deepsloth_defaults", "dataset_family"]
