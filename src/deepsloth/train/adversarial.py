"""Adversarial training terms (docs/method.md §10.3), driven by any attack of the registry.

    adv = AdversarialTraining("pgd", mode="cnn")                  # eps 8/255, 10 steps of 2/255, random start
    adv = AdversarialTraining("mixed", mode="ic-only")            # DeepSloth and PGD inputs half and half
    adv = AdversarialTraining("pgd", mode="cnn", fast=True)       # one step of 1.25 eps from a random start

Per training batch, `inputs(model, x, y, seed)` crafts adversarial versions of the first
`share` of the batch against the current model (the attack puts the model in eval mode with frozen
parameters for the crafting and then restores every module's training flag and every
parameter's requires_grad exactly: `attacks.base.frozen`), and `loss(outputs, y)` is the term added
to the usual loss:

* CNN: CE(final(x_adv), y) (with the clean CE this is the paper's CE(x) + CE(x_adv));
* IC-only and joint SDN: the sum over all exits of CE(exit_i(x_adv), y).

`mixed` crafts the first half of the adversarial share with per-sample DeepSloth and the rest with
PGD. The defaults are the paper's adversarial-training attack: l_inf, eps 8/255, step 2/255, 10
iterations, random start (PGD); DeepSloth with its per-sample defaults. `fast=True` replaces the
multi-step PGD by one step of 1.25 x eps from a uniform random start ("fast adversarial training",
Wong et al., 2020): about steps x cheaper, a weaker attack during training.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.base import derive_seed
from ..attacks.registry import create_attack, resolve_spec
from ..errors import DeepslothError
from ..validate import check_number

ADV_CHOICES = ("pgd", "pgd-avg", "pgd-max", "deepsloth", "mixed")
PAPER_AT = {"eps": 8 / 255, "step_size": 2 / 255, "steps": 10}   # the paper's adversarial-training PGD


@dataclass
class AdversarialTraining:
    attack: str = "pgd"
    mode: str = "cnn"
    eps: Optional[float] = None
    steps: Optional[int] = None
    step_size: Optional[float] = None
    share: float = 1.0              # fraction of every batch that gets an adversarial version
    fast: bool = False
    dataset: Optional[str] = None
    specs: List[Dict[str, Any]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.attack not in ADV_CHOICES:
            raise DeepslothError(f"unknown adversarial-training attack {self.attack!r}; choose from "
                                 f"{', '.join(ADV_CHOICES)}")
        if self.mode == "cnn" and self.attack not in ("pgd",):
            raise DeepslothError(f"a CNN has one exit: adversarial CNN training uses pgd, not {self.attack}")
        check_number("share", self.share, low=0.0, high=1.0, low_open=True)
        names = ["deepsloth", "pgd"] if self.attack == "mixed" else [self.attack]
        self._specs = [self._spec(n) for n in names]
        self.specs = [s.to_dict() for s in self._specs]

    def _spec(self, name: str):
        if name == "deepsloth":
            opts = {"eps": self.eps, "steps": self.steps, "step_size": self.step_size}
        else:
            opts = {"eps": self.eps if self.eps is not None else PAPER_AT["eps"],
                    "steps": self.steps if self.steps is not None else PAPER_AT["steps"],
                    "step_size": self.step_size if self.step_size is not None else PAPER_AT["step_size"]}
            if self.fast:
                opts.update(steps=1, step_size=1.25 * opts["eps"], random_start=True)
        return resolve_spec(name, dataset=self.dataset, **opts)

    def record(self) -> Dict[str, Any]:
        """What model.json stores about the adversarial recipe."""
        d = {k: v for k, v in asdict(self).items() if k != "specs"}
        d["specs"] = self.specs
        d["loss"] = ("CE(x) + CE(final(x_adv))" if self.mode == "cnn"
                     else "usual loss + sum over exits of CE(exit(x_adv), y)")
        return d

    def inputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple:
        """(x_adv, y_adv): adversarial versions of the first `share` of the batch."""
        m = max(1, int(round(self.share * len(x))))
        xs, ys = x[:m], y[:m]
        parts = [len(xs)] if len(self._specs) == 1 else [len(xs) // 2, len(xs) - len(xs) // 2]
        out, start = [], 0
        for spec, size in zip(self._specs, parts):
            if size == 0:
                continue
            atk = create_attack(spec, model, seed=derive_seed(seed, spec.cell))
            labels = None if spec.attack == "deepsloth" else ys[start:start + size]
            out.append(atk(xs[start:start + size], labels))
            start += size
        return torch.cat(out).to(x.dtype), ys

    def loss(self, outs: List[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        if self.mode == "cnn":
            return F.cross_entropy(outs[-1].float(), y)
        return sum(F.cross_entropy(o.float(), y) for o in outs)


__all__ = ["AdversarialTraining", "ADV_CHOICES", "PAPER_AT"]
