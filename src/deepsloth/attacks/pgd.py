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

PGD-max runs its K chains together: the chains' copies of the batch are stacked into one batch,
and one forward and one backward per step give every chain the gradient of its own exit's
cross-entropy. On a `MultiExitNet` or a model with attached exits (`deepsloth.models.attach`)
each chain's rows leave the network after its exit, so a step costs what the K separate chains
cost, in one pass instead of K; other models run the full network on the stacked batch. The
random starts are drawn chain after chain, so the result is that of running the chains one
after another. At most `MAX_STACKED_ELEMENTS` input elements (per device type) are stacked at
once; more chains than that run in groups (same result).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..exits.forward import as_exit_list
from ..exits.runtime import supports_early_exit
from ..models.attach import AttachedExits
from ..models.sdn import MultiExitNet, select_rows
from ..precision import autocast
from ..validate import check_count, check_eps, check_positive
from .base import Attack
from .params import Param, Params
from .norms import check_norm, clip_to_ball, random_in_ball, steepest_direction
from .objectives import Objective, get_objective, objective_name, sum_ce

# docs/method.md §5.1 for l_inf (eps 8/255, 20 steps of 0.001). The l_2 / l_1 values are this
# package's choices (the paper defines the baselines in l_inf only).
PGD_DEFAULTS: Dict[str, Dict[str, float]] = {
    "linf": {"eps": 8 / 255, "steps": 20, "step_size": 0.001},
    "l2": {"eps": 0.5, "steps": 20, "step_size": 0.05},
    "l1": {"eps": 8.0, "steps": 20, "step_size": 1.0},
}

# PGD-max stacks its chains' copies of the batch into one forward/backward of at most this many
# input elements, per device type (other devices: "cuda"); more chains run in groups, and a batch
# larger than the limit runs one chain at a time. The result does not depend on it. On a GPU the
# stack amortises the per-kernel launch cost (2**21: about 680 CIFAR-10 or 170 Tiny ImageNet
# images); on a CPU a step is compute-bound and batches much larger than an ordinary one only
# leave the caches (all 28 chains of a ResNet-56 SDN at once, 3,584 images, ran 2.4x slower than
# one chain after another), so there it stacks about one ordinary batch (2**19: 170 CIFAR-10 images).
MAX_STACKED_ELEMENTS: Dict[str, int] = {"cpu": 2 ** 19, "cuda": 2 ** 21}


def stacked_element_limit(device: torch.device) -> int:
    """How many input elements PGD-max stacks into one forward/backward on `device`."""
    return MAX_STACKED_ELEMENTS.get(torch.device(device).type, MAX_STACKED_ELEMENTS["cuda"])


def _reduction(value: str) -> str:
    if value not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {value!r}")
    return value


class PGD(Attack):
    name = "pgd"
    PARAMS = Params(
        "pgd",
        Param("eps", "perturbation budget (default per norm: PGD_DEFAULTS)", flag="--eps"),
        Param("steps", "iterations", flag="--steps", check=lambda v: check_count("steps", v)),
        Param("step_size", "step size", flag="--step-size", check=lambda v: check_positive("step_size", v)),
        Param("alpha", "the step size under its torchattacks name", record="never"),
        Param("random_start", "start uniformly in the ball (else at x)", default=True, flag="--random-start",
              check=bool),
        Param("percentile", "l_1: share of gradient coordinates that move (sparse sign)", default=99.0,
              record_norms=("l1",), check=float),
        Param("targeted", "move towards the labels given (target classes) by descent", default=False,
              record="changed", check=bool),
        Param("reduction", "sum: each input's step is independent of its batch; mean: torchattacks' batch mean",
              default="sum", record="changed", check=_reduction),
    )

    def __init__(self, model: nn.Module, objective: Union[str, Objective] = "final", norm: str = "linf",
                 seed: int = 0, device=None, **options: Any):
        super().__init__(model, seed=seed, device=device)
        self.norm = check_norm(norm)
        if options.get("alpha") is not None:
            if options.get("step_size") is not None and float(options["step_size"]) != float(options["alpha"]):
                raise ValueError("give the step size once: step_size or alpha")
            options = dict(options, step_size=options["alpha"])
        self.options = self.PARAMS.resolve(options, scope="sample", defaults=PGD_DEFAULTS[self.norm])
        self.options["alpha"] = None
        self.options["eps"] = check_eps(self.options["eps"], self.norm)
        o = self.options
        self.eps, self.steps, self.step_size = o["eps"], o["steps"], o["step_size"]
        self.random_start, self.percentile = o["random_start"], o["percentile"]
        self.targeted, self.reduction, self.amp = o["targeted"], o["reduction"], o["amp"]
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
        return {"attack": self.variant, "objective": objective_name(self.objective), "norm": self.norm,
                **self.spec_params(), "seed": self.seed}

    def spec_params(self) -> Dict[str, Any]:
        self.options.update(targeted=self.targeted, amp=self.amp)   # switches set after construction
        return self.PARAMS.spec(self.options, norm=self.norm, scope="sample")

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
        n = x.shape[0]
        per_group = max(1, stacked_element_limit(x.device) // max(1, x.numel()))
        best, best_score = x.clone(), torch.full((n,), -float("inf"), device=x.device)
        keep_shape = (-1,) + (1,) * (x.dim() - 1)
        for first in range(0, num_exits, per_group):
            exits = list(range(first, min(num_exits, first + per_group)))
            cands = self.exit_chains(x, y, exits, generator)              # [G, N, ...]
            with torch.no_grad():
                scores = sum_ce(self.logits(cands.flatten(0, 1)), y.repeat(len(exits))).view(len(exits), n)
            for cand, score in zip(cands, scores):   # in exit order: ties keep the earlier exit
                better = score > best_score
                best = torch.where(better.view(keep_shape), cand, best)
                best_score = torch.where(better, score, best_score)
        return best

    def exit_chains(self, x: torch.Tensor, y: torch.Tensor, exits: Sequence[int],
                    generator: torch.Generator) -> torch.Tensor:
        """PGD chains maximising the cross-entropy of each exit in `exits` (ascending, 0-based),
        run as one stacked batch; returns [len(exits), N, ...], chain j the one of exit exits[j].

        The same as `chain(x, y, exit_ce(e, K), generator)` for each e in turn: the random starts
        are drawn in that order, and each chain's gradient is that of its own exit."""
        g, n = len(exits), x.shape[0]
        xs = torch.cat([x] * g)        # chain j: rows j*N .. (j+1)*N - 1 (in x's memory format)
        if self.random_start:
            noise = torch.cat([random_in_ball(x.shape, self.norm, self.eps, generator, device=x.device)
                               for _ in exits])
            x_adv = clip_to_ball(xs + noise, xs, self.norm, self.eps)
        else:
            x_adv = xs.clone()
        size = -self.step_size if self.targeted else self.step_size
        for _ in range(self.steps):
            xi = x_adv.detach().requires_grad_(True)
            losses = [F.cross_entropy(z.float(), y, reduction="none") for z in self._chain_logits(xi, exits, n)]
            loss = sum(l.mean() if self.reduction == "mean" else l.sum() for l in losses)
            (grad,) = torch.autograd.grad(loss, xi)
            step = steepest_direction(grad, self.norm, self.percentile)
            x_adv = clip_to_ball(x_adv + size * step, xs, self.norm, self.eps)
        return x_adv.view((g,) + tuple(x.shape))

    def _chain_logits(self, x: torch.Tensor, exits: Sequence[int], n: int) -> List[torch.Tensor]:
        """Exit exits[j]'s logits of rows j*n .. (j+1)*n - 1 of `x`, from one forward. Where the model
        lets inputs leave (a `MultiExitNet`, attached exits) each chain's rows leave after its exit;
        otherwise the full network runs on every row."""
        if self.normalization is not None:
            m, s = self.normalization
            x = (x - m.to(x.device)) / s.to(x.device)
        model, pending, out = self.model, list(exits), []
        with autocast(x.device, self.amp):
            if isinstance(model, MultiExitNet) and supports_early_exit(model):
                h = model.stem(x)
                for i, (block, ic) in enumerate(zip(model.blocks, model.ics)):
                    if not pending:
                        break
                    h = block(h)
                    if pending[0] == i:
                        out.append(ic(select_rows(h, slice(0, n))))
                        h = select_rows(h, slice(n, None))
                        pending.pop(0)
                if pending:                       # the final exit's chain
                    out.append(model.head(h))
            elif isinstance(model, AttachedExits) and supports_early_exit(model):
                def leave_after(i: int, z: torch.Tensor) -> Optional[torch.Tensor]:
                    if not pending or pending[0] != i:
                        return None
                    out.append(z[:n])
                    pending.pop(0)
                    leave = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
                    leave[:n] = True
                    return leave
                final = model.forward_early(x, leave_after)
                if pending:
                    out.append(final)
            else:
                full = as_exit_list(model(x))
                out = [full[e][j * n:(j + 1) * n] for j, e in enumerate(exits)]
        return out


__all__ = ["PGD", "PGD_DEFAULTS"]
