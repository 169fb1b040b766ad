"""Compute caps: a defence that bounds how far any input can run into a multi-exit network.

A slowdown attack pushes inputs past every internal classifier (IC) to the final exit. A cap
at exit k removes that worst case by construction: no input runs past exit k, so the
worst-case cost of an input is the cost of exit k (`cap_cost`), whatever the attacker does.
The price is clean accuracy: inputs that the exit policy would have sent deeper are answered
early.

* `ExitCap(k, policy)` wraps an exit policy (default: the confidence policy). Exit indices
  are 0-based and k must be an IC: 0 <= k < K-1 for a network with K exits (the final exit
  is K-1).
* `LatencyCap(budget_ms, latency_model, policy)` is the same cap with k chosen from a
  latency budget in the partitioned device/server model (`deepsloth.metrics.latency`).

Answer rule of a capped policy, for every input:

* the base policy lets it leave at an exit i <= k (it fires there, and at no earlier exit):
  it leaves at i and answers with exit i's own prediction, exactly as without the cap;
* otherwise it is forced out at exit k and answers with the prediction of the most confident
  exit among 0..k (largest max softmax; on a tie, the later exit). An input whose base policy
  fires exactly at k is not forced: it answers with exit k's prediction.

A capped policy is an ordinary `ExitPolicy`, so calibration (`threshold_sweep`,
`calibrate_thresholds`, `calibration_for`), `evaluate_threshold` / `evaluate_exits` and the
early-exit runtime (`EarlyExitRunner`, which really stops at exit k) all apply the cap and
agree with each other. Thresholds are those of the base policy. `describe()` names the cap and
the base policy, so cached calibrations of capped and uncapped policies never mix. The
runtime's per-input `confidence` stays the max softmax of the exit where the input left
(exit k for a forced input), while its prediction follows the rule above.

    from deepsloth.defences.caps import ExitCap, LatencyCap, cap_cost
    capped = ExitCap(3)                                   # confidence policy, capped at exit 3
    evaluate_threshold(outputs, labels, costs, 0.8, capped)
    EarlyExitRunner(model, 0.8, policy=capped).run(images)
    cap_cost(costs, 3)                                    # worst-case normalised cost under the cap
    LatencyCap(40.0, latency_model)                       # the deepest exit answering within 40 ms
"""
from __future__ import annotations

import math
import numbers
from typing import List, Optional, Sequence, Tuple

import torch

from ..errors import DeepslothError
from ..exits.forward import ExitOutputs
from ..exits.policies import ExitPolicy, first_firing, make_policy
from ..metrics.latency import LatencyModel


def most_confident_exit(conf: torch.Tensor) -> torch.Tensor:
    """0-based index [N] of the exit with the largest max softmax in `conf` [k, N]; on a tie the
    later exit (an input with a NaN confidence gets exit 0)."""
    best = conf.max(dim=0, keepdim=True).values
    rows = torch.arange(conf.shape[0], device=conf.device).unsqueeze(1)
    return torch.where(conf == best, rows, torch.zeros_like(rows)).max(dim=0).values


def _cap_index(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise DeepslothError(f"the exit cap must be an integer exit index, got {k!r}")
    if int(k) < 0:
        raise DeepslothError(f"the exit cap must be a 0-based exit index >= 0, got {int(k)}")
    return int(k)


def _check_cap(k: int, num_exits: int) -> None:
    if k >= num_exits - 1:
        raise DeepslothError(f"exit cap {k} is not an internal classifier of this {num_exits}-exit model: "
                             f"the cap must be a 0-based exit index in 0..{num_exits - 2}")


class ExitCap(ExitPolicy):
    """An exit policy that never lets an input run past exit `k` (0-based, an IC).

    `policy` is the policy being capped (a name or an `ExitPolicy`; default `confidence`);
    `num_classes` is passed on when the name needs it (`entropy`). See the module docstring
    for the answer rule.
    """

    def __init__(self, k: int, policy: Optional[str | ExitPolicy] = None, num_classes: Optional[int] = None):
        self.k = k = _cap_index(k)
        self.base = make_policy(policy, num_classes)
        self.name = f"{self.base.name}+cap{k}"

    # ------------------------------------------------------------------ decisions

    def grid(self, num_exits: int) -> List[float]:
        return self.base.grid(num_exits)

    def fire_mask(self, conf, pred, ent, threshold):
        """The base policy's decisions, with every exit from k on firing (causal: row k does not look
        ahead, so the runtime stops at exit k too)."""
        fire = self.base.fire_mask(conf, pred, ent, threshold)
        if fire.shape[0] > self.k:
            fire = fire.clone()
            fire[self.k:] = True
        return fire

    def fire_last(self, conf, pred, ent, threshold):
        if len(conf) > self.k:
            return torch.ones_like(conf[-1], dtype=torch.bool)
        return self.base.fire_last(conf, pred, ent, threshold)

    def exit_index(self, outputs: ExitOutputs, threshold: float) -> torch.Tensor:
        _check_cap(self.k, outputs.num_exits)
        return super().exit_index(outputs, threshold)

    # ------------------------------------------------------------------ answers

    def exit_predictions(self, outputs: ExitOutputs, threshold: float) -> Tuple[torch.Tensor, torch.Tensor]:
        """(exit index, answer) of each input under the answer rule of the module docstring."""
        k = self.k
        _check_cap(k, outputs.num_exits)
        base_fire = self.base.fire_mask(outputs.confidence[:-1], outputs.prediction[:-1],
                                        outputs.entropy[:-1], threshold)
        fire = base_fire.clone()
        fire[k:] = True
        idx = first_firing(fire).long()
        own = outputs.prediction.gather(0, idx.unsqueeze(0)).squeeze(0)
        forced = (idx == k) & ~base_fire[k]
        best = most_confident_exit(outputs.confidence[:k + 1])
        fallback = outputs.prediction[:k + 1].gather(0, best.unsqueeze(0)).squeeze(0)
        return idx, torch.where(forced, fallback, own)

    def answer(self, conf, pred, ent, threshold, final: bool = False):
        """The runtime view of `exit_predictions`: at exit k, inputs the base policy does not fire for
        answer with the most confident of exits 0..k; before k, every exit answers for itself."""
        i = len(pred) - 1
        if final:   # a valid cap stops every input before the final exit
            _check_cap(self.k, i + 1)
        if i != self.k:
            return pred[-1]
        fired = self.base.fire_last(conf, pred, ent, threshold)
        preds = torch.stack(list(pred))
        best = most_confident_exit(torch.stack(list(conf)))
        fallback = preds.gather(0, best.unsqueeze(0)).squeeze(0)
        return torch.where(fired, pred[-1], fallback)

    # ------------------------------------------------------------------ reporting

    def describe(self) -> dict:
        return {"name": self.name, "cap": self.k, "base": self.base.describe()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.k}, policy={self.base!r})"


def latency_cap_exit(budget_ms: float, latency_model: LatencyModel) -> Optional[int]:
    """The deepest exit (0-based) such that it and every exit before it answer within `budget_ms`
    under `latency_model` (T of `LatencyModel.exit_latency`, whose list index is already the 0-based
    exit index). None when the whole network, final exit included, answers within the budget (no
    cap is needed); a `DeepslothError` when not even exit 0 does.

    Exit latencies grow with depth in any model built from cumulative times, so this is the largest
    k with T(k) <= budget; requiring the whole prefix keeps the bound "every answer within the
    budget" true for a measured model whose times are not perfectly monotone.
    """
    budget_ms = float(budget_ms)
    if not math.isfinite(budget_ms) or budget_ms <= 0:
        raise DeepslothError(f"the latency budget must be a positive number of milliseconds, got {budget_ms:g}")
    times_ms = [1000.0 * t for t in latency_model.exit_latency()]
    tol = 1e-9 * max(1.0, budget_ms)   # seconds -> milliseconds rounding must not drop an exit at the budget
    k = -1
    for t in times_ms:
        if t > budget_ms + tol:
            break
        k += 1
    if k < 0:
        raise DeepslothError(f"latency budget {budget_ms:g} ms is below the latency of exit 0 "
                             f"({times_ms[0]:.4g} ms): no exit answers within it")
    return None if k == len(times_ms) - 1 else k


class LatencyCap(ExitCap):
    """`ExitCap` at the deepest exit answering within `budget_ms` in the device/server latency model
    (`latency_cap_exit`). Every input is then answered within the budget. A budget below exit 0's
    latency, or one the final exit meets (nothing to cap), is a `DeepslothError`."""

    def __init__(self, budget_ms: float, latency_model: LatencyModel, policy: Optional[str | ExitPolicy] = None,
                 num_classes: Optional[int] = None):
        k = latency_cap_exit(budget_ms, latency_model)
        if k is None:
            final_ms = 1000.0 * latency_model.exit_latency()[-1]
            raise DeepslothError(f"latency budget {float(budget_ms):g} ms is met by the final exit "
                                 f"({final_ms:.4g} ms): nothing to cap")
        super().__init__(k, policy, num_classes)
        self.budget_ms = float(budget_ms)
        self.latency_model = latency_model
        self.worst_case_ms = max(1000.0 * t for t in latency_model.exit_latency()[:k + 1])

    def describe(self) -> dict:
        return {"name": self.name, "cap": self.k, "budget_ms": self.budget_ms, "base": self.base.describe()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.budget_ms:g} ms -> exit {self.k}, policy={self.base!r})"


def cap_cost(costs: Sequence[float], k: int) -> float:
    """Worst-case normalised cost of an input under a cap at exit `k` (0-based): C_k / C_K, from
    cumulative per-exit costs (ops, or already normalised ones)."""
    costs = [float(c) for c in costs]
    if not 0 <= int(k) < len(costs):
        raise DeepslothError(f"exit {k} is not an exit of a {len(costs)}-exit model")
    if costs[-1] <= 0:
        raise DeepslothError("the final exit's cost must be positive")
    return max(costs[:int(k) + 1]) / costs[-1]


def capped_worst_case_counts(num_exits: int, k: int) -> List[int]:
    """The exit histogram of a complete slowdown under a cap at exit `k`: every input forced out at
    k (for `LatencyModel.expected_latency`, `efficacy`, `mean_cost`)."""
    k = _cap_index(k)
    _check_cap(k, int(num_exits))
    return [1 if i == k else 0 for i in range(int(num_exits))]


__all__ = ["ExitCap", "LatencyCap", "cap_cost", "capped_worst_case_counts", "latency_cap_exit",
           "most_confident_exit"]
