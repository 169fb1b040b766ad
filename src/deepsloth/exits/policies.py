"""Exit policies: when does an internal classifier (IC) answer instead of the final exit?

A policy turns the per-exit statistics of an input (max softmax, prediction, entropy; see
`deepsloth.exits.forward.ExitOutputs`) and a threshold into a decision at every exit.
Every policy has the same shape, so calibration, evaluation and the early-exit runtime use
one piece of code for the decision:

* `fire_mask(conf, pred, ent, threshold)` -> bool [k, n]: does exit i fire for input j, given
  the statistics of exits 0..k-1? It is *causal*: row i depends only on rows <= i, which is
  what lets the runtime (which only has the exits computed so far) reach the same decision
  as the batched evaluation (which has them all).
* `exit_index(outputs, threshold)` -> int64 [N]: the first IC that fires, else K-1 (the
  final exit, which always answers). Indices are 0-based.
* `exit_predictions(outputs, threshold)` -> (exit index, answer) and its runtime view
  `answer(conf, pred, ent, threshold)`: what an input that leaves at an exit answers. Every
  policy here answers with that exit's own prediction; a wrapper such as an exit cap
  (`deepsloth.defences.caps`) may answer from an earlier exit.

Every threshold is "larger is stricter" (fewer early exits, higher accuracy), so the
calibration rule of docs/method.md §4.2 -- the smallest threshold that keeps the accuracy -- means
"the most efficient setting" for every policy.

Policies:

* ``confidence`` (default, docs/method.md §4.1): exit i fires when max softmax >= q.
* ``entropy``: exit i fires when the normalised certainty 1 - H(p) / log(C) >= q, with H the
  softmax entropy in nats and C the number of classes (so q lives in [0, 1] like the
  confidence threshold, and q -> 1 demands a one-hot distribution).
* ``patience`` (PABEE, Zhou et al. 2020): exit i fires when the prediction has stayed the
  same for `q` consecutive exits (exits i-q..i agree); q is an integer 1..K-1.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

from ..errors import DeepslothError
from .forward import ExitOutputs

POLICIES = ("confidence", "entropy", "patience")

#: The calibration sweep of docs/method.md §4.2: q = 0.05, 0.10, ..., 0.95.
THRESHOLD_GRID: Tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


def exit_stats(logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(max softmax, prediction, entropy) over the last dim, computed exactly as
    `collect_exit_outputs` does (float32 log-softmax), so both paths see the same numbers."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    c, k = p.max(dim=-1)
    return c, k, -(p * logp).sum(dim=-1)


def first_firing(fire: torch.Tensor) -> torch.Tensor:
    """0-based index of the first True row of `fire` [K-1, N] (the ICs); K-1 where none."""
    k1, n = fire.shape
    always = torch.ones(1, n, dtype=torch.bool, device=fire.device)  # the final exit answers
    return torch.cat([fire, always], 0).to(torch.uint8).argmax(dim=0)


class ExitPolicy:
    """Base class. Subclasses implement `fire_mask`; everything else follows from it."""

    name = "policy"

    def grid(self, num_exits: int) -> List[float]:
        """Thresholds the calibration sweeps, in increasing strictness."""
        return list(THRESHOLD_GRID)

    def fire_mask(self, conf: torch.Tensor, pred: torch.Tensor, ent: torch.Tensor,
                  threshold: float) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def fire_last(self, conf: Sequence[torch.Tensor], pred: Sequence[torch.Tensor],
                  ent: Sequence[torch.Tensor], threshold: float) -> torch.Tensor:
        """Does the newest exit fire? Histories hold one [n] tensor per exit computed so far
        (the runtime's view); the answer is row -1 of `fire_mask` on the stacked history."""
        return self.fire_mask(torch.stack(list(conf)), torch.stack(list(pred)),
                              torch.stack(list(ent)), threshold)[-1]

    def exit_index(self, outputs: ExitOutputs, threshold: float) -> torch.Tensor:
        """The exit (0-based, K-1 = final) that answers each input."""
        k = outputs.num_exits
        if k == 1:
            return torch.zeros(len(outputs), dtype=torch.long)
        fire = self.fire_mask(outputs.confidence[:-1], outputs.prediction[:-1],
                              outputs.entropy[:-1], threshold)
        return first_firing(fire).long()

    def answer(self, conf: Sequence[torch.Tensor], pred: Sequence[torch.Tensor], ent: Sequence[torch.Tensor],
               threshold: float, final: bool = False) -> torch.Tensor:
        """The prediction [n] given by the inputs that leave at the newest exit, in the runtime's view
        (histories as for `fire_last`; `final` is True at the final exit). By default the exit's own
        prediction, `pred[-1]`; a policy that answers from another exit (an exit cap does) overrides
        this together with `exit_predictions`, and the two must agree."""
        return pred[-1]

    def exit_predictions(self, outputs: ExitOutputs, threshold: float) -> Tuple[torch.Tensor, torch.Tensor]:
        """(exit index, prediction at that exit) of each input."""
        idx = self.exit_index(outputs, threshold)
        return idx, outputs.prediction.gather(0, idx.unsqueeze(0)).squeeze(0)

    def describe(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({args})"


class ConfidencePolicy(ExitPolicy):
    """docs/method.md §4.1: exit at the first IC whose max softmax probability is >= q."""

    name = "confidence"

    def fire_mask(self, conf, pred, ent, threshold):
        return conf >= threshold

    def fire_last(self, conf, pred, ent, threshold):  # same comparison, no stacking
        return conf[-1] >= threshold


class EntropyPolicy(ExitPolicy):
    """Exit at the first IC whose certainty 1 - H(p)/log(C) is >= q (H in nats)."""

    name = "entropy"

    def __init__(self, num_classes: int):
        if num_classes is None or int(num_classes) < 2:
            raise DeepslothError("the entropy policy needs the number of classes (>= 2)")
        self.num_classes = int(num_classes)
        self._log_c = math.log(self.num_classes)

    def fire_mask(self, conf, pred, ent, threshold):
        return (1.0 - ent / self._log_c) >= threshold

    def fire_last(self, conf, pred, ent, threshold):
        return (1.0 - ent[-1] / self._log_c) >= threshold

    def describe(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes}


class PatiencePolicy(ExitPolicy):
    """PABEE: exit at the first IC where the last `q` + 1 exits (this one included) agree.

    The threshold is the patience, an integer >= 1; the calibration grid is 1..K-1.
    """

    name = "patience"

    def grid(self, num_exits: int) -> List[float]:
        return [float(p) for p in range(1, max(2, num_exits))]

    def fire_mask(self, conf, pred, ent, threshold):
        patience = int(round(float(threshold)))
        if patience < 1 or abs(patience - float(threshold)) > 1e-9:
            raise DeepslothError(f"patience must be a positive integer, got {threshold}")
        k, n = pred.shape
        fire = torch.zeros(k, n, dtype=torch.bool, device=pred.device)
        streak = torch.zeros(n, dtype=torch.long, device=pred.device)
        for i in range(1, k):
            same = pred[i] == pred[i - 1]
            streak = torch.where(same, streak + 1, torch.zeros_like(streak))
            fire[i] = streak >= patience
        return fire


def make_policy(policy: Optional[str | ExitPolicy] = "confidence", num_classes: Optional[int] = None) -> ExitPolicy:
    """A policy from its name (`confidence`, `entropy`, `patience`) or pass one through."""
    if policy is None:
        return ConfidencePolicy()
    if isinstance(policy, ExitPolicy):
        return policy
    name = str(policy).lower()
    if name == "confidence":
        return ConfidencePolicy()
    if name == "entropy":
        return EntropyPolicy(num_classes)
    if name == "patience":
        return PatiencePolicy()
    raise DeepslothError(f"unknown exit policy {policy!r}; choose from {', '.join(POLICIES)}")


def check_threshold(policy: ExitPolicy, threshold: float) -> float:
    """`threshold` as a float, or a `DeepslothError` when `policy` cannot use it. A policy that wraps
    another one in its attribute `base` (an exit cap) takes the thresholds of the policy it wraps."""
    inner = getattr(policy, "base", None)
    if isinstance(inner, ExitPolicy):
        return check_threshold(inner, threshold)
    threshold = float(threshold)
    if isinstance(policy, PatiencePolicy):
        if threshold < 1 or threshold != int(threshold):
            raise DeepslothError(f"patience must be a positive integer, got {threshold}")
    elif not 0.0 <= threshold <= 1.0:
        raise DeepslothError(f"threshold must be in [0, 1], got {threshold}")
    return threshold


__all__ = ["POLICIES", "THRESHOLD_GRID", "ExitPolicy", "ConfidencePolicy", "EntropyPolicy",
           "PatiencePolicy", "make_policy", "exit_stats", "first_firing",
           "check_threshold"]
