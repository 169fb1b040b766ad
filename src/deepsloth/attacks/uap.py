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

With `pass_checkpoint` set to a file path (experiments.craft does this for a result written to
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
from .norms import project


class UAP(Attack):
    name = "uap"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, overshoot: float = 0.02,
                 max_iter_df: int = 10, n_images: int = 100, max_passes: int = 100,
                 target_fooling: float = 0.8, candidates: int = 10, batch_size: int = 1,
                 norm: str = "linf", seed: int = 0, device=None):
        super().__init__(model, seed=seed, device=device)
        if candidates < 2:
            raise ValueError("DeepFool needs at least 2 candidate classes")
        self.eps = check_eps(eps, "linf")
        self.overshoot = check_number("overshoot", overshoot, low=0.0)
        self.max_iter_df = check_count("max_iter_df", max_iter_df)
        self.n_images, self.max_passes = check_count("n_images", n_images), check_count("max_passes", max_passes)
        self.target_fooling = check_number("target_fooling", target_fooling, low=0.0, high=1.0, low_open=True)
        self.candidates, self.batch_size = int(candidates), check_count("batch_size", batch_size)
        self.norm = norm
        self.last_info: Dict[str, Any] = {}
        # a file where the state after each finished pass is kept (None: not kept)
        self.pass_checkpoint: Optional[Path] = None

    def config(self) -> Dict[str, Any]:
        return {"attack": "uap", "norm": self.norm, "eps": self.eps, "overshoot": self.overshoot,
                "max_iter_df": self.max_iter_df, "n_images": self.n_images,
                "max_passes": self.max_passes, "target_fooling": self.target_fooling,
                "candidates": self.candidates, "batch_size": self.batch_size, "seed": self.seed}

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x, "final")[-1]   # the backbone only: the ICs play no part in UAP

    def deepfool(self, x0: torch.Tensor, label: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Batched DeepFool on the final exit from x0 for inputs currently classified `label`.

        Returns ((1 + overshoot) * r_tot [B,...], flipped [B] bool: the label changed within
        `max_iter_df` iterations). The gradients of all candidate margins come from one
        forward/backward of the input replicated once per candidate class.
        """
        b = x0.shape[0]
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
        kept = None if self.pass_checkpoint is None else Path(self.pass_checkpoint)
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
                still = self.predict(xa) == clean[chunk]
                if not bool(still.any()):
                    continue
                dr, flipped = self.deepfool(xa[still], clean[chunk][still])
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
