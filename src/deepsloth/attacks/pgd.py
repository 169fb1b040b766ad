"""PGD and its multi-exit variants, the accuracy-attack baselines of docs/method.md §5.1.

    PGD(model, objective="final")   maximise the final exit's cross-entropy (PGD)
    PGD(model, objective="avg")     maximise the mean cross-entropy over all exits (PGD-avg)
    PGD(model, objective="max")     one chain per exit i maximising CE_i; per input keep the
                                    chain with the largest summed CE over all exits (PGD-max)
    PGD(model, objective=fn)        any fn(logits, labels) -> Tensor[N], maximised

torchattacks-style construction is accepted too: `alpha=` is the step size,
`targeted=True` (or `set_mode_targeted_by_label()`) moves towards the labels passed to the call
(the target classes) by minimising the objective, `reduction="mean"` differentiates the batch
mean like torchattacks does (the default "sum" makes each input's step independent of its
batch), and `set_normalization_used(mean, std)` serves models that expect normalised inputs.
Final-exit PGD runs the network without its internal classifiers (`objectives.exits_needed`).

Each step: x' <- proj_ball(x' + step_size * direction(grad)), clamped to [0, 1], where the
ball is centred on the clean x and direction is sign (l_inf), the unit gradient (l_2) or
the sparse sign of `norms.sparse_sign` (l_1). The random start is uniform in the ball and
drawn from the attack's seeded generator. Without labels the final exit's clean
predictions are used (no label leaking).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from ..validate import check_count, check_eps, check_positive
from .base import Attack
from .norms import check_norm, clip_to_ball, random_in_ball, steepest_direction
from .objectives import Objective, exit_ce, get_objective, objective_name, sum_ce

# docs/method.md §5.1 for l_inf (eps 8/255, 20 steps of 0.001). The l_2 / l_1 values are this
# package's choices (the paper defines the baselines in l_inf only).
PGD_DEFAULTS: Dict[str, Dict[str, float]] = {
    "linf": {"eps": 8 / 255, "steps": 20, "step_size": 0.001},
    "l2": {"eps": 0.5, "steps": 20, "step_size": 0.05},
    "l1": {"eps": 8.0, "steps": 20, "step_size": 1.0},
}


class PGD(Attack):
    name = "pgd"

    def __init__(self, model: nn.Module, objective: Union[str, Objective] = "final",
                 norm: str = "linf", eps: Optional[float] = None, steps: Optional[int] = None,
                 step_size: Optional[float] = None, random_start: bool = True, seed: int = 0,
                 percentile: float = 99.0, device=None, *, alpha: Optional[float] = None,
                 targeted: bool = False, reduction: str = "sum"):
        super().__init__(model, seed=seed, device=device)
        self.norm = check_norm(norm)
        d = PGD_DEFAULTS[self.norm]
        if alpha is not None:
            if step_size is not None and float(step_size) != float(alpha):
                raise ValueError("give the step size once: step_size or alpha")
            step_size = alpha
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.targeted, self.reduction = bool(targeted), reduction
        self.eps = check_eps(d["eps"] if eps is None else eps, self.norm)
        self.steps = check_count("steps", d["steps"] if steps is None else steps)
        self.step_size = check_positive("step_size", d["step_size"] if step_size is None else step_size)
        self.random_start = bool(random_start)
        self.percentile = float(percentile)
        self.objective = objective
        if objective != "max":
            get_objective(objective)  # validate early

    # -- torchattacks-style switches ----------------------------------------------------------
    def set_mode_targeted_by_label(self, quiet: bool = True) -> "PGD":
        """From now on the labels given to a call are target classes (reached by descent)."""
        self.targeted = True
        return self

    def set_mode_default(self) -> "PGD":
        self.targeted = False
        return self

    @property
    def alpha(self) -> float:
        return self.step_size

    @property
    def variant(self) -> str:
        return {"final": "pgd", "avg": "pgd-avg", "max": "pgd-max"}.get(
            self.objective if isinstance(self.objective, str) else "", "pgd-custom")

    def config(self) -> Dict[str, Any]:
        cfg = {"attack": self.variant, "objective": objective_name(self.objective),
               "norm": self.norm, "eps": self.eps, "steps": self.steps,
               "step_size": self.step_size, "random_start": self.random_start, "seed": self.seed}
        if self.norm == "l1":
            cfg["percentile"] = self.percentile
        if self.targeted:
            cfg["targeted"] = True
        if self.reduction != "sum":
            cfg["reduction"] = self.reduction
        return cfg

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor],
                generator: torch.Generator) -> torch.Tensor:
        x = self.prepare(x)
        if y is None:
            if self.targeted:
                raise ValueError("targeted PGD needs the target labels")
            y = self.predict(x)
        if self.objective == "max":
            return self._pgd_max(x, y, generator)
        return self.chain(x, y, get_objective(self.objective), generator)

    def chain(self, x: torch.Tensor, y: torch.Tensor, objective: Objective,
              generator: torch.Generator) -> torch.Tensor:
        """One PGD run maximising `objective` from a (seeded) random start."""
        if self.random_start:
            noise = random_in_ball(x.shape, self.norm, self.eps, generator, device=x.device)
            x_adv = clip_to_ball(x + noise, x, self.norm, self.eps)
        else:
            x_adv = x.clone()
        size = -self.step_size if self.targeted else self.step_size
        for _ in range(self.steps):
            grad = self.input_grad(x_adv, objective, y, self.reduction)
            step = steepest_direction(grad, self.norm, self.percentile)
            x_adv = clip_to_ball(x_adv + size * step, x, self.norm, self.eps)
        return x_adv

    def _pgd_max(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            num_exits = len(self.logits(x[:1]))
        best, best_score = x.clone(), torch.full((x.shape[0],), -float("inf"), device=x.device)
        for i in range(num_exits):   # chain i runs the network only up to exit i
            cand = self.chain(x, y, exit_ce(i, num_exits), generator)
            with torch.no_grad():
                score = sum_ce(self.logits(cand), y)
            better = score > best_score
            best = torch.where(better.view((-1,) + (1,) * (x.dim() - 1)), cand, best)
            best_score = torch.where(better, score, best_score)
        return best


__all__ = ["PGD", "PGD_DEFAULTS"]
