"""Attack objectives: functions of the exit logits (and labels) returning one value per input.

An objective has the signature ``objective(logits, labels) -> Tensor[N]`` where `logits` is
the model's output, a list of K tensors [N, C] (internal classifiers first, final last), and
`labels` is an int64 tensor [N] or None. Attacks differentiate ``objective(...).sum()``, so
each input's gradient is that of its own value, independent of the batch it is in.

An objective may declare which exits it reads in an `exits` attribute: "final" (only the final
exit: the network runs without its internal classifiers), an int i (exits 0..i: the network stops
after exit i), or "all" (the default). Attacks then run only the part of the network it needs
(`exits_needed`); the logits it reads are the same either way.

Direction is the attack's business: `PGD` *maximises* its objective, `DeepSloth` *minimises*
its objective (by default `uniform_ic_loss`). Any callable with this signature can be passed.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

Logits = Sequence[torch.Tensor]
Objective = Callable[[Logits, Optional[torch.Tensor]], torch.Tensor]


def _need_labels(labels: Optional[torch.Tensor], name: str) -> torch.Tensor:
    if labels is None:
        raise ValueError(f"objective {name!r} needs labels")
    return labels


def final_ce(logits: Logits, labels: Optional[torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the final exit (the PGD objective)."""
    return F.cross_entropy(logits[-1].float(), _need_labels(labels, "final"), reduction="none")


final_ce.exits = "final"


def exit_ce(index: int, num_exits: Optional[int] = None) -> Objective:
    """Cross-entropy of one exit (0-based; -1 is the final exit): PGD-max runs one per exit.

    With `num_exits`, exit i < K-1 declares that it needs exits 0..i only."""
    last = index == -1 or (num_exits is not None and index == num_exits - 1)
    pick = -1 if last else index   # the final exit is the last logits in any view of the outputs

    def objective(logits: Logits, labels: Optional[torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits[pick].float(), _need_labels(labels, "exit"), reduction="none")
    objective.__name__ = f"exit_ce_{index}"
    objective.exits = "final" if last else (int(index) if num_exits is not None else "all")
    return objective


def exits_needed(objective) -> Union[str, int]:
    """"final", an exit index i (exits 0..i) or "all": what `objective` reads."""
    return getattr(objective, "exits", "all")


def _stacked_ce(logits: Logits, labels: torch.Tensor) -> torch.Tensor:
    """[K, N] cross-entropy of every exit against `labels`."""
    stacked = torch.stack([l.float() for l in logits])          # [K, N, C]
    logp = torch.log_softmax(stacked, dim=-1)
    idx = labels.view(1, -1, 1).expand(stacked.shape[0], -1, 1)
    return -logp.gather(-1, idx).squeeze(-1)


def mean_ce(logits: Logits, labels: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over all K exits (the PGD-avg objective)."""
    return _stacked_ce(logits, _need_labels(labels, "avg")).mean(dim=0)


def sum_ce(logits: Logits, labels: Optional[torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy over all K exits (how PGD-max picks its chain per input)."""
    return _stacked_ce(logits, _need_labels(labels, "sum")).sum(dim=0)


def uniform_ic_loss(logits: Logits, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """DeepSloth's loss (docs/method.md §5.2), to be *minimised*: sum over the internal classifiers (every
    exit but the final one) of CE(uniform, softmax(f_i(x))) = -(1/C) sum_c log p_{i,c}.
    Uses no labels. A single-exit model has no ICs, so its loss is 0."""
    ics = logits[:-1]
    if not ics:
        return logits[-1].float().sum(dim=-1) * 0.0   # zero, but still a function of the input
    stacked = torch.stack([l.float() for l in ics])               # [K-1, N, C]
    return -torch.log_softmax(stacked, dim=-1).mean(dim=-1).sum(dim=0)


OBJECTIVES = {"final": final_ce, "avg": mean_ce, "sum": sum_ce, "deepsloth": uniform_ic_loss}


def get_objective(spec: Union[str, Objective]) -> Objective:
    """An objective by name ('final', 'avg', 'sum', 'deepsloth') or the callable itself."""
    if callable(spec):
        return spec
    if spec not in OBJECTIVES:
        raise ValueError(f"unknown objective {spec!r}; choose from {', '.join(OBJECTIVES)} "
                         f"or pass a callable(logits, labels) -> Tensor[N]")
    return OBJECTIVES[spec]


def objective_name(obj: Union[str, Objective]) -> str:
    if isinstance(obj, str):
        return obj
    for name, fn in OBJECTIVES.items():
        if fn is obj:
            return name
    return getattr(obj, "__name__", type(obj).__name__)


__all__ = ["Objective", "exits_needed", "final_ce", "exit_ce", "mean_ce", "sum_ce",
           "uniform_ic_loss", "OBJECTIVES", "get_objective", "objective_name"]
