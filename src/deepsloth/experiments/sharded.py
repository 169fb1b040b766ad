"""Crafting and evaluation split across torch.distributed ranks (docs/distributed.md).

* `craft_sharded`: per-sample cells are split by batch (rank r crafts batches r, r+w, ... with the
  seeds a single process would use); the finished batches are gathered to rank 0, which writes the
  same result file a one-process run writes. Universal and class-universal perturbations are crafted
  by rank 0 alone while the other ranks wait: they are cheap next to per-sample cells, and averaging
  gradients across ranks would change their numerics, so the file would no longer match a
  one-process run bit for bit.
* `outputs_sharded`: the all-exit forward over inputs, split by evaluation batch (the batch
  boundaries of one process, so every batch is computed the same way) and gathered to rank 0.

In one process both are the plain functions. Threshold calibration, comparisons and reports are cheap
and run on rank 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from ..attacks.registry import AttackSpec
from ..distributed import Dist
from ..exits.forward import ExitOutputs, collect_exit_outputs
from ..io import save_tensors
from .context import Context
from .craft import DEFAULT_BATCH, _batch_file, _read_batch, craft, craft_key, result_stem
from .results import Crafted


def craft_sharded(ctx: Context, spec: AttackSpec, dist: Dist, *, seed: int = 0, batch_size: int = DEFAULT_BATCH,
                  out_dir: Path | str, log: Callable[[str], None] = lambda s: None) -> Optional[Crafted]:
    """The crafted result on rank 0 (None on the other ranks); see the module docstring."""
    if not dist.active:
        return craft(ctx, spec, seed=seed, batch_size=batch_size, out_dir=out_dir, log=log)
    out = Path(out_dir)
    if spec.scope != "sample":
        crafted, err = None, ""
        if dist.is_main:
            try:
                crafted = craft(ctx, spec, seed=seed, batch_size=batch_size, out_dir=out, log=log)
            except Exception as exc:   # tell the waiting ranks instead of leaving them to time out
                err = f"{type(exc).__name__}: {exc}"
        dist.all_ok(not err, err)
        return crafted
    err = ""
    try:
        craft(ctx, spec, seed=seed, batch_size=batch_size, out_dir=out, shard=(dist.rank, dist.world), log=log,
              assemble=False)
    except Exception as exc:
        err = f"{type(exc).__name__}: {exc}"
    dist.all_ok(not err, err)
    stem = result_stem(spec, craft_key(ctx, spec, seed, batch_size))
    partial = out / f"{stem}.partial"
    final = out / f"{stem}.safetensors"
    starts = list(range(0, ctx.n, batch_size))[dist.rank::dist.world]
    mine: Dict[int, torch.Tensor] = {}
    if partial.is_dir():   # empty when the result was already complete
        for s in starts:
            if _batch_file(partial, s).is_file():
                mine[s] = _read_batch(_batch_file(partial, s))   # (images, crafting seconds)
    gathered = dist.gather(mine)
    if not dist.is_main:
        dist.barrier()
        return None
    if not final.is_file():
        partial.mkdir(parents=True, exist_ok=True)
        for part in gathered:
            for s, (images, seconds) in part.items():
                if not _batch_file(partial, s).is_file():
                    save_tensors(_batch_file(partial, s), {"images": images}, metadata={"seconds": f"{seconds:.6f}"})
    crafted = craft(ctx, spec, seed=seed, batch_size=batch_size, out_dir=out, log=log)
    dist.barrier()
    return crafted


def outputs_sharded(ctx: Context, images: torch.Tensor, dist: Dist, desc: str = "forward") -> Optional[ExitOutputs]:
    """All-exit outputs of `images` on rank 0 (None elsewhere), batches split across ranks."""
    if not dist.active:
        return ctx.outputs(images, desc=desc)
    bs = ctx.batch_size
    starts = list(range(0, len(images), bs))
    mine = {}
    for s in starts[dist.rank::dist.world]:
        o = collect_exit_outputs(ctx.model, images[s:s + bs], batch_size=bs, device=ctx.device, desc=desc)
        mine[s] = (o.confidence, o.prediction, o.entropy)
    gathered = dist.gather(mine)
    if not dist.is_main:
        return None
    parts = {s: v for g in gathered for s, v in g.items()}
    conf, pred, ent = (torch.cat([parts[s][i] for s in starts], dim=1) for i in range(3))
    return ExitOutputs(conf, pred, ent)


__all__ = ["craft_sharded", "outputs_sharded"]
