"""Adaptive DeepSloth: the slowdown attack by an attacker who knows the defence (docs/defences.md).

    atk = AdaptiveDeepSloth(model, defence="jpeg:quality=75")            # BPDA through JPEG
    atk = AdaptiveDeepSloth(model, defence="resize-pad:shrink=4", eot=8)  # expectation over 8 draws
    atk = AdaptiveDeepSloth(model, defence="exit-cap:k=3")               # cost within the cap
    atk = AdaptiveDeepSloth(model, defence=detector_name)                # stays under a fitted detector

It is DeepSloth (every norm and scope, the same defaults and schedules) run against the defended
deployment instead of the bare model:

* **input transforms** (`deepsloth.defences.transforms`): the loss is taken on model(T(x')). Transforms
  that cannot be differentiated (JPEG, bit-depth reduction, median filter) pass the gradient straight
  through (BPDA: the forward is the real transform, the backward the identity); randomised ones
  (random resize-and-pad) average the loss over `eot` draws per step (expectation over transformation).
* **exit caps** (`exit-cap:k=K`): inputs leave at exit K at the latest, so the most cost an attacker can
  cause is reaching exit K; the loss pushes only the internal classifiers before it towards uniform,
  and the network runs only up to them.
* **detectors** (a fitted detector registered with `deepsloth.defences.register`, named
  `exit-stats@<fingerprint>` or `input@<fingerprint>`): the loss adds
  `detector_weight * relu(score - threshold)`, the detector's score above its threshold at
  `detector_fpr` false positives, so the attack slows inputs down while keeping them under the
  detector's threshold.

The defence is part of the spec (a different id for every defence), so its results are content-named,
resumed and reported like any other attack's, and a comparison evaluates them on the deployment the defence
protects (`deepsloth.experiments.deployment`).
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch
from torch import nn

from .deepsloth import DeepSloth
from .params import Param, Params


def _defence_text(value: Any) -> str:
    from ..defences import parse_defence
    return parse_defence(value).spec   # a one-line error for what is not a defence


def _eot(value: Any) -> int:
    from ..validate import check_count
    return check_count("eot", value)


def _weight(value: Any) -> float:
    from ..validate import check_number
    return float(check_number("detector_weight", value, low=0.0))


def _fpr(value: Any) -> float:
    from ..validate import check_number
    return float(check_number("detector_fpr", value, low=0.0, high=1.0, low_open=True, high_open=True))


DEFENCE = Param("defence", "the defence the attacker adapts to, e.g. jpeg:quality=75, bitdepth:bits=4, median:kernel=3, "
                "resize-pad:shrink=4, exit-cap:k=3 (deepsloth attack also takes exit-cap:cost=c and latency-cap:budget_ms=t), "
                "or the folder of a detector deepsloth defend saved (docs/defences.md)",
                flag="--defence",
                check=_defence_text)
EOT = Param("eot", "random transforms: draws averaged per step (expectation over transformation; default 8, 1 for "
            "deterministic defences)", flag="--eot", check=_eot)
DETECTOR_WEIGHT = Param("detector_weight", "detectors: weight of the detector-evasion term", default=1.0,
                        record="changed", flag="--detector-weight", check=_weight)
DETECTOR_FPR = Param("detector_fpr", "detectors: the false-positive rate whose threshold the attack stays under",
                     default=0.05, record="changed", check=_fpr)
DEFAULT_EOT = 8


class AdaptiveDeepSloth(DeepSloth):
    """DeepSloth against a defended deployment (see the module docstring)."""

    name = "adaptive-deepsloth"
    PARAMS = Params("adaptive-deepsloth", *[p for p in DeepSloth.PARAMS if p.name != "amp"],
                    DEFENCE, EOT, DETECTOR_WEIGHT, DETECTOR_FPR)

    def __init__(self, model: nn.Module, norm: str = "linf", scope: str = "sample", seed: int = 0,
                 device=None, **options: Any):
        from ..defences import parse_defence
        from ..errors import DeepslothError

        if options.get("objective") is not None:
            raise DeepslothError("adaptive-deepsloth builds its loss from the defence; it takes no objective")
        if options.get("defence") is None:
            raise DeepslothError("adaptive-deepsloth needs a defence (--defence), e.g. jpeg:quality=75; "
                                 "see docs/defences.md")
        super().__init__(model, norm=norm, scope=scope, seed=seed, device=device, **options)
        self.defence = parse_defence(self.options["defence"])
        kind = self.defence.kind
        if kind == "monitor":
            raise DeepslothError("a stream monitor is evaded by throttling, not by crafting: deepsloth defend "
                                 "reports the largest attacked share it misses")
        if kind == "cap" and self.defence.cap is None:
            raise DeepslothError(f"{self.defence.spec} depends on the model; name the exit: exit-cap:k=K "
                                 f"(deepsloth defend resolves it)")
        if kind == "detector" and self.defence.detector is None:
            raise DeepslothError(f"adaptive-deepsloth needs a fitted detector (<name>@<fingerprint>, "
                                 f"deepsloth.defences.register); {self.defence.spec} is not fitted")
        if self.options.get("eot") is None:
            self.options["eot"] = DEFAULT_EOT if self.defence.randomized else 1
        if self.options["eot"] > 1 and not self.defence.randomized:
            raise DeepslothError(f"eot averages over random draws; {self.defence.spec} draws none (use eot 1)")
        self.eot = int(self.options["eot"])
        self.weight, self.fpr = float(self.options["detector_weight"]), float(self.options["detector_fpr"])
        self.objective = self._adaptive_loss
        cap = self.defence.cap
        # the exits the loss reads: a cap at exit k needs only the internal classifiers before it
        self._need: Any = "all" if cap is None else max(0, cap - 1)
        self._gen: Optional[torch.Generator] = None
        self._seen: Optional[torch.Tensor] = None

    def config(self):
        cfg = super().config()
        cfg["attack"] = self.name
        cfg.pop("objective", None)
        return cfg

    # -- the defended forward ----------------------------------------------------------------
    def forward(self, x, y, generator):
        # the transform's random draws come from their own stream, seeded from the call's generator
        self._gen = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))
        return super().forward(x, y, generator)

    def logits(self, x: torch.Tensor, need="all") -> List[torch.Tensor]:
        transform = self.defence.transform
        if transform is not None:
            if self.eot > 1:
                x = x.repeat(self.eot, 1, 1, 1)
            x = transform(x, generator=self._gen)
        self._seen = x
        return super().logits(x, self._need if self.defence.cap is not None else need)

    def _adaptive_loss(self, logits, labels=None) -> torch.Tensor:
        cap = self.defence.cap
        ics = list(logits[:-1]) if cap is None else list(logits[:cap])
        if ics:
            stacked = torch.stack([l.float() for l in ics])
            loss = -torch.log_softmax(stacked, dim=-1).mean(dim=-1).sum(dim=0)
        else:   # a cap at the first exit: nothing an attacker can slow down
            loss = logits[-1].float().sum(dim=-1) * 0.0
        if self.eot > 1:
            loss = loss.view(self.eot, -1).mean(dim=0)
        detector = self.defence.detector
        if detector is not None:
            score = detector.score(self._seen if detector.name == "input" else list(logits))
            threshold = detector.threshold(self.fpr)
            loss = loss + self.weight * torch.relu(score.float() - float(threshold))
        return loss


__all__ = ["AdaptiveDeepSloth", "DEFAULT_EOT"]
