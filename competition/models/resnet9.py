"""ResNet-9: the small, wide residual net of the fastest CIFAR-10 trainers (Page / Myrtle.ai, DAWNBench 2018).

Each stage is conv → max-pool → BN → ReLU, so most arithmetic runs at a quarter of the previous
resolution, in wide convolutions that keep a CPU's matrix units busy; two of the stages add a
residual block of two 3×3 convs. The classifier reads a global max-pool scaled by `head_scale`
(Page's 0.125), which keeps the logits small early in training.

`width` scales every stage (64 → 64/128/256/512 channels, Page's net); `stem_stride` > 1 lets
the same design take larger images (e.g. 2 for 64–128 px photos) at the cost of one early stride.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv_bn(c_in: int, c_out: int, pool: bool = False, stride: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + f(x), f = two conv-BN-ReLU: the block keeps shape, so no projection is needed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        width: int = 64,
        stem_stride: int = 1,
        head_scale: float = 0.125,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if width < 1 or stem_stride < 1:
            raise ValueError(f"width and stem_stride must be positive, got {width} and {stem_stride}")
        w = width
        self.stem = conv_bn(in_chans, w, stride=stem_stride)
        self.layer1 = nn.Sequential(conv_bn(w, 2 * w, pool=True), Residual(2 * w))
        self.layer2 = conv_bn(2 * w, 4 * w, pool=True)
        self.layer3 = nn.Sequential(conv_bn(4 * w, 8 * w, pool=True), Residual(8 * w))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate else nn.Identity()
        self.num_features = 8 * w
        self.fc = nn.Linear(self.num_features, num_classes)
        self.head_scale = head_scale
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        return self.layer3(self.layer2(self.layer1(self.stem(x))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.fc(x) * self.head_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def resnet9(**kwargs) -> ResNet9:
    return ResNet9(**kwargs)
