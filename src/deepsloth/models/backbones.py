"""The three backbones of the paper (docs/method.md §2), written as stem -> blocks -> head.

Every backbone is a `Backbone`: `stem`, `blocks` (an `nn.ModuleList`, one entry per place an
internal classifier can go) and `head` (everything after the last block up to the final
logits). That shape is what lets `build_sdn` attach one IC after every block while sharing
the backbone's weights.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn


class Backbone(nn.Module):
    """A plain CNN: `head(blocks(stem(x)))`, returning the final logits only."""

    def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module], head: nn.Module):
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=bias), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


# ----------------------------------------------------------------------------- VGG16-BN

VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_POOL_AFTER = (1, 3, 6, 9, 12)  # 0-based block indices followed by 2x2 max-pooling


class VGGHead(nn.Module):
    """Linear -> Dropout -> Linear (no ReLU between them, as in the reference)."""

    def __init__(self, width: int, hidden: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.fc(h)))


def vgg16bn(num_classes: int = 10, input_size: int = 32) -> Backbone:
    blocks: List[nn.Module] = []
    cin = 3
    for i, cout in enumerate(VGG16_CHANNELS):
        layers = list(_conv_bn_relu(cin, cout, bias=True))
        if i in VGG16_POOL_AFTER:
            layers.append(nn.MaxPool2d(2))
        blocks.append(nn.Sequential(*layers))
        cin = cout
    final_map = input_size // 32
    flat = 512 * final_map * final_map
    # CIFAR: 512 -> 512 -> 512 -> 10; Tiny ImageNet: 2048 -> 2048 -> 1024 -> 200 (docs/method.md §2).
    hidden = 512 if flat <= 512 else 1024
    fc_block = nn.Sequential(nn.Flatten(), nn.Linear(flat, flat), nn.ReLU(inplace=True), nn.Dropout(0.5))
    blocks.append(fc_block)
    model = Backbone(nn.Identity(), blocks, VGGHead(flat, hidden, num_classes))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / k))
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return model


# ----------------------------------------------------------------------------- ResNet-56

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class PoolLinear(nn.Module):
    """Global average pool -> flatten -> Linear."""

    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(h), 1))


def resnet56(num_classes: int = 10, input_size: int = 32) -> Backbone:
    # Tiny ImageNet (64x64) uses a stride-2 stem so both datasets run at 32x32 after it.
    stem_stride = max(1, input_size // 32)
    stem = _conv_bn_relu(3, 16, stride=stem_stride)
    blocks: List[nn.Module] = []
    cin = 16
    for stage, width in enumerate((16, 32, 64)):
        for i in range(9):
            stride = 2 if (stage > 0 and i == 0) else 1
            blocks.append(BasicBlock(cin, width, stride))
            cin = width
    model = Backbone(stem, blocks, PoolLinear(64, num_classes))
    kaiming_init(model, linear_std=0.01)
    return model


def kaiming_init(model: nn.Module, linear_std: Optional[float] = None) -> None:
    """Kaiming-normal (fan-out) convolutions, BatchNorm scale 1 and shift 0, Linear biases 0 and, with
    `linear_std`, Linear weights normal with that std (else PyTorch's default), in module order."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- MobileNet

MOBILENET_CFG: Tuple[Union[int, Tuple[int, int]], ...] = (
    64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512, (1024, 2), 1024)


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.pw(self.relu(self.bn1(self.dw(x))))))


def mobilenet(num_classes: int = 10, input_size: int = 32) -> Backbone:
    stem = _conv_bn_relu(3, 32)
    blocks: List[nn.Module] = []
    cin = 32
    for item in MOBILENET_CFG:
        cout, stride = (item, 1) if isinstance(item, int) else item
        blocks.append(DepthwiseSeparable(cin, cout, stride))
        cin = cout
    return Backbone(stem, blocks, PoolLinear(1024, num_classes))
