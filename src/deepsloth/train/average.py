"""Weight averaging of models from one lineage (stochastic-weight-averaging style).

Two CNNs where one continues the other under a fresh learning-rate cycle usually sit in one
low-loss basin; the plain mean of their weights, with BatchNorm statistics re-estimated on
training images, tends to generalise a little better than either. The zoo's CPU-trained
ResNet-56 is made this way (see `deepsloth.models.zoo_recipes`).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import nn

from ..data.augment import augment_batch
from ..data.cache import Dataset
from ..errors import DeepslothError
from ..exits.forward import collect_exit_outputs
from ..models.io import save_model_dir
from ..models.registry import create_model
from ..progress import progress


def average_weights(models: Sequence[nn.Module]) -> nn.Module:
    """A copy of `models[0]` whose floating-point parameters and buffers are the mean over `models`.

    Integer buffers (BatchNorm's batch counters) are taken from the last model. The models must
    have identical state-dict keys and shapes.
    """
    if len(models) < 2:
        raise DeepslothError("weight averaging needs at least two models")
    states = [m.state_dict() for m in models]
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise DeepslothError("models to average differ in architecture (state-dict keys or shapes)")
    mean = {}
    for k in keys:
        if states[0][k].is_floating_point():
            acc = torch.zeros_like(states[0][k], dtype=torch.float64)
            for s in states:
                acc += s[k].to(torch.float64)
            mean[k] = (acc / len(states)).to(states[0][k].dtype)
        else:
            mean[k] = states[-1][k].clone()
    out = copy.deepcopy(models[0])
    out.load_state_dict(mean, strict=True)
    return out


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, train_set: Dataset, *, n_images: int = 10000, batch_size: int = 500,
                        seed: int = 0, device: torch.device = torch.device("cpu")) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/variance on `n_images` augmented training images.

    Statistics are the exact average over the batches (momentum None); all other layers stay in
    eval mode (no dropout). The model is left in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    n = min(n_images, len(train_set))
    if n <= 0:
        raise DeepslothError("no training images to re-estimate BatchNorm statistics on")
    model.eval()
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    gen = torch.Generator().manual_seed(seed)
    bar = progress(total=n, desc="BatchNorm statistics", unit="img")
    try:
        for i in range(0, n, batch_size):
            x = augment_batch(train_set.images[i:min(i + batch_size, n)], train_set.name, gen).to(device)
            model(x)
            bar.update(len(x))
    finally:
        bar.close()
        for bn, m in zip(bns, saved):
            bn.momentum = m
        model.eval()
    return model


def average_model_dirs(dirs: Sequence[Path], out_dir: Path, train_set: Dataset, test_set: Optional[Dataset], *,
                       n_images: int = 10000, seed: int = 0, device: torch.device = torch.device("cpu"),
                       log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Average the model directories `dirs`, re-estimate BatchNorm, test, and save to `out_dir`.

    The saved `model.json` keeps the first model's description and records every source
    directory's lineage under `averaged_from`, with how the BatchNorm statistics were made.
    """
    loaded = [(m, m.meta) for m in (create_model(d) for d in dirs)]
    metas = [m for _, m in loaded]
    if len({(m["arch"], m["dataset"], m.get("mode")) for m in metas}) != 1:
        raise DeepslothError("models to average must share architecture, dataset and mode")
    t0 = time.perf_counter()
    model = average_weights([m for m, _ in loaded]).to(device)
    recompute_batchnorm(model, train_set, n_images=n_images, seed=seed, device=device)
    elapsed = time.perf_counter() - t0
    meta = {k: metas[0][k] for k in ("arch", "dataset", "num_classes", "input_size", "mode") if k in metas[0]}
    meta.update({"recipe": {"name": "weight-average", "sources": len(dirs), "bn_images": min(n_images, len(train_set)),
                            "bn_seed": seed},
                 "seed": seed, "train_seconds": round(elapsed, 1), "data_source": train_set.source,
                 "averaged_from": [{"path": str(d), "recipe": m.get("recipe"), "accuracy": m.get("accuracy"),
                                    "train_seconds": m.get("train_seconds"), "history": m.get("history"),
                                    "parent": m.get("parent")} for d, m in zip(dirs, metas)]})
    if test_set is not None:
        acc = collect_exit_outputs(model, test_set.images, device=device, desc="test").accuracy(test_set.labels)
        meta["accuracy"] = {"split": "test", "n": len(test_set), "per_exit": [round(a, 4) for a in acc],
                            "final": round(acc[-1], 4)}
        log("weight-averaged model, test accuracy per exit: " + " ".join(f"{a * 100:.1f}" for a in acc))
    save_model_dir(out_dir, model.cpu(), meta)
    return meta
