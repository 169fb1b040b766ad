"""Multi-exit networks: internal classifiers (docs/method.md §3) and `build_sdn`.

A `MultiExitNet` returns the logits of every exit, in order, the final one last. It shares
the backbone's modules (stem, blocks, head), so its state dict is the CNN's plus `ics.*`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .backbones import Backbone


def state_tensors(h) -> List[torch.Tensor]:
    """The tensors of a block state: one feature map (the SDNs) or a list of them (MSDNet's scales)."""
    return [h] if isinstance(h, torch.Tensor) else list(h)


def select_rows(h, keep: torch.Tensor):
    """The rows `keep` (a mask or indices over the batch) of a block state, keeping its form."""
    return h[keep] if isinstance(h, torch.Tensor) else [t[keep] for t in h]


class InternalClassifier(nn.Module):
    """Mixed max/avg pooling to (about) 4x4, flatten, one Linear layer.

    For a map of spatial size s >= 4 it pools with kernel k = s // 4 and mixes
    `alpha * maxpool + (1 - alpha) * avgpool` with one learned scalar alpha; smaller maps
    (and vectors) go straight to the Linear layer.
    """

    def __init__(self, channels: int, spatial: Optional[int], num_classes: int):
        super().__init__()
        self.kernel = 0
        if spatial is None:  # a feature vector (VGG's FC block)
            features = channels
        elif spatial >= 4:
            self.kernel = spatial // 4
            pooled = spatial // self.kernel
            features = channels * pooled * pooled
            self.alpha = nn.Parameter(torch.rand(()))
        else:
            features = channels * spatial * spatial
        self.linear = nn.Linear(features, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kernel:
            k = self.kernel
            h = self.alpha * F.max_pool2d(h, k) + (1 - self.alpha) * F.avg_pool2d(h, k)
        return self.linear(torch.flatten(h, 1))


class MultiExitNet(nn.Module):
    """Backbone plus one IC after each block: `forward(x) -> [ic_1, ..., ic_{K-1}, final]`."""

    def __init__(self, backbone: Backbone, ics: Sequence[nn.Module]):
        super().__init__()
        if len(ics) != len(backbone.blocks):
            raise ValueError(f"{len(ics)} ICs for {len(backbone.blocks)} blocks")
        self.stem = backbone.stem
        self.blocks = backbone.blocks
        self.head = backbone.head
        self.ics = nn.ModuleList(ics)

    @property
    def num_exits(self) -> int:
        return len(self.ics) + 1

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        h = self.stem(x)
        outs = []
        for block, ic in zip(self.blocks, self.ics):
            h = block(h)
            outs.append(ic(h))
        outs.append(self.head(h))
        return outs

    def forward_exits(self, x: torch.Tensor, need="all") -> List[torch.Tensor]:
        """Only what `need` asks for: "all" (= forward), "final" ([final logits], computed without
        the internal classifiers) or an exit index i ([exit 0, ..., exit i], stopping there).
        The logits are those of `forward`, computed by the same operations."""
        if need == "all":
            return self.forward(x)
        h = self.stem(x)
        if need == "final":
            for block in self.blocks:
                h = block(h)
            return [self.head(h)]
        last = int(need)
        if last < 0:
            last += self.num_exits
        if not 0 <= last < self.num_exits:
            raise ValueError(f"exit {need} out of range for {self.num_exits} exits")
        if last == self.num_exits - 1:
            return self.forward(x)
        outs = []
        for block, ic in zip(self.blocks[:last + 1], self.ics[:last + 1]):
            h = block(h)
            outs.append(ic(h))
        return outs

    def backbone(self) -> Backbone:
        """The plain CNN view of this network (same modules, final exit only)."""
        return Backbone(self.stem, list(self.blocks), self.head)


@torch.no_grad()
def block_output_shapes(backbone: Backbone, input_size: int) -> List[torch.Size]:
    """Shapes (without batch) of every block's output, from one dummy forward in eval mode."""
    was_training = backbone.training
    backbone.eval()
    param = next(backbone.parameters())
    h = backbone.stem(torch.zeros(1, 3, input_size, input_size, device=param.device, dtype=param.dtype))
    shapes = []
    for block in backbone.blocks:
        h = block(h)
        shapes.append(h.shape[1:])
    backbone.train(was_training)
    return shapes


def build_sdn(backbone: Backbone, num_classes: int, input_size: int) -> MultiExitNet:
    """Attach one IC after every block of `backbone`, sharing its weights (docs/method.md §3)."""
    ics = []
    for shape in block_output_shapes(backbone, input_size):
        if len(shape) == 1:
            ics.append(InternalClassifier(shape[0], None, num_classes))
        else:
            ics.append(InternalClassifier(shape[0], shape[-1], num_classes))
    param = next(backbone.parameters())
    return MultiExitNet(backbone, ics).to(param.device)
