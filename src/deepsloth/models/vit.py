"""An early-exit vision transformer: a small ViT with an exit after every block (docs/method.md §2.5).

The transformer is a plain pre-norm ViT (`VisionTransformer`: patch embedding, CLS token, learned
position embeddings, blocks of multi-head self-attention and an MLP, final LayerNorm, Linear head on
the CLS token); the exits are attached to it with `attach_exits`, one CLS-token head (LayerNorm,
Linear) after each block but the last, whose exit is the transformer's own head. So the model is an
`AttachedExits`: the early-exit runtime stops inside it like in any wrapped model.

CIFAR-10: patch 4 on 32x32 (64 patches + CLS), width 128, 6 blocks of 4 heads, MLP ratio 2.
Tiny ImageNet: patch 8 on 64x64, so the sequence is the same length.
Attention is written out (two matmuls and a softmax) so the op counter charges it exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attach import AttachedExits, attach_exits


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 32
    patch: int = 4
    dim: int = 128
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 2.0

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch) ** 2 + 1


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        w = torch.softmax((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5, dim=-1)
        return self.proj((w @ v).transpose(1, 2).reshape(n, t, d))


class TransformerBlock(nn.Module):
    """x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.patch = nn.Conv2d(3, cfg.dim, cfg.patch, cfg.patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos = nn.Parameter(torch.zeros(1, cfg.tokens, cfg.dim))
        self.blocks = nn.ModuleList(TransformerBlock(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        for block in self.blocks:
            t = block(t)
        return self.head(self.norm(t)[:, 0])


def vit_config(input_size: int) -> ViTConfig:
    if input_size == 32:
        return ViTConfig()
    if input_size == 64:
        return ViTConfig(image_size=64, patch=8)
    raise ValueError(f"the early-exit ViT is configured for 32x32 and 64x64 inputs, not {input_size}x{input_size}")


def vit(num_classes: int = 10, input_size: int = 32, cfg: ViTConfig | None = None) -> AttachedExits:
    """The early-exit ViT: an exit after every block (docs/method.md §2.5)."""
    cfg = cfg or vit_config(input_size)
    net = VisionTransformer(cfg, num_classes)
    return attach_exits(net, at=[f"blocks.{i}" for i in range(cfg.depth - 1)], num_classes=num_classes,
                        input_shape=(3, cfg.image_size, cfg.image_size))


__all__ = ["ViTConfig", "VisionTransformer", "vit", "vit_config"]
