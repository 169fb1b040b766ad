"""The training loop: CNN, IC-only SDN and joint SDN training (docs/method.md §3).

The training set stays on the training device as uint8; each epoch's augmentation parameters
are drawn on the CPU when the epoch starts and moved there in one copy (`data.loader`), so on
CUDA the host queues step after step without waiting for the GPU. Convolutional networks run
channels-last (on CPU every model does); the loss and accuracy shown in the progress bar are
accumulated on the device and read back only when the bar is refreshed (every 25 steps). `compile=True` runs the training forward
and backward passes through `torch.compile` (fewer, fused kernels: on CUDA far fewer launches
per step). After every epoch a checkpoint is written, so `resume=True` continues a killed run
from the last finished epoch. A run holds `<out>/training.lock` (`io.exclusive`): a second run
into the same directory stops with an error.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset, TensorLoader
from ..data.loader import epoch_seed
from ..device import prefers_channels_last
from ..errors import DeepslothError
from ..io import exclusive
from ..exits.cost import measure_exit_costs
from ..exits.forward import as_exit_list, collect_exit_outputs
from ..models.io import save_model_dir
from ..precision import autocast, resolve_amp
from ..progress import progress
from .checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from .recipes import MODES, Recipe


def _sdn_parts(model: nn.Module):
    """The backbone of a multi-exit model: an SDN's stem, blocks and head, or the model exits were
    attached to (`attach_exits`)."""
    if isinstance(getattr(model, "net", None), nn.Module):
        return [model.net]
    return [model.stem, model.blocks, model.head]


def trainable_parameters(model: nn.Module, mode: str) -> List[nn.Parameter]:
    """IC-only training freezes the backbone and trains only `model.ics`."""
    if mode == "ic-only":
        for part in _sdn_parts(model):
            part.requires_grad_(False)
        return [p for p in model.ics.parameters()]
    return [p for p in model.parameters() if p.requires_grad]


def set_train_mode(model: nn.Module, mode: str) -> None:
    model.train()
    if mode == "ic-only":  # frozen backbone: its BatchNorm statistics must not move either
        for part in _sdn_parts(model):
            part.eval()


def exit_weights(costs: List[float], epoch: int, epochs: int) -> List[float]:
    """tau_i(e) = min(c_i, 0.01 + e * c_i / E) for the ICs, 1 for the final exit (docs/method.md §3)."""
    taus = [min(c, 0.01 + epoch * c / epochs) for c in costs[:-1]]
    return taus + [1.0]


def make_loss(mode: str, recipe: Recipe, costs: Optional[List[float]]) -> Callable:
    ls = recipe.label_smoothing

    def loss_fn(outs: List[torch.Tensor], y: torch.Tensor, epoch: int) -> torch.Tensor:
        outs = [o.float() for o in outs]   # a no-op in fp32; bf16 logits under --amp
        if mode == "cnn":
            return F.cross_entropy(outs[-1], y, label_smoothing=ls)
        if mode == "ic-only":
            return sum(F.cross_entropy(o, y, label_smoothing=ls) for o in outs[:-1])
        w = [1.0] * len(outs) if recipe.exit_weights == "equal" else exit_weights(costs, epoch, recipe.epochs)
        return sum(wi * F.cross_entropy(o, y, label_smoothing=ls) for wi, o in zip(w, outs))
    return loss_fn


def build_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise DeepslothError(f"unknown optimizer {recipe.optimizer!r}")


def train_model(model: nn.Module, *, mode: str, recipe: Recipe, train_set: Dataset, test_set: Optional[Dataset],
                out_dir: Path, meta: Dict[str, Any], seed: int = 0, device: torch.device = torch.device("cpu"),
                resume: bool = False, channels_last: Optional[bool] = None,
                log: Callable[[str], None] = print, adversarial=None, dist=None,
                sync_bn: bool = False, amp: Optional[str] = None, compile: Optional[bool] = None) -> Dict[str, Any]:
    """Train `model` and write a model directory to `out_dir`; returns the saved metadata.

    `meta` holds what describes the model (arch, dataset, ...); this adds the recipe, seed,
    per-exit test accuracy, measured per-exit cost and the training time.

    `adversarial` (`train.adversarial.AdversarialTraining`) adds an adversarial term to every
    batch's loss. `dist` (`deepsloth.distributed.Dist`, under torchrun) runs DistributedDataParallel:
    every rank takes its slice of each global batch of the one-process schedule (same global batch,
    same learning rates), gradients are averaged, and only rank 0 writes checkpoints, the model
    directory and logs. `sync_bn` (CUDA only) turns BatchNorm into SyncBatchNorm so that statistics
    cover the global batch; without it each rank normalises its own slice, as usual with DDP.
    `amp="bf16"` runs the training forwards under bf16 autocast (`deepsloth.precision`; "auto" is
    bf16 on CUDA GPUs with bf16 and on CPUs with native bf16); a run resumes only with the precision
    it was started with.

    `channels_last` (default: on CPU, and on CUDA for convolutional networks) and `compile`
    (`torch.compile` of the training passes; default off) change how fast a run is, not its recipe,
    data or batches (their kernels may round differently).
    """
    from contextlib import nullcontext

    main = dist is None or dist.is_main
    if not main:
        log = lambda s: None  # noqa: E731  (only rank 0 logs)
    if mode not in MODES:
        raise DeepslothError(f"unknown training mode {mode!r}")
    out_dir = Path(out_dir)
    if len(train_set) < recipe.batch_size:   # checked before anything is created
        raise DeepslothError(f"training set of {len(train_set)} images is smaller than one batch "
                             f"of {recipe.batch_size}")
    if out_dir.exists() and not out_dir.is_dir():
        raise DeepslothError(f"{out_dir} is not a directory")
    # One training run per directory at a time: a second one stops here with a clear error
    # (the lock file, <out>/training.lock, is removed when the run ends or is interrupted).
    world = dist.world if dist is not None else 1
    if recipe.batch_size % world:
        raise DeepslothError(f"the batch size {recipe.batch_size} must divide evenly over {world} processes")
    amp = resolve_amp(amp, device)   # "auto": bf16 only where the device has it natively
    if sync_bn and device.type != "cuda":
        raise DeepslothError("SyncBatchNorm needs CUDA; on CPU each rank keeps its own BatchNorm statistics")
    if channels_last is None:
        channels_last = prefers_channels_last(model, device)
    lock = exclusive(out_dir / "training", f"the training run in {out_dir}") if main else nullcontext()
    with lock:
        return _train(model, mode=mode, recipe=recipe, train_set=train_set, test_set=test_set, out_dir=out_dir,
                      meta=meta, seed=seed, device=device, resume=resume, channels_last=channels_last, log=log,
                      adversarial=adversarial, dist=dist, sync_bn=sync_bn, amp=amp, compile=bool(compile))


def _train(model: nn.Module, *, mode: str, recipe: Recipe, train_set: Dataset, test_set: Optional[Dataset],
           out_dir: Path, meta: Dict[str, Any], seed: int, device: torch.device, resume: bool,
           channels_last: bool, log: Callable[[str], None], adversarial=None, dist=None,
           sync_bn: bool = False, amp: Optional[str] = None, compile: bool = False) -> Dict[str, Any]:
    from ..attacks.base import derive_seed

    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    main = rank == 0
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    input_shape = tuple(train_set.images.shape[1:])
    costs = None
    if mode == "sdn":
        costs = measure_exit_costs(model, input_shape).normalised

    params = trainable_parameters(model, mode)
    net = model
    if world > 1:   # the distributed gate: DDP averages gradients, everything else is the same loop
        from torch.nn.parallel import DistributedDataParallel as DDP
        if sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DDP(model, device_ids=[device] if device.type == "cuda" else None)
    if compile:   # the training passes only; crafting, evaluation and saving use the plain model
        net = torch.compile(net)
    opt = build_optimizer(params, recipe)
    loss_fn = make_loss(mode, recipe, costs)
    loader = TensorLoader(train_set, batch_size=recipe.batch_size, shuffle=True, augment=True, cutout=recipe.cutout,
                          drop_last=True, seed=seed, device=device, channels_last=channels_last)
    steps = len(loader)
    if steps == 0:
        raise DeepslothError(f"training set of {len(train_set)} images is smaller than one batch "
                             f"of {recipe.batch_size}")

    start_epoch, history, elapsed = 0, [], 0.0
    if resume:
        info = load_checkpoint(out_dir, model, opt)
        if info is not None:
            adv_rec = adversarial.record() if adversarial is not None else None
            if info.get("recipe") != recipe.to_dict() or info.get("mode") != mode or info.get("adversarial") != adv_rec:
                raise DeepslothError(f"{out_dir} holds a checkpoint of a different run "
                                     f"(recipe, mode or adversarial recipe differ); use another --out or drop --resume")
            if info.get("amp") != amp:
                raise DeepslothError(f"{out_dir} holds a checkpoint made with --amp {info.get('amp') or 'off'}; "
                                     f"resume it with the same --amp")
            start_epoch, history, elapsed = info["epoch"], info["history"], info.get("elapsed_s", 0.0)
            log(f"resuming from epoch {start_epoch}/{recipe.epochs}")
    elif (out_dir / "checkpoint.json").exists():
        raise DeepslothError(f"{out_dir} already holds an unfinished run; pass --resume to continue it "
                             f"or choose another --out")

    for epoch in range(start_epoch, recipe.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch, 7))  # dropout etc.: a resumed epoch replays exactly
        loader.set_epoch(epoch)
        set_train_mode(model, mode)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        bar = progress(total=steps, desc=f"{mode} epoch {epoch + 1}/{recipe.epochs}", unit="batch")
        for step, (x, y) in enumerate(loader):
            lr = recipe.lr_at(epoch, step, steps)
            for group in opt.param_groups:
                group["lr"] = lr
            if world > 1:   # this rank's slice of the global batch
                b = len(y) // world
                x, y = x[rank * b:(rank + 1) * b], y[rank * b:(rank + 1) * b]
            with autocast(device, amp):
                outs = as_exit_list(net(x))
                loss = loss_fn(outs, y, epoch)
                if adversarial is not None:   # crafted on the current model in eval mode, modes restored after
                    x_adv, y_adv = adversarial.inputs(model, x, y, seed=derive_seed(seed, "adv", epoch, step, rank))
                    loss = loss + adversarial.loss(as_exit_list(net(x_adv)), y_adv)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                loss_sum += loss.detach()
                shown = outs[-1] if mode != "ic-only" else outs[-2]
                correct += (shown.argmax(1) == y).sum()
            seen += len(y)
            bar.update(1)
            if step % 25 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{loss_sum.item() / (step + 1):.3f}",
                                acc=f"{correct.item() / seen:.3f}", lr=f"{lr:.4f}")
        bar.close()
        dt = time.perf_counter() - t0
        elapsed += dt
        record = {"epoch": epoch + 1, "loss": loss_sum.item() / steps, "train_acc": correct.item() / seen,
                  "seconds": round(dt, 1)}
        history.append(record)
        log(f"epoch {epoch + 1}/{recipe.epochs}: loss {record['loss']:.4f} "
            f"train acc ({'last IC' if mode == 'ic-only' else 'final'}) {record['train_acc']:.4f} [{dt:.0f}s]")
        if main:
            save_checkpoint(out_dir, model, opt, {"epoch": epoch + 1, "mode": mode, "recipe": recipe.to_dict(),
                                                  "history": history, "elapsed_s": elapsed, "seed": seed,
                                                  "adversarial": adversarial.record() if adversarial else None,
                                                  "amp": amp})
        if dist is not None:
            dist.barrier()   # a resumed run finds the checkpoint of the last epoch every rank finished

    model.eval()
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    if not main:
        dist.barrier()
        return {}
    full = dict(meta)
    full.update({"mode": mode, "recipe": recipe.to_dict(), "seed": seed, "history": history,
                 "train_seconds": round(elapsed, 1), "train_images": len(train_set),
                 "data_source": train_set.source})
    if adversarial is not None:
        full["adversarial"] = adversarial.record()
    if amp:
        full["amp"] = amp
    if world > 1:
        full["distributed"] = {"world_size": world, "backend": dist.backend, "sync_bn": sync_bn}
    if mode != "cnn":
        full["cost"] = measure_exit_costs(model, input_shape).to_dict()
    if test_set is not None:
        outputs = collect_exit_outputs(model, test_set.images, device=device, desc="test")
        acc = outputs.accuracy(test_set.labels)
        full["accuracy"] = {"split": "test", "n": len(test_set), "per_exit": [round(a, 4) for a in acc],
                            "final": round(acc[-1], 4)}
        log("test accuracy per exit: " + " ".join(f"{a * 100:.1f}" for a in acc))
    save_model_dir(out_dir, model, full)
    remove_checkpoint(out_dir)
    if dist is not None:
        dist.barrier()
    return full
