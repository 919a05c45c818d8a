"""ResNets written out by hand (He et al. 2015/2016), torchvision-compatible.

Module attribute names deliberately mirror ``torchvision.models.resnet`` (conv1, bn1, relu,
maxpool, layer1..layer4, per-block conv/bn/downsample.0/.1, avgpool, fc) so that a torchvision
checkpoint loads into these models with ``strict=True`` and reproduces its outputs exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

Stem = Literal["imagenet", "cifar"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    # bias=False everywhere: every conv is followed by BN, whose shift makes a bias redundant.
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def projection_shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Option-B shortcut: 1x1 conv + BN, used only where the residual changes shape.

    A Sequential (not a named module) so the keys are ``downsample.0`` / ``downsample.1``
    exactly as in torchvision.
    """
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 convs; used by ResNet-18/34 and the CIFAR ResNets."""

    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4); used by ResNet-50/101/152.

    The stride sits on the 3x3 conv ("ResNet v1.5", as torchvision does) rather than on the
    first 1x1 as in the paper: same parameters, better accuracy, and identical checkpoints.
    """

    expansion: int = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """A ResNet with 3 or 4 stages; stage ``i`` has ``width * 2**i`` planes.

    ``len(layers) == 4`` with ``width=64`` is the ImageNet family; ``len(layers) == 3`` with
    ``width=16`` and the CIFAR stem is the family of He et al. 2016 §4.2.

    Outputs: logits (N, num_classes) by default; pooled features (N, num_features) when
    ``include_top=False``; the list of per-stage feature maps when ``features_only=True``.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: Stem = "imagenet",
        zero_init_residual: bool = False,
        include_top: bool = True,
        features_only: bool = False,
        width: int = 64,
    ):
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if not 1 <= len(layers) <= 4:
            raise ValueError(f"layers must list 1 to 4 stage depths, got {list(layers)}")
        self.stem = stem
        self.include_top = include_top
        self.features_only = features_only

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            # 32x32 inputs cannot afford a 4x downsampling stem; Identity keeps the key layout.
            self.conv1 = conv3x3(in_chans, width)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

        inplanes = width
        self.stage_names: list[str] = []
        self.stage_channels: list[int] = []
        for i, depth in enumerate(layers):
            planes = width * 2**i
            stage, inplanes = make_stage(block, inplanes, planes, depth, stride=1 if i == 0 else 2)
            name = f"layer{i + 1}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.stage_channels.append(inplanes)
        self.num_features = inplanes

        self.avgpool: nn.Module = nn.AdaptiveAvgPool2d((1, 1))
        # Without a head there is no fc key in the state dict, so checkpoints' fc is simply skipped.
        self.fc: nn.Module = (
            nn.Linear(self.num_features, num_classes) if include_top and not features_only else nn.Identity()
        )
        self.num_classes = num_classes if isinstance(self.fc, nn.Linear) else 0

        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each residual branch then starts as zero, so every block begins as the identity
            # (Goyal et al. 2017) -- helps large-batch training.
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    nn.init.zeros_(m.last_bn().weight)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, name) for name in self.stage_names]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        outs = []
        x = self.forward_stem(x)
        for stage in self.stages():
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map (N, num_features, H', W')."""
        x = self.forward_stem(x)
        for stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool a feature map and apply the classifier (unless there is none or ``pre_logits``)."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.features_only:
            return self.forward_stages(x)
        return self.forward_head(self.forward_features(x))


def make_stage(
    block: Block, inplanes: int, planes: int, depth: int, stride: int
) -> tuple[nn.Sequential, int]:
    """``depth`` blocks; only the first may change resolution / width. Returns (stage, out_planes)."""
    if depth < 1:
        raise ValueError(f"each stage needs at least one block, got {depth}")
    out_planes = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_planes:
        downsample = projection_shortcut(inplanes, out_planes, stride)
    blocks: list[nn.Module] = [block(inplanes, planes, stride, downsample)]
    blocks += [block(out_planes, planes) for _ in range(depth - 1)]
    return nn.Sequential(*blocks), out_planes


# --- ImageNet ResNets (He et al. 2015, Table 1) ---------------------------------------------


def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


def resnet101(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


def resnet152(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 8, 36, 3], **kwargs)


# --- CIFAR ResNets (He et al. 2016, §4.2): depth 6n+2, stages of 16/32/64 planes -------------
# The paper uses shortcut option A (zero-padded identity, parameter-free). These use option B
# (1x1 conv + BN projection where the shape changes, identity elsewhere), which is what the
# shared BasicBlock does; it adds 2 projections, e.g. resnet20 has 272,474 params vs 269,722.


def cifar_resnet(n: int, **kwargs) -> ResNet:
    kwargs.setdefault("stem", "cifar")
    kwargs.setdefault("num_classes", 10)
    return ResNet(BasicBlock, [n, n, n], width=16, **kwargs)


def resnet20(**kwargs) -> ResNet:
    return cifar_resnet(3, **kwargs)


def resnet32(**kwargs) -> ResNet:
    return cifar_resnet(5, **kwargs)


def resnet44(**kwargs) -> ResNet:
    return cifar_resnet(7, **kwargs)


def resnet56(**kwargs) -> ResNet:
    return cifar_resnet(9, **kwargs)


def resnet110(**kwargs) -> ResNet:
    return cifar_resnet(18, **kwargs)
