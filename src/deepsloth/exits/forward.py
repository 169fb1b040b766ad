"""The one batched inference pass every metric is computed from.

All early-exit quantities (docs/method.md §4) are functions of each input's K exit outputs, so one
batched forward returning every exit gives exactly what one-at-a-time early exit would.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from ..data.augment import to_float01  # noqa: F401  (re-exported)
from ..models.fold import fold_batchnorm
from ..progress import progress


@dataclass
class ExitOutputs:
    """Per exit and input: max softmax probability, predicted class and softmax entropy."""

    confidence: torch.Tensor  # float [K, N]
    prediction: torch.Tensor  # int64 [K, N]
    entropy: torch.Tensor     # float [K, N]

    @property
    def num_exits(self) -> int:
        return self.confidence.shape[0]

    def __len__(self) -> int:
        return self.confidence.shape[1]

    def accuracy(self, labels: torch.Tensor) -> List[float]:
        """Top-1 accuracy of every exit, as fractions."""
        labels = labels.to(self.prediction.device)
        return (self.prediction == labels.unsqueeze(0)).float().mean(dim=1).tolist()


def as_exit_list(out) -> List[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)


@torch.inference_mode()
def collect_exit_outputs(model: nn.Module, images: torch.Tensor, batch_size: int = 500,
                         device: Optional[torch.device | str] = None, desc: str = "forward",
                         fold_bn: bool = True) -> ExitOutputs:
    """Run `model` over `images` (uint8 or float [N,3,H,W]) in batches, all exits at once.

    With `fold_bn` (default) the pass runs on a copy with BatchNorm folded into the preceding
    convolutions (`deepsloth.models.fold`): same outputs up to float rounding, less time.
    """
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    net = fold_batchnorm(model) if fold_bn else model
    conf, pred, ent = [], [], []
    try:
        for start in progress(range(0, len(images), batch_size), desc=desc,
                              total=(len(images) + batch_size - 1) // batch_size):
            x = to_float01(images[start:start + batch_size].to(device, non_blocking=True))
            logits = torch.stack(as_exit_list(net(x)))  # [K, B, C]
            logp = torch.log_softmax(logits.float(), dim=-1)
            p = logp.exp()
            c, k = p.max(dim=-1)
            conf.append(c)
            pred.append(k)
            ent.append(-(p * logp).sum(dim=-1))
    finally:
        model.train(was_training)
    return ExitOutputs(torch.cat(conf, 1).cpu(), torch.cat(pred, 1).cpu(), torch.cat(ent, 1).cpu())
