"""ResNet-18 and ResNet-34 in torchvision's layout (He et al. 2016, Table 1), written here because
torchvision's wheels do not import beside every torch build.

The module and parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``), so a ``torchvision.models.resnet18(num_classes=10)``
state_dict loads into :func:`resnet18` unchanged: 11,181,642 parameters at 10 classes.
``stem="cifar"`` swaps the 7x7/2 convolution and max-pool for one 3x3/1 convolution (the common
CIFAR variant, about 15x the arithmetic on 32x32 images).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from landscape.errors import ConfigError


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1 x)))) + downsample(x))``; the downsample is a 1x1
    convolution and BatchNorm when the stride or width changes (torchvision's "option B")."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TorchvisionResNet(nn.Module):
    """torchvision's ``ResNet`` with basic blocks: stem, four stages of ``blocks[i]`` blocks with
    64, 128, 256, 512 channels (strides 1, 2, 2, 2), global average pooling, ``fc``."""

    def __init__(self, blocks: tuple[int, int, int, int], *, num_classes: int = 1000,
                 in_channels: int = 3,
                 stem: Literal["imagenet", "cifar"] = "imagenet") -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ConfigError(f"unknown resnet stem {stem!r}",
                              "choose imagenet (7x7/2 + max-pool) or cifar (3x3/1)")
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(int(in_channels), 64, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(int(in_channels), 64, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        cin = 64
        for i, (width, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(count):
                layers.append(BasicBlock(cin, width, stride if j == 0 else 1))
                cin = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, int(num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(*, num_classes: int = 10, in_channels: int = 3, stem: Literal["imagenet",
    "cifar"] = "imagenet") -> TorchvisionResNet:
    """ResNet-18 (blocks 2, 2, 2, 2) in torchvision's layout."""
    return TorchvisionResNet((2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels,
                             stem=stem)


def resnet34(*, num_classes: int = 10, in_channels: int = 3, stem: Literal["imagenet",
    "cifar"] = "imagenet") -> TorchvisionResNet:
    """ResNet-34 (blocks 3, 4, 6, 3) in torchvision's layout."""
    return TorchvisionResNet((3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels,
                             stem=stem)
