"""Universal adversarial perturbation (Moosavi-Dezfooli et al., 2017), the UAP baseline of
docs/method.md §5.1, built from DeepFool steps on the final exit.

    delta = UAP(model, eps=8/255, seed=0)(x_train)        # [3,H,W]

A fixed crafting set of `n_images` (100) inputs is chosen by a seeded permutation of the
inputs passed in. Each pass visits the set in a seeded order; for every input that the
current v does not fool yet (final-exit prediction on clamp(x + v) equals the clean one),
DeepFool (overshoot 0.02, at most 10 iterations) finds a minimal extra perturbation at
clamp(x + v); if DeepFool flipped the label within its iteration budget, v <- proj_linf(v + dr).
Passes stop when the fooling rate on the set reaches `target_fooling` (0.8) or after
`max_passes` (100). Nothing depends on the image size or the number of classes: DeepFool
considers the `candidates` (10) highest-scoring classes, or all when there are fewer.

With `resume_dir` set (`Attack.resume_dir`; experiments.craft sets it for a result written to
disk), the state after each finished pass (v, the generator, the fooling rate) is saved there, and
a killed run resumes from the last finished pass with the same result as an uninterrupted one.

`batch_size=1` is the original sequential algorithm. A larger batch visits that many inputs
at once and adds the mean of their DeepFool perturbations (faster, a slightly different
algorithm; recorded in `config()`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ..io import load_tensors, read_metadata, save_tensors
from ..validate import check_count, check_eps, check_number
from ..progress import progress
from .base import Attack
from .norms import check_norm, project
from .params import Param, Params


def _candidates(value: int) -> int:
    if int(value) < 2:
        raise ValueError("DeepFool needs at least 2 candidate classes")
    return int(value)


class UAP(Attack):
    name = "uap"
    PARAMS = Params(
        "uap",
        Param("eps", "l_inf budget", default=8 / 255, flag="--eps", check=lambda v: check_eps(v, "linf")),
        Param("overshoot", "DeepFool overshoot", default=0.02, check=lambda v: check_number("overshoot", v, low=0.0)),
        Param("max_iter_df", "DeepFool iterations per input", default=10, flag="--steps",
              check=lambda v: check_count("max_iter_df", v)),
        Param("n_images", "crafting images, chosen by a seeded permutation", default=100, flag="--craft-n",
              check=lambda v: check_count("n_images", v)),
        Param("max_passes", "at most this many passes over the crafting images", default=100, flag="--epochs",
              check=lambda v: check_count("max_passes", v)),
        Param("target_fooling", "stop once this share of the crafting images is fooled", default=0.8,
              check=lambda v: check_number("target_fooling", v, low=0.0, high=1.0, low_open=True)),
        Param("candidates", "DeepFool considers the top this-many classes", default=10, check=_candidates),
        Param("batch_size", "inputs visited at once (1: the original sequential algorithm)", default=1,
              check=lambda v: check_count("batch_size", v)),
    )

    def __init__(self, model: nn.Module, norm: str = "linf", seed: int = 0, device=None, **options: Any):
        super().__init__(model, seed=seed, device=device)
        if check_norm(norm) != "linf":
            raise ValueError(f"uap supports norm linf, not {norm}")
        self.norm = "linf"
        self.options = self.PARAMS.resolve(options, scope="universal")
        o = self.options
        self.eps, self.overshoot, self.max_iter_df = o["eps"], o["overshoot"], o["max_iter_df"]
        self.n_images, self.max_passes, self.target_fooling = o["n_images"], o["max_passes"], o["target_fooling"]
        self.candidates, self.batch_size, self.amp = o["candidates"], o["batch_size"], o["amp"]
        self.last_info: Dict[str, Any] = {}

    def config(self) -> Dict[str, Any]:
        return {"attack": "uap", "norm": self.norm, **self.spec_params(), "seed": self.seed}

    def spec_params(self) -> Dict[str, Any]:
        self.options["amp"] = self.amp
        return self.PARAMS.spec(self.options, norm=self.norm, scope="universal")

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x, "final")[-1]   # the backbone only: the ICs play no part in UAP

    def deepfool(self, x0: torch.Tensor, label: torch.Tensor,
                 logits0: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Batched DeepFool on the final exit from x0 for inputs currently classified `label`.

        Returns ((1 + overshoot) * r_tot [B,...], flipped [B] bool: the label changed within
        `max_iter_df` iterations). The gradients of all candidate margins come from one
        forward/backward of the input replicated once per candidate class. `logits0`: the final
        logits at x0 where the caller has them already (they choose the candidate classes).
        """
        b = x0.shape[0]
        if logits0 is None:
            with torch.no_grad():
                logits0 = self.final_logits(x0)
        k = min(self.candidates, logits0.shape[-1])
        # the other candidates: the k - 1 highest-scoring classes besides the current label
        others = logits0.scatter(1, label.view(-1, 1), float("-inf")).topk(k - 1, dim=-1).indices
        m = others.shape[1]
        rows = torch.arange(b * m, device=x0.device)
        lab_rep = label.repeat_interleave(m)
        oth_rep = others.reshape(-1)
        r_tot = torch.zeros_like(x0)
        active = torch.ones(b, dtype=torch.bool, device=x0.device)
        flat_dims = (-1,) + (1,) * (x0.dim() - 1)
        for it in range(self.max_iter_df + 1):
            xp = (x0 + (1 + self.overshoot) * r_tot).repeat_interleave(m, dim=0).requires_grad_(True)
            out = self.final_logits(xp)                                 # [B*m, C]
            active = active & (out.detach()[::m].argmax(dim=-1) == label)
            if it == self.max_iter_df or not bool(active.any()):
                break
            f = out[rows, oth_rep] - out[rows, lab_rep]                  # margins [B*m]
            (w,) = torch.autograd.grad(f.sum(), xp)
            w_norm = w.flatten(1).norm(dim=1).clamp_min(1e-12)
            pert = (f.detach().abs() / w_norm).view(b, m)
            best = pert.argmin(dim=1)
            pick = torch.arange(b, device=x0.device) * m + best
            step = (pert.gather(1, best.view(-1, 1)).view(flat_dims) + 1e-4) \
                * w[pick] / w_norm[pick].view(flat_dims)
            r_tot = r_tot + step * active.view(flat_dims)
        return (1 + self.overshoot) * r_tot, ~active

    def forward(self, x_all: torch.Tensor, y: Optional[torch.Tensor],
                generator: torch.Generator) -> torch.Tensor:
        n_all = int(x_all.shape[0])
        n = min(self.n_images, n_all)
        chosen = torch.randperm(n_all, generator=generator)[:n]
        xs = self.prepare(x_all[chosen.to(x_all.device)])
        clean = self.predict(xs)
        v = torch.zeros((1,) + tuple(xs.shape[1:]), device=xs.device)
        fooling, passes, done, resumed_seconds = 0.0, 0, 0, 0.0
        kept = None if self.resume_dir is None else Path(self.resume_dir) / "passes.safetensors"
        if kept is not None and kept.is_file():   # passes finished before a kill
            state, meta = load_tensors(kept), read_metadata(kept)
            v = state["v"].to(xs.device)
            generator.set_state(state["generator"])
            done, fooling = int(meta["passes"]), float(meta["fooling"])
            resumed_seconds = float(meta.get("seconds", 0.0))
        passes = done
        t0 = time.perf_counter()
        bar = progress(total=self.max_passes, desc="UAP passes", unit="pass", initial=done)
        # (a kept state that had reached the target already makes no more passes)
        for passes in range(done + 1, self.max_passes + 1) if fooling < self.target_fooling else ():
            for chunk in torch.randperm(n, generator=generator).split(self.batch_size):
                chunk = chunk.to(xs.device)
                xa = (xs[chunk] + v).clamp(0.0, 1.0)
                with torch.no_grad():
                    logits_a = self.final_logits(xa)   # also DeepFool's starting logits
                still = logits_a.argmax(dim=-1) == clean[chunk]
                if not bool(still.any()):
                    continue
                dr, flipped = self.deepfool(xa[still], clean[chunk][still], logits_a[still])
                if bool(flipped.any()):
                    v = project(v + dr[flipped].mean(dim=0, keepdim=True), self.norm, self.eps)
            fooling = float((self.predict((xs + v).clamp(0.0, 1.0)) != clean).float().mean())
            if kept is not None:
                save_tensors(kept, {"v": v.float(), "generator": generator.get_state()}, metadata={
                    "passes": str(passes), "fooling": repr(fooling),
                    "seconds": f"{resumed_seconds + time.perf_counter() - t0:.6f}"})
            bar.update(1)
            bar.set_postfix(fooling=f"{fooling:.2f}", target=self.target_fooling)
            if fooling >= self.target_fooling:
                break
        bar.close()
        self.last_info = {"n_images": n, "passes": passes, "fooling_rate": fooling}
        if done:
            self.last_info.update(resumed_passes=done, resumed_seconds=round(resumed_seconds, 3))
        return v[0]


__all__ = ["UAP"]
