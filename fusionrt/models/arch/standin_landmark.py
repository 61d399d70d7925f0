"""A stand-in for FaceFusion's ``2dfan4.onnx``: the published 2D-FAN-4 network (Bulat and
Tzimiropoulos, "How far are we from solving the 2D & 3D Face Alignment problem?", ICCV 2017; the
``FAN`` class of github.com/1adrianb/face-alignment, models.py) with random weights and the I/O
contract FaceFusion 3.8.1 feeds and reads (``facefusion/face_landmarker.py``
``detect_with_2dfan4``).

* Network: 7x7/2 stem, three bottleneck ``ConvBlock``s (3x3 convs of out/2, out/4, out/4
  channels, concatenated, pre-activation BatchNorm + ReLU), then 4 stacked hourglasses of depth
  4 on 256 features at 64x64, each followed by a 1x1 head to 68 heatmaps and (but the last) the
  1x1 re-injection of features and heatmaps. Measured with ``profile`` at width 1:
  23.82 M parameters, 50.47 GFLOP (2 x MACs of every conv) per 256x256
  face; width 0.0625: 0.105 M, 0.297 GFLOP.
* Contract: ``input`` (N, 3, 256, 256), the crop / 255 (FaceFusion feeds BGR); outputs
  ``landmarks`` (N, 68, 3): x, y on the 64x64 heatmap grid and the peak value, and
  ``heatmaps`` (N, 68, 64, 64), the last hourglass's heatmaps. FaceFusion reads both by
  position (``landmarks[:, :, :2] / 64 * 256``; score from the heatmap maxima).
* The real file's in-graph decoding is not published; the one here is face-alignment's
  ``get_preds_fromhm``: argmax cell, a quarter cell towards the larger neighbour, on the cell
  centre (+0.5).

FaceFusion names breadbread1984 (2DFAN4-tf2.0, the same topology with LeakyReLU) as the vendor;
the weights here are random: never a claim about the real model's landmarks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POINTS = 68
GRID = 64  # heatmap side for a 256 input


def _ch(channels: int, width: float) -> int:
    """``channels * width`` as a multiple of 4 (a ConvBlock splits out/2, out/4, out/4), >= 8."""
    return max(8, 4 * int(round(channels * width / 4)))


class ConvBlock(nn.Module):
    """face-alignment's bottleneck: three 3x3 convs whose outputs are concatenated, plus a
    (BN, ReLU, 1x1 conv) shortcut when the channel count changes."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        half, quarter = cout // 2, cout // 4
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, cout - half - quarter, 3, padding=1, bias=False)
        self.downsample = None if cin == cout else nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(True), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.conv1(F.relu(self.bn1(x)))
        o2 = self.conv2(F.relu(self.bn2(o1)))
        o3 = self.conv3(F.relu(self.bn3(o2)))
        res = x if self.downsample is None else self.downsample(x)
        return torch.cat((o1, o2, o3), 1) + res


class HourGlass(nn.Module):
    """Depth-``depth`` hourglass: a full-resolution branch plus avg-pool → recurse → nearest
    upsample, added."""

    def __init__(self, depth: int, features: int) -> None:
        super().__init__()
        self.up1 = ConvBlock(features, features)
        self.low1 = ConvBlock(features, features)
        self.low2 = HourGlass(depth - 1, features) if depth > 1 else ConvBlock(features, features)
        self.low3 = ConvBlock(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.low3(self.low2(self.low1(F.avg_pool2d(x, 2, stride=2))))
        return self.up1(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


class FAN(nn.Module):
    """2D-FAN with ``stacks`` hourglasses (4 = 2DFAN4); forward returns (landmarks, heatmaps)."""

    def __init__(self, stacks: int = 4, width: float = 1.0) -> None:
        super().__init__()
        c64, c128, c256 = _ch(64, width), _ch(128, width), _ch(256, width)
        self.conv1 = nn.Conv2d(3, c64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(c64)
        self.conv2 = ConvBlock(c64, c128)
        self.conv3 = ConvBlock(c128, c128)
        self.conv4 = ConvBlock(c128, c256)
        self.stacks = stacks
        for i in range(stacks):
            self.add_module(f"m{i}", HourGlass(4, c256))
            self.add_module(f"top_m{i}", ConvBlock(c256, c256))
            self.add_module(f"conv_last{i}", nn.Conv2d(c256, c256, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(c256))
            self.add_module(f"l{i}", nn.Conv2d(c256, POINTS, 1))
            if i < stacks - 1:
                self.add_module(f"bl{i}", nn.Conv2d(c256, c256, 1))
                self.add_module(f"al{i}", nn.Conv2d(POINTS, c256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))
        previous, heat = x, x
        for i in range(self.stacks):
            m = self._modules
            ll = m[f"top_m{i}"](m[f"m{i}"](previous))
            ll = F.relu(m[f"bn_end{i}"](m[f"conv_last{i}"](ll)))
            heat = m[f"l{i}"](ll)
            if i < self.stacks - 1:
                previous = previous + m[f"bl{i}"](ll) + m[f"al{i}"](heat)
        return decode_heatmaps(heat), heat


def decode_heatmaps(heat: torch.Tensor) -> torch.Tensor:
    """(N, 68, H, W) → (N, 68, 3): face-alignment ``get_preds_fromhm`` (argmax, +-0.25 towards
    the larger neighbour away from the border, +0.5 to the cell centre) and the peak value."""
    n, p, h, w = heat.shape
    flat = heat.reshape(n, p, h * w)
    peak, idx = flat.max(dim=-1)
    x, y = idx % w, torch.div(idx, w, rounding_mode="floor")

    def at(dx: int, dy: int) -> torch.Tensor:
        j = ((y + dy).clamp(0, h - 1) * w + (x + dx).clamp(0, w - 1)).unsqueeze(-1)
        return torch.gather(flat, -1, j).squeeze(-1)

    inside = ((x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)).to(heat.dtype)
    fx = x.to(heat.dtype) + 0.5 + 0.25 * torch.sign(at(1, 0) - at(-1, 0)) * inside
    fy = y.to(heat.dtype) + 0.5 + 0.25 * torch.sign(at(0, 1) - at(0, -1)) * inside
    return torch.stack([fx, fy, peak], dim=-1)


def fan4_standin(width: float = 1.0) -> FAN:
    """2DFAN4 (4 stacked hourglasses) at ``width`` times the published channel counts."""
    return FAN(stacks=4, width=width)
