"""ArcFace IResNet (insightface ``recognition/arcface_torch/backbones/iresnet.py``), re-written.

Parameter names follow insightface's so a real ``backbone.pth`` (e.g. the w600k_r50 training
checkpoint) loads with ``load_state_dict`` at ``width=1.0``. Input (N, 3, 112, 112) normalised
as ``(x - 127.5) / 127.5``; output (N, 512), *not* L2-normalised (the embed stage does that).
At width 1.0, measured with ``fusionrt.models.arch.profile``: 43.59 M parameters, 12.6 GFLOP
(2 x MACs; the 6.3 G MACs insightface quotes as "GFLOPs") per 112x112 face.
"""

from __future__ import annotations

import torch
from torch import nn

from . import scaled


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride here) -> BN, plus the shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """Stem (3x3 conv, BN, PReLU), four stride-2 stages, BN -> flatten -> dropout -> fc -> BN1d."""

    fc_scale = 7 * 7  # 112 / 2**4 = 7

    def __init__(self, layers: tuple[int, int, int, int], width: float = 1.0,
                 num_features: int = 512, dropout: float = 0.0):
        super().__init__()
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-5)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(planes[0], layers[0])
        self.layer2 = self._make_layer(planes[1], layers[1])
        self.layer3 = self._make_layer(planes[2], layers[2])
        self.layer4 = self._make_layer(planes[3], layers[3])
        self.bn2 = nn.BatchNorm2d(planes[3], eps=1e-5)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(planes[3] * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # fixed in training, as in insightface

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        # Every stage halves the resolution in its first block, so each needs a projection.
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, 1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=1e-5))
        layers = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


def iresnet50(width: float = 1.0, dropout: float = 0.0) -> IResNet:
    """IResNet-50: stages of [3, 4, 14, 3] IBasicBlocks."""
    return IResNet((3, 4, 14, 3), width=width, dropout=dropout)
