"""MSDNet: the multi-scale dense network with one classifier per block (docs/method.md §2.4).

Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image Classification" (ICLR 2018),
the fourth architecture of the DeepSloth paper. The network keeps features at S scales at once:

* the **first layer** makes the S scales from the image (a 3x3 conv, then strided 3x3 convs, each
  scale doubling the channels' growth factor);
* every **dense layer** appends new features to every scale it keeps: the finest kept scale from a
  conv on itself, every coarser scale half from a conv on itself and half from a strided conv on
  the next finer scale (so coarse features see fine ones early);
* a **transition** (1x1 conv per scale) halves the channels each time the finest scale is dropped,
  which happens as depth grows ("max" pruning: the layers are split in S equal runs, the k-th run
  keeps the S - k + 1 coarsest scales);
* after every block a **classifier** reads the coarsest scale: two 3x3 stride-2 convs of 128
  channels, global average pooling, one Linear layer.

The result is a `MultiExitNet`: `stem` is the first layer, `blocks` the first K - 1 blocks, `ics`
their classifiers, and `head` the last block followed by the last classifier. The block state is
the list of per-scale feature maps, so the early-exit runtime, the op counter, BatchNorm folding,
every attack and every metric work on it unchanged.

Choices the MSDNet paper leaves open, made here:

* every conv is followed by BatchNorm and ReLU and has no bias; a bottleneck 1x1 conv of
  width min(input channels, bottleneck factor x output channels) precedes each 3x3 conv;
* the strided branch of a coarse scale uses the finer scale's bottleneck factor;
* a layer that drops the finest scale computes the new finest kept scale with the strided branch
  from the dropped scale (it is the last layer to read it), then the transition follows;
* convolutions use Kaiming-normal (fan-out) initialisation, BatchNorm scale 1 and shift 0, Linear
  biases 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import nn

from .backbones import Backbone, kaiming_init
from .sdn import MultiExitNet

Scales = List[torch.Tensor]


@dataclass(frozen=True)
class MSDNetConfig:
    """The MSDNet paper's CIFAR "anytime" configuration by default (docs/method.md §2.4)."""

    blocks: int = 7
    scales: int = 3
    base_channels: int = 16
    growth: int = 6
    growth_factors: Tuple[int, ...] = (1, 2, 4)
    bottleneck_factors: Tuple[int, ...] = (1, 2, 4)
    base: int = 4                 # dense layers in the first block
    step: int = 2                 # dense layers in every later block
    compression: float = 0.5      # transition: channels kept when a scale is dropped
    classifier_channels: int = 128
    stem_stride: int = 1          # 2 for 64x64 inputs: the finest scale runs at 32x32

    @property
    def layers(self) -> int:
        return self.base + (self.blocks - 1) * self.step

    def layer_scales(self, n: int) -> Tuple[int, int]:
        """(scales read, scales written) by dense layer n (1-based), "max" pruning."""
        run = math.ceil(self.layers / self.scales)
        read = self.scales - max(0, n - 2) // run
        written = self.scales - (n - 1) // run
        return read, written


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _branch(cin: int, cout: int, stride: int, bottleneck: int) -> nn.Sequential:
    """Bottleneck 1x1 conv then a 3x3 conv (strided for the down branch)."""
    width = min(cin, bottleneck * cout)
    return nn.Sequential(*_conv(cin, width, 1), *_conv(width, cout, 3, stride))


class FirstLayer(nn.Module):
    """Image -> S feature maps, each scale a strided conv on the finer one."""

    def __init__(self, cfg: MSDNetConfig):
        super().__init__()
        convs, cin = [], 3
        for s in range(cfg.scales):
            cout = cfg.base_channels * cfg.growth_factors[s]
            convs.append(_conv(cin, cout, 3, cfg.stem_stride if s == 0 else 2))
            cin = cout
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> Scales:
        out = []
        for conv in self.convs:
            x = conv(x)
            out.append(x)
        return out


class DenseLayer(nn.Module):
    """Appends `growth x factor` new channels to every scale it writes (from `read` input scales)."""

    def __init__(self, cfg: MSDNetConfig, channels: int, read: int, written: int):
        super().__init__()
        g, gf, bf = cfg.growth, cfg.growth_factors, cfg.bottleneck_factors
        self.first_in = cfg.scales - read        # global index of the finest scale read
        self.first_out = cfg.scales - written    # ... and written
        self.down = nn.ModuleList()
        self.same = nn.ModuleList()
        self.has_down: List[bool] = []
        for s in range(self.first_out, cfg.scales):
            new = g * gf[s]
            if s - 1 >= self.first_in:   # a finer scale is read: half strided from it, half from itself
                self.down.append(_branch(channels * gf[s - 1], new // 2, 2, bf[s - 1]))
                self.same.append(_branch(channels * gf[s], new - new // 2, 1, bf[s]))
                self.has_down.append(True)
            else:
                self.down.append(nn.Identity())
                self.same.append(_branch(channels * gf[s], new, 1, bf[s]))
                self.has_down.append(False)

    def forward(self, h: Scales) -> Scales:
        out = []
        for j, (down, same, has_down) in enumerate(zip(self.down, self.same, self.has_down)):
            i = self.first_out - self.first_in + j   # position of this scale in the input list
            if has_down:
                out.append(torch.cat([h[i], down(h[i - 1]), same(h[i])], dim=1))
            else:
                out.append(torch.cat([h[i], same(h[i])], dim=1))
        return out


class Transition(nn.Module):
    """A 1x1 conv per kept scale, `channels -> kept` base channels."""

    def __init__(self, cfg: MSDNetConfig, channels: int, kept: int, written: int):
        super().__init__()
        first = cfg.scales - written
        self.convs = nn.ModuleList(_conv(channels * cfg.growth_factors[s], kept * cfg.growth_factors[s], 1)
                                   for s in range(first, cfg.scales))

    def forward(self, h: Scales) -> Scales:
        return [conv(x) for conv, x in zip(self.convs, h)]


class ScaleBlock(nn.Sequential):
    """A run of dense layers and transitions over the per-scale list."""


class ScaleClassifier(nn.Module):
    """The coarsest scale -> two 3x3 stride-2 convs -> global average pool -> Linear."""

    def __init__(self, cin: int, width: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(*_conv(cin, width, 3, 2), *_conv(width, width, 3, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(width, num_classes)

    def forward(self, h: Scales) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(self.features(h[-1])), 1))


class LastBlock(nn.Module):
    """The final block and its classifier: `MultiExitNet.head`."""

    def __init__(self, block: ScaleBlock, classifier: ScaleClassifier):
        super().__init__()
        self.block = block
        self.classifier = classifier

    def forward(self, h: Scales) -> torch.Tensor:
        return self.classifier(self.block(h))


def config_for(input_size: int) -> MSDNetConfig:
    """CIFAR's configuration at 32x32; at 64x64 (Tiny ImageNet) a stride-2 first conv, so the three
    scales run at 32/16/8 as on CIFAR (docs/method.md §2.4)."""
    if input_size == 32:
        return MSDNetConfig()
    if input_size == 64:
        return MSDNetConfig(stem_stride=2)
    raise ValueError(f"MSDNet is configured for 32x32 and 64x64 inputs, not {input_size}x{input_size}")


def msdnet(num_classes: int = 10, input_size: int = 32, cfg: MSDNetConfig | None = None) -> MultiExitNet:
    """MSDNet as a `MultiExitNet` with `cfg.blocks` exits (docs/method.md §2.4)."""
    cfg = cfg or config_for(input_size)
    if len(cfg.growth_factors) != cfg.scales or len(cfg.bottleneck_factors) != cfg.scales:
        raise ValueError("MSDNet needs one growth and one bottleneck factor per scale")
    stem = FirstLayer(cfg)
    channels, n = cfg.base_channels, 0
    blocks: List[ScaleBlock] = []
    classifiers: List[ScaleClassifier] = []
    for b in range(cfg.blocks):
        layers: List[nn.Module] = []
        for _ in range(cfg.base if b == 0 else cfg.step):
            n += 1
            read, written = cfg.layer_scales(n)
            layers.append(DenseLayer(cfg, channels, read, written))
            channels += cfg.growth
            if written < read and cfg.compression < 1:
                kept = int(math.floor(cfg.compression * channels))
                layers.append(Transition(cfg, channels, kept, written))
                channels = kept
        blocks.append(ScaleBlock(*layers))
        classifiers.append(ScaleClassifier(channels * cfg.growth_factors[-1], cfg.classifier_channels,
                                           num_classes))
    head = LastBlock(blocks[-1], classifiers[-1])
    model = MultiExitNet(Backbone(stem, blocks[:-1], head), classifiers[:-1])
    kaiming_init(model)
    model.msdnet_config = cfg
    return model


def scale_shapes(model: MultiExitNet, input_size: int) -> List[List[Tuple[int, int, int]]]:
    """(channels, height, width) of every scale after the first layer and after each block."""
    x = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad():
        was = model.training
        model.eval()
        h = model.stem(x)
        shapes = [[tuple(t.shape[1:]) for t in h]]
        for block in list(model.blocks) + [model.head.block]:
            h = block(h)
            shapes.append([tuple(t.shape[1:]) for t in h])
        model.train(was)
    return shapes


__all__: Sequence[str] = ("MSDNetConfig", "msdnet", "config_for", "scale_shapes")
