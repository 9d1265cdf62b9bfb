"""Convolutional built-in models: ``cnn`` (LeNet-like) and ``resnet`` (CIFAR-style).

Inputs are ``[N, C, H, W]``; outputs are logits ``[N, num_classes]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import ConfigError
from landscape.models.dense import make_activation


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return int(image_size), int(image_size)
    h, w = (int(s) for s in image_size)
    return h, w


class CNN(nn.Module):
    """LeNet-like: ``[conv k x k (same padding) -> (BatchNorm) -> act -> maxpool 2] *
    len(channels)`` then ``Flatten -> [Linear -> act] * len(hidden) -> Linear``.

    LeCun et al. 1998 (LeNet-5) with 'same' padding so that 8x8 digits, 28x28 MNIST and 32x32
    CIFAR all fit. With ``batchnorm=True`` each conv drops its bias and is followed by
    ``BatchNorm2d`` (the BatchNorm variant the curvature tests need).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 28,
        num_classes: int = 10,
        channels: Sequence[int] = (6, 16),
        hidden: Sequence[int] = (120, 84),
        kernel_size: int = 5,
        batchnorm: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        h, w = _size(image_size)
        layers: list[nn.Module] = []
        c = int(in_channels)
        for ch in channels:
            layers.append(
                nn.Conv2d(
                    c, int(ch), int(kernel_size), padding=int(kernel_size) // 2, bias=not batchnorm
                )
            )
            if batchnorm:
                layers.append(nn.BatchNorm2d(int(ch)))
            layers += [make_activation(activation), nn.MaxPool2d(2)]
            c, h, w = int(ch), h // 2, w // 2
        if h < 1 or w < 1:
            raise ConfigError(
                f"cnn: image_size {image_size} is too small for {len(channels)} pooling stages",
                "use fewer entries in channels or a larger image",
            )
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        d = c * h * w
        for k in hidden:
            head += [nn.Linear(d, int(k)), make_activation(activation)]
            d = int(k)
        head.append(nn.Linear(d, int(num_classes)))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """He et al. 2016 basic block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    The shortcut is parameter-free ("option A", He et al. 2016 Sec. 4.2): subsample by the
    stride and zero-pad the new channels.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.pad = cout - cin

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            lo = self.pad // 2
            x = F.pad(x, (0, 0, 0, 0, lo, self.pad - lo))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet of depth ``6n + 2`` (He et al. 2016 Sec. 4.2): a 3x3 conv, three
    stages of ``n`` basic blocks with ``width, 2 width, 4 width`` channels (strides 1, 2, 2),
    global average pooling and a linear classifier. depth 20, width 16 is ResNet-20.
    """

    def __init__(
        self,
        *,
        depth: int = 20,
        width: int = 16,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        depth = int(depth)
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(
                f"resnet: depth {depth} is not 6n+2", "use depth 8, 14, 20, 32, 44, 56, ..."
            )
        n = (depth - 2) // 6
        w = int(width)
        self.conv = nn.Conv2d(int(in_channels), w, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(w)
        blocks: list[nn.Module] = []
        cin = w
        for stage, cout in enumerate((w, 2 * w, 4 * w)):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(cin, cout, stride))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, int(num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        return self.fc(out.mean(dim=(2, 3)))
