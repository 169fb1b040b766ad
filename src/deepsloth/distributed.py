"""torch.distributed in one place: set up from torchrun's environment, and the few collectives
the commands need (docs/distributed.md).

    dist = Dist.from_env(device="auto")   # one process: rank 0 of 1, nothing initialised
    dist.rank, dist.world, dist.device    # under torchrun: RANK / WORLD_SIZE / LOCAL_RANK
    dist.is_main                          # only rank 0 writes files and prints
    objs = dist.gather(obj)               # rank 0 gets [obj of rank 0, obj of rank 1, ...]; others None
    obj = dist.broadcast(obj)             # rank 0's obj on every rank

The backend is gloo on CPU and nccl on CUDA (one device per local rank). Every collective has a
timeout (`DEEPSLOTH_DIST_TIMEOUT`, default 600 s), so a rank that dies makes the others fail with
a clear error instead of hanging; a rank that raises reports it to the others first (`fail`).
"""
from __future__ import annotations

import datetime as _dt
import os
import pickle
from dataclasses import dataclass
from typing import Any, List, Optional

import torch

from .errors import DeepslothError


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_seconds() -> float:
    return float(os.environ.get("DEEPSLOTH_DIST_TIMEOUT", "600"))


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def shard(self):
        return (self.rank, self.world) if self.active else None

    @classmethod
    def from_env(cls, device: str | torch.device = "auto") -> "Dist":
        """The process group torchrun describes (initialised once), or a single process."""
        from .device import resolve_device
        if not launched_by_torchrun():
            return cls(device=resolve_device(device))
        import torch.distributed as td
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = resolve_device(device)
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if not td.is_initialized():
            td.init_process_group(backend, timeout=_dt.timedelta(seconds=timeout_seconds()))
        return cls(rank, world, local, dev, backend)

    # -- collectives (no-ops in one process) -------------------------------------------------
    def barrier(self) -> None:
        if self.active:
            import torch.distributed as td
            _checked(lambda: td.barrier())

    def gather(self, obj: Any) -> Optional[List[Any]]:
        """Every rank's `obj` on rank 0 (in rank order), None on the other ranks."""
        if not self.active:
            return [obj]
        import torch.distributed as td
        out = [None] * self.world if self.is_main else None
        _checked(lambda: td.gather_object(obj, out, dst=0))
        return out

    def broadcast(self, obj: Any) -> Any:
        if not self.active:
            return obj
        import torch.distributed as td
        box = [obj if self.is_main else None]
        _checked(lambda: td.broadcast_object_list(box, src=0))
        return box[0]

    def all_ok(self, ok: bool, what: str = "") -> None:
        """Every rank says whether its part succeeded; all fail together with the first error."""
        if not self.active:
            return
        import torch.distributed as td
        flags = [None] * self.world
        _checked(lambda: td.all_gather_object(flags, (ok, what)))
        bad = [(r, w) for r, (o, w) in enumerate(flags) if not o]
        if bad:
            r, w = bad[0]
            raise DeepslothError(f"rank {r} failed: {w}")

    def close(self, sync: bool = True) -> None:
        """Tear the process group down. `sync` (the normal end of a command): every rank waits for the others
        first, so no rank shuts its connections while a peer is still finishing its part; on an error path
        (`sync=False`) a rank leaves at once instead of waiting for a peer that may be gone."""
        if self.active:
            import torch.distributed as td
            if td.is_initialized():
                if sync:
                    try:
                        self.barrier()
                    except DeepslothError:
                        pass   # a peer is gone: nothing left to wait for
                td.destroy_process_group()


def _checked(fn) -> None:
    try:
        fn()
    except DeepslothError:
        raise
    except (RuntimeError, pickle.PickleError) as exc:   # a dead peer, a timeout
        raise DeepslothError(f"distributed run failed (a rank died or timed out after "
                             f"{timeout_seconds():g} s): {str(exc).splitlines()[0] if str(exc) else exc}") from None


__all__ = ["Dist", "launched_by_torchrun", "timeout_seconds"]
