"""The early-exit capability (EEC) curve and efficacy, exactly as docs/method.md §4.4 defines them.

With K exits, c_i the normalised cumulative cost of exit i (c_K = 1), n_i the number of
inputs that exit at IC i and N the total:

    x = [0, c_1, ..., c_{K-1}, 1]
    y = [0, n_1/N, (n_1+n_2)/N, ..., sum_{i<K} n_i/N, 1]
    efficacy = trapezoidal area under (x, y)       (np.trapezoid)

1 means every input exits at no cost; about 0 means every input runs to the end.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import DeepslothError


def _as_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def exit_counts(exit_indices, num_exits: int) -> np.ndarray:
    """Histogram of 0-based exit indices: n[i] = number of inputs answered by exit i."""
    idx = _as_numpy(exit_indices).astype(np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= num_exits):
        raise DeepslothError(f"exit indices must lie in 0..{num_exits - 1}")
    return np.bincount(idx, minlength=num_exits)


def _counts(exits, num_exits: int, indices: Optional[bool]) -> np.ndarray:
    arr = _as_numpy(exits)
    if indices is None:  # counts have one entry per exit; anything else is a list of indices
        indices = arr.ndim != 1 or arr.shape[0] != num_exits
    if indices:
        return exit_counts(arr, num_exits)
    if np.any(arr < 0):
        raise DeepslothError("exit counts must be non-negative")
    return arr.astype(np.float64)


def eec_curve(exits, costs: Sequence[float], *, indices: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(x, y) of the EEC curve.

    `exits` is either the exit histogram (length K = len(costs)) or one 0-based exit index
    per input; it is read as a histogram exactly when its length is K, so pass
    `indices=True` when you have exactly K inputs. `costs` are the normalised cumulative
    costs c_1..c_K of the K exits (the last one is the whole network, 1).
    """
    c = np.asarray(costs, dtype=np.float64).ravel()
    k = c.shape[0]
    if k < 1:
        raise DeepslothError("need the cost of at least one exit")
    n = _counts(exits, k, indices)
    total = float(n.sum())
    if total <= 0:
        raise DeepslothError("the EEC curve needs at least one input")
    x = np.concatenate([[0.0], c[:-1], [1.0]])
    y = np.concatenate([[0.0], np.cumsum(n[:-1]) / total, [1.0]])
    return x, y


def efficacy(exits, costs: Sequence[float], *, indices: Optional[bool] = None) -> float:
    """Area under the EEC curve (docs/method.md §4.4); see `eec_curve` for the arguments."""
    x, y = eec_curve(exits, costs, indices=indices)
    return float(np.trapezoid(y, x))


def efficacy_reduction(clean: float, adversarial: float) -> float:
    """(eff_clean - eff_adv) / eff_clean; 1 means the attack removed all early exits."""
    if clean <= 0:
        raise DeepslothError(f"efficacy reduction is undefined for a clean efficacy of {clean:g}")
    return float((clean - adversarial) / clean)


def mean_cost(exits, costs: Sequence[float], *, indices: Optional[bool] = None) -> float:
    """Average normalised cost paid per input: sum_i n_i c_i / N."""
    c = np.asarray(costs, dtype=np.float64).ravel()
    n = _counts(exits, c.shape[0], indices)
    if n.sum() <= 0:
        raise DeepslothError("mean cost needs at least one input")
    return float((n * c).sum() / n.sum())


__all__ = ["eec_curve", "efficacy", "efficacy_reduction", "exit_counts", "mean_cost"]
