"""Crafting adversarial inputs for a context: seeded per batch, resumable, shardable, content-named.

    crafted = craft(ctx, resolve_spec("deepsloth"), seed=0, out_dir="results/resnet56/adversarial")
    crafted.inputs       # float [n,3,H,W]: the adversarial versions of ctx's clean inputs
    crafted.path         # <out_dir>/deepsloth-linf-sample-<key>.safetensors (+ .json record)

* Per-sample attacks run in batches of `batch_size` over the context's inputs; batch b (first
  index s) is crafted with the seed `derive_seed(seed, "batch", s)`, so a batch's result does
  not depend on which process crafts it or when.
* With `out_dir`, every finished batch is kept in `<stem>.partial/` until the whole result is
  written, so a killed run resumes with the finished batches. `shard=(rank, world)` crafts only
  batches rank, rank + world, ...; once every batch is present (from any rank), `craft` (or
  `merge`) assembles them, bit-identical to the one-process result.
* Universal and class-universal perturbations are crafted once on the context's training pool
  (with `shard`, by rank 0 only). With `out_dir`, each finished class of a class-universal
  perturbation is kept in `<stem>.partial/` too (every class has its own derived seed), so a
  killed run resumes with the finished classes.
* One writer per result: while a result is crafted, `<stem>.lock` (`io.exclusive`) holds the
  writer's pid, so a second process asked for the same result stops with an error naming it
  instead of mixing batches; a sharded rank locks only its own batches (`<stem>.rank<r>-of-<w>`),
  and whichever rank assembles the result takes the stem's lock.
* The result is named `<cell>-<key>` where key is a hash of (model weights, resolved spec,
  clean-input selection, crafting pool, batch size, seed): two configurations never share a
  file, and asking for an existing one reuses it.
* The batch size is part of the key because each batch draws its own random starts: the same
  inputs crafted in batches of 128 and of 4096 start from different points. `batch_size=None`
  lets the device choose (`crafting_batch`): 128 on a CPU; on CUDA the largest power of two up
  to 4096 that fits the GPU's free memory (`deepsloth.device.auto_batch`, one probe step per
  context and precision). The chosen size is in the key and the record, so
  `batch_size=<recorded>` reproduces a result anywhere.
* On CUDA the attacks run on the BatchNorm-folded copy of the model (`models.fold`), and the
  record's `compute` block says what ran: batch size and how it was chosen, precision, memory
  layout, folding. On a CPU nothing of this changes: the model as trained, batches of 128.
"""
from __future__ import annotations

import datetime as _dt
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from .. import __version__
from ..attacks.base import derive_seed, frozen
from ..attacks.norms import norm_report
from ..attacks.registry import AttackSpec, create_attack
from ..device import AUTO_BATCH_CAP, auto_batch, peak_bytes_per_item
from ..errors import DeepslothError
from ..exits.forward import as_exit_list
from ..io import LockHeld, atomic_path, exclusive, json_sha256, load_tensors, read_metadata, save_tensors
from ..models.fold import for_input_gradients
from ..precision import autocast
from ..progress import progress
from .context import Context
from .results import FORMAT, KIND_OF_SCOPE, Crafted, apply_result, read_result, save_result

DEFAULT_BATCH = 128
AUTO_RULE = f"auto: the largest power of two up to {AUTO_BATCH_CAP} that fits the free GPU memory"


def crafting_batch(ctx: Context, spec: AttackSpec, batch_size: Optional[int] = None) -> int:
    """The per-sample crafting batch: `batch_size` when given; else `DEFAULT_BATCH` on a CPU (and
    for universal attacks, whose batch is their own option) and, on CUDA, `device.auto_batch` from
    the memory of one probe step (an all-exit forward and backward to the input at the spec's
    precision, on the network the attack runs), measured once per context and precision."""
    if batch_size is not None:
        if int(batch_size) < 1:
            raise DeepslothError(f"batch_size must be >= 1, got {batch_size}")
        return int(batch_size)
    if spec.scope != "sample":
        return DEFAULT_BATCH
    amp = spec.params.get("amp")
    memo = ctx._cache.setdefault("craft_batch", {})
    if amp not in memo:
        memo[amp] = auto_batch(ctx.device, default=DEFAULT_BATCH, per_item_bytes=lambda: _attack_step_bytes(ctx, amp))
    return memo[amp]


def _attack_step_bytes(ctx: Context, amp: Optional[str]) -> float:
    """CUDA memory per input of one attack step: forward of every exit and backward to the input,
    plus the attack's own per-input tensors (inputs, iterate, perturbation, gradient, start)."""
    net = for_input_gradients(ctx.model, ctx.device)
    shape = tuple(ctx.test.images.shape[1:])

    def step(b: int) -> None:
        x = torch.rand((b,) + shape, device=ctx.device, requires_grad=True)
        with frozen(net), torch.enable_grad():
            with autocast(ctx.device, amp):
                outs = as_exit_list(net(x))
            loss = sum(o.float().logsumexp(dim=-1).sum() for o in outs)
            torch.autograd.grad(loss, x)

    return peak_bytes_per_item(step, ctx.device) + 8 * 4 * math.prod(shape)


def _attack_model(ctx: Context) -> torch.nn.Module:
    return for_input_gradients(ctx.model, ctx.device)


def craft_identity(ctx: Context, spec: AttackSpec, seed: int, batch_size: int) -> Dict[str, Any]:
    """Everything the adversarial inputs depend on (hashed into the result's name)."""
    ident: Dict[str, Any] = {"format": FORMAT, "weights_sha256": ctx.weights_sha256, "spec": spec.to_dict(),
                             "seed": int(seed),
                             "data": {k: v for k, v in ctx.data_record().items() if k != "source"}}
    if spec.scope == "sample":
        ident["batch_size"] = int(batch_size)
    else:
        ident["craft_pool"] = {k: v for k, v in ctx.train_record().items() if k != "source"}
    return ident


def craft_key(ctx: Context, spec: AttackSpec, seed: int = 0, batch_size: Optional[int] = None) -> str:
    """The content key of a result (`batch_size=None`: the batch `crafting_batch` chooses)."""
    return json_sha256(craft_identity(ctx, spec, seed, crafting_batch(ctx, spec, batch_size)))


def result_stem(spec: AttackSpec, key: str) -> str:
    return f"{spec.cell}-{key[:12]}"


def _batch_file(folder: Path, start: int) -> Path:
    return folder / f"batch-{start:09d}.safetensors"


def _check_shard(shard: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    if shard is None:
        return 0, 1
    rank, world = int(shard[0]), int(shard[1])
    if world < 1 or not 0 <= rank < world:
        raise DeepslothError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}")
    return rank, world


def _record(ctx: Context, spec: AttackSpec, seed: int, key: str, batch_size: int, auto: bool) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"format": FORMAT, "key": key, "cell": spec.cell, "spec": spec.to_dict(),
                           "seed": int(seed), "model": ctx.model_record(), "data": ctx.data_record(),
                           "package_version": __version__, "device": str(ctx.device)}
    if spec.scope == "sample":
        rec["batch_size"] = batch_size
        rec["batch_seed"] = "derive_seed(seed, 'batch', first index of the batch)"
    else:
        rec["craft_pool"] = ctx.train_record()
    if ctx.device.type == "cuda":   # what ran beyond the spec (a CPU record stays as it always was)
        compute: Dict[str, Any] = {"amp": spec.params.get("amp"), "channels_last": ctx.channels_last,
                                   "bn_folded": _attack_model(ctx) is not ctx.model}
        if spec.scope == "sample":
            compute.update(batch_size=batch_size, batch_size_rule=AUTO_RULE if auto else "given")
        rec["compute"] = compute
    return rec


def _load_existing(path: Path, key: str, ctx: Context, spec: AttackSpec, seed: int) -> Optional[Crafted]:
    js = path.with_suffix(".json")
    if not (path.is_file() and js.is_file()):
        return None
    try:
        kind, tensors, record = read_result(path)
    except DeepslothError:
        return None   # a damaged file is crafted again (and replaced atomically)
    if record.get("key") != key:
        return None
    inputs, labels = _inputs_for(ctx, kind, tensors)
    return Crafted(spec, seed, kind, inputs, labels, tensors, record, path, reused=True)


def _inputs_for(ctx: Context, kind: str, tensors: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    return apply_result(kind, tensors, ctx.clean, ctx.labels), (tensors["labels"].long() if kind == "samples"
                                                                 else ctx.labels)


def craft(ctx: Context, spec: AttackSpec, *, seed: int = 0, batch_size: Optional[int] = None,
          out_dir: Optional[Path | str] = None, shard: Optional[Tuple[int, int]] = None,
          log: Callable[[str], None] = lambda s: None, assemble: bool = True) -> Optional[Crafted]:
    """Adversarial inputs for `spec` on the context's inputs (see the module docstring).

    `assemble=False` (with `shard`): craft this rank's batches and stop, leaving the assembly to
    the caller (`experiments.sharded` gathers the batches to rank 0 first).

    With `out_dir`, the result's stem is locked (`io.exclusive`) while it is crafted, so a
    second process asked for the same result stops with a clear error; with `shard`, each rank
    locks only its own batches, and assembling the result takes the stem's lock.
    `batch_size=None` lets the device choose (`crafting_batch`: 128 on a CPU). Ranks of a sharded
    run must craft with the same batch size: give it explicitly there.

    Returns None when `shard` is given and other ranks' batches are still missing."""
    rank, world = _check_shard(shard)
    auto = batch_size is None
    batch_size = crafting_batch(ctx, spec, batch_size)
    if out_dir is None and world > 1:
        raise DeepslothError("sharded crafting needs out_dir: the ranks share their batches through it")
    key = craft_key(ctx, spec, seed, batch_size)
    stem = result_stem(spec, key)
    if out_dir is None:
        return _craft(ctx, spec, seed, batch_size, None, stem, key, rank, world, log, auto)
    out = Path(out_dir)
    final = out / f"{stem}.safetensors"
    existing = _load_existing(final, key, ctx, spec, seed)
    if existing is not None:
        log(f"{spec.cell}: reusing {final}")
        return existing
    if spec.scope == "sample" and world > 1:
        with exclusive(out / f"{stem}.rank{rank}-of-{world}", f"rank {rank} of {world}'s batches of {final}"):
            _craft_batches(ctx, spec, seed, batch_size, out / f"{stem}.partial", key, rank, world, log)
        if not assemble:
            return None
        try:
            with exclusive(out / stem, str(final)):
                return _craft(ctx, spec, seed, batch_size, out, stem, key, rank, world, log, auto)
        except LockHeld:   # another rank (or a whole run) is assembling it
            log(f"{spec.cell}: another process is assembling {final}")
            return None
    if spec.scope != "sample" and rank != 0:
        return None
    with exclusive(out / stem, str(final)):
        return _craft(ctx, spec, seed, batch_size, out, stem, key, rank, world, log, auto)


def _craft(ctx: Context, spec: AttackSpec, seed: int, batch_size: int, out: Optional[Path], stem: str, key: str,
           rank: int, world: int, log: Callable[[str], None], auto: bool = False) -> Optional[Crafted]:
    """Craft (what is missing of) the result, holding its lock when it is written to `out`."""
    final = out / f"{stem}.safetensors" if out is not None else None
    if final is not None:   # another process may have finished it while we waited for the lock
        existing = _load_existing(final, key, ctx, spec, seed)
        if existing is not None:
            log(f"{spec.cell}: reusing {final}")
            return existing
    record = _record(ctx, spec, seed, key, batch_size, auto)
    if spec.scope == "sample":
        return _craft_samples(ctx, spec, seed, batch_size, out, stem, key, record, rank, world, log)
    if rank != 0:
        return None
    atk = create_attack(spec, _attack_model(ctx), seed=seed, device=ctx.device)
    pool = ctx.train_pool()
    partial = None
    if out is not None:   # what the attack resumes from (finished classes, UAP's last pass) until the result is written
        partial = out / f"{stem}.partial"
        _open_partial(partial, key)
        atk.resume_dir = partial
    t0 = time.perf_counter()
    if spec.scope == "universal":
        tensors = {"delta": atk(pool.images).float().cpu()}
    else:
        tensors = {"deltas": atk(pool.images, pool.labels).float().cpu()}
    info = dict(getattr(atk, "last_info", {}) or {})
    if info.get("resumed_classes"):
        log(f"{spec.cell}: resumed with {info['resumed_classes']} classes crafted before")
    if info.get("resumed_passes"):
        log(f"{spec.cell}: resumed after {info['resumed_passes']} passes made before")
    record["seconds"] = round(time.perf_counter() - t0 + info.pop("resumed_seconds", 0.0), 3)
    record["craft"] = info
    delta = tensors.get("delta")
    delta = delta[None] if delta is not None else tensors["deltas"]
    record["perturbation_norms"] = norm_report(delta, torch.zeros_like(delta))
    crafted = _finish(ctx, spec, seed, KIND_OF_SCOPE[spec.scope], tensors, record, final)
    if partial is not None:
        shutil.rmtree(partial, ignore_errors=True)
    return crafted


def _finish(ctx: Context, spec: AttackSpec, seed: int, kind: str, tensors: Dict[str, torch.Tensor],
            record: Dict[str, Any], final: Optional[Path]) -> Crafted:
    inputs, labels = _inputs_for(ctx, kind, tensors)
    record["norms"] = norm_report(inputs, ctx.clean)
    record["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if final is not None:
        save_result(final, kind, tensors, record)
    return Crafted(spec, seed, kind, inputs, labels, tensors, record, final)


def _open_partial(partial: Path, key: str) -> None:
    partial.mkdir(parents=True, exist_ok=True)
    key_file = partial / "key"
    if key_file.is_file() and key_file.read_text().strip() != key:
        raise DeepslothError(f"{partial} belongs to another configuration; remove it or use another --out")
    if not key_file.is_file():
        with atomic_path(key_file) as tmp:   # ranks starting together never read a half-written key
            tmp.write_text(key + "\n")


def _craft_batches(ctx: Context, spec: AttackSpec, seed: int, bs: int, partial: Optional[Path], key: str,
                   rank: int, world: int, log: Callable[[str], None]) -> Dict[int, Tuple[torch.Tensor, float]]:
    """Craft this rank's missing batches: into `partial` when given, else returned in memory."""
    starts = list(range(0, ctx.n, bs))
    if partial is not None:
        _open_partial(partial, key)
    done: Dict[int, Tuple[torch.Tensor, float]] = {}
    mine = starts[rank::world]
    todo = [s for s in mine if partial is None or not _batch_ok(_batch_file(partial, s), min(bs, ctx.n - s), log)]
    if len(todo) < len(mine):
        log(f"{spec.cell}: resuming, {len(mine) - len(todo)} of {len(mine)} batches already crafted")
    atk = create_attack(spec, _attack_model(ctx), seed=seed, device=ctx.device) if todo else None
    images, labels = ctx.test.images, ctx.labels
    for start in progress(todo, desc=f"{spec.cell} batches", unit="batch"):
        t0 = time.perf_counter()
        x = images[start:start + bs].to(ctx.device)
        y = labels[start:start + bs].to(ctx.device)
        x_adv = atk(x, y, seed=derive_seed(seed, "batch", start)).float().cpu()
        dt = time.perf_counter() - t0
        if partial is not None:
            save_tensors(_batch_file(partial, start), {"images": x_adv}, metadata={"seconds": f"{dt:.6f}"})
        else:
            done[start] = (x_adv, dt)
    return done


def _craft_samples(ctx: Context, spec: AttackSpec, seed: int, bs: int, out: Optional[Path], stem: str,
                   key: str, record: Dict[str, Any], rank: int, world: int,
                   log: Callable[[str], None]) -> Optional[Crafted]:
    starts = list(range(0, ctx.n, bs))
    partial = out / f"{stem}.partial" if out is not None else None
    if partial is None:
        done = _craft_batches(ctx, spec, seed, bs, None, key, rank, world, log)
    else:
        if world == 1:   # a sharded rank crafted its batches already, under its own lock
            _craft_batches(ctx, spec, seed, bs, partial, key, 0, 1, log)
        if not all(_batch_file(partial, s).is_file() for s in starts):
            return None   # other ranks' batches are still missing: `merge` once they are done
        done = {s: _read_batch(_batch_file(partial, s)) for s in starts}
    x_adv = torch.cat([done[s][0] for s in starts])
    record["batches"] = len(starts)
    record["seconds"] = round(sum(d[1] for d in done.values()), 3)
    tensors = {"images": x_adv, "indices": torch.arange(ctx.n, dtype=torch.int64), "labels": ctx.labels.clone()}
    final = out / f"{stem}.safetensors" if out is not None else None
    crafted = _finish(ctx, spec, seed, "samples", tensors, record, final)
    if partial is not None:
        shutil.rmtree(partial, ignore_errors=True)
    return crafted


def _batch_ok(path: Path, rows: int, log: Callable[[str], None]) -> bool:
    """Whether a kept batch file is there and whole; a damaged one is removed (and crafted again)."""
    if not path.is_file():
        return False
    try:
        images = _read_batch(path)[0]
        if images.shape[0] == rows and images.dim() == 4 and bool(torch.isfinite(images).all()):
            return True
    except (DeepslothError, OSError, ValueError, KeyError):
        pass
    log(f"{path} is damaged; crafting that batch again")
    path.unlink(missing_ok=True)
    return False


def _read_batch(path: Path) -> Tuple[torch.Tensor, float]:
    return load_tensors(path)["images"], float(read_metadata(path).get("seconds", 0.0))


def merge(ctx: Context, spec: AttackSpec, *, seed: int = 0, batch_size: Optional[int] = None,
          out_dir: Path | str) -> Crafted:
    """Assemble a sharded per-sample result once every rank's batches are in `out_dir` (give the
    batch size the ranks crafted with; None: `crafting_batch`'s choice, 128 on a CPU)."""
    crafted = craft(ctx, spec, seed=seed, batch_size=batch_size, out_dir=out_dir, shard=(0, 1))
    assert crafted is not None
    return crafted


__all__ = ["craft", "merge", "craft_key", "craft_identity", "crafting_batch", "result_stem", "Crafted",
           "DEFAULT_BATCH"]
