"""Stand-ins for FaceFusion 3.8.1's face-mask models (``facefusion/face_masker.py``): the real
I/O contracts, plausible cost, random weights. Never a claim about the real models' masks.

* ``xseg_standin``: FaceFusion's xseg_1/2/3 (DeepFaceLab XSeg). Contract: ``input``
  (N, 256, 256, 3), BGR crop / 255, NHWC; output (N, 256, 256, 1) in [0, 1], NHWC. Network:
  DeepFaceLab XSegNet's plan at base 32 (conv blocks of 32, 64, 128, 256, 256, 256 channels on six
  levels, 256 -> 4, a 4x4x256 -> 512 -> 4x4x256 dense bottleneck, a decoder with skip
  concatenations, 3x3 output conv, sigmoid), with XSeg's FRN + TLU after every conv; average
  pooling stands in for its BlurPool, nearest upsampling + 3x3 conv for its transposed convs.
  Measured with ``profile`` at width 1: 17.72 M parameters, 34.81 GFLOP per crop (width
  0.0625: 0.07 M, 0.22 GFLOP).
* ``bisenet_resnet18_standin`` / ``bisenet_resnet34_standin``: FaceFusion's bisenet_resnet_18
  / _34 (yakhyo/face-parsing). Contract: ``input`` (N, 3, 512, 512), RGB, ImageNet-normalised;
  output (N, 19, 512, 512) class logits. Network: BiSeNet as that repository publishes it
  (models/bisenet.py, models/resnet.py; written here, not copied): ResNet-18/34 backbone
  (features at 1/8, 1/16, 1/32), context path with attention refinement on 1/16 and 1/32 and a
  global-average branch, feature fusion of the 1/8 backbone features with the context, a
  3x3 + 1x1 head to 19 classes, bilinear (align_corners) upsampling to the input. Only the main
  head is an output (the two auxiliary heads exist for training; FaceFusion reads output 0).
  Measured with ``profile`` at width 1: ResNet-18 13.15 M parameters, 26.77 GFLOP; ResNet-34
  23.26 M parameters, 46.10 GFLOP per 512x512 crop (ResNet-18 at width 0.0625: 0.05 M,
  0.18 GFLOP).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import scaled


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


# -- XSeg --------------------------------------------------------------------------------------

class FRNTLU(nn.Module):
    """XSeg's normalisation: filter response norm (x / rms over the pixels, per sample and
    channel) then the thresholded linear unit max(gamma x + beta, tau). Per sample, so a random
    net answers a photo on the scale it answers noise (BatchNorm statistics would not)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.tau = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean((2, 3), keepdim=True) + self.eps)
        return torch.maximum(self.weight * x + self.bias, self.tau)


def _conv_frn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), FRNTLU(cout))


class XSegStandin(nn.Module):
    """An XSeg-shaped segmentation net: NHWC in, NHWC (N, H, W, 1) sigmoid mask out."""

    def __init__(self, width: float = 1.0, base: int = 32, resolution: int = 256) -> None:
        super().__init__()
        c = [scaled(base * m, width) for m in (1, 2, 4, 8, 8, 8)]
        reps = (2, 2, 3, 3, 3, 3)
        self.down = nn.ModuleList()
        cin = 3
        for ch, n in zip(c, reps):
            self.down.append(nn.Sequential(*[_conv_frn(cin if i == 0 else ch, ch)
                                             for i in range(n)]))
            cin = ch
        self.side = resolution // 2 ** len(c)
        flat = c[-1] * self.side * self.side
        self.dense = nn.Sequential(nn.Linear(flat, scaled(512, width)),
                                   nn.Linear(scaled(512, width), flat))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        prev = c[-1]
        for lvl in range(len(c) - 1, -1, -1):  # 4 -> 8 -> ... -> 256
            up = scaled(base * 4, width) if lvl >= 2 else c[lvl]
            self.up.append(_conv_frn(prev, up))
            n = 3 if lvl >= 3 else 2
            self.dec.append(nn.Sequential(*[_conv_frn(up + c[lvl] if i == 0 else c[lvl],
                                                          c[lvl]) for i in range(n)]))
            prev = c[lvl]
        self.out = nn.Conv2d(c[0], 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.permute(0, 3, 1, 2)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = F.avg_pool2d(h, 2)
        n, ch = h.shape[0], h.shape[1]
        h = self.dense(h.flatten(1)).view(n, ch, self.side, self.side)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = dec(torch.cat([h, skip], 1))
        return torch.sigmoid(self.out(h)).permute(0, 2, 3, 1)


def xseg_standin(width: float = 1.0) -> XSegStandin:
    return XSegStandin(width=width)


# -- BiSeNet -----------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                         nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetFeatures(nn.Module):
    """ResNet (basic blocks) returning the 1/8, 1/16 and 1/32 feature maps."""

    def __init__(self, layers: tuple[int, ...], width: float) -> None:
        super().__init__()
        c = [scaled(64 * m, width) for m in (1, 2, 4, 8)]
        self.stem = nn.Sequential(nn.Conv2d(3, c[0], 7, 2, 3, bias=False), nn.BatchNorm2d(c[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.ModuleList()
        cin = c[0]
        for i, (ch, n) in enumerate(zip(c, layers)):
            blocks = [BasicBlock(cin, ch, 1 if i == 0 else 2)]
            blocks += [BasicBlock(ch, ch) for _ in range(n - 1)]
            self.stages.append(nn.Sequential(*blocks))
            cin = ch
        self.channels = c

    def forward(self, x: torch.Tensor):
        x = self.stages[0](self.stem(x))
        f8 = self.stages[1](x)
        f16 = self.stages[2](f8)
        return f8, f16, self.stages[3](f16)


class AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = _conv_bn_relu(cin, cout)
        self.attention = nn.Sequential(nn.Conv2d(cout, cout, 1, bias=False),
                                       nn.BatchNorm2d(cout), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * self.attention(feat.mean((2, 3), keepdim=True))


class FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = _conv_bn_relu(cin, cout, 1)
        self.conv1 = nn.Conv2d(cout, max(1, cout // 4), 1, bias=False)
        self.conv2 = nn.Conv2d(max(1, cout // 4), cout, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.conv(torch.cat([fsp, fcp], 1))
        att = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat * att + feat


class BiSeNetStandin(nn.Module):
    """BiSeNet for face parsing: (N, 3, H, W) normalised RGB -> (N, classes, H, W) logits."""

    def __init__(self, layers: tuple[int, ...], width: float = 1.0, classes: int = 19) -> None:
        super().__init__()
        self.backbone = ResNetFeatures(layers, width)
        c8, c16, c32 = self.backbone.channels[1:]
        mid = scaled(128, width)
        self.arm16 = AttentionRefinement(c16, mid)
        self.arm32 = AttentionRefinement(c32, mid)
        self.head32 = _conv_bn_relu(mid, mid)
        self.head16 = _conv_bn_relu(mid, mid)
        self.conv_avg = _conv_bn_relu(c32, mid, 1)
        fuse = scaled(256, width)
        self.ffm = FeatureFusion(c8 + mid, fuse)
        self.out = nn.Sequential(_conv_bn_relu(fuse, fuse), nn.Conv2d(fuse, classes, 1,
                                                                      bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        f8, f16, f32 = self.backbone(x)
        avg = self.conv_avg(f32.mean((2, 3), keepdim=True))
        up32 = F.interpolate(self.arm32(f32) + avg, size=f16.shape[2:], mode="nearest")
        up32 = self.head32(up32)
        up16 = F.interpolate(self.arm16(f16) + up32, size=f8.shape[2:], mode="nearest")
        up16 = self.head16(up16)
        logits = self.out(self.ffm(f8, up16))
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=True)


def bisenet_resnet18_standin(width: float = 1.0) -> BiSeNetStandin:
    return BiSeNetStandin((2, 2, 2, 2), width=width)


def bisenet_resnet34_standin(width: float = 1.0) -> BiSeNetStandin:
    return BiSeNetStandin((3, 4, 6, 3), width=width)
