"""SimSwap generator (neuralchen/SimSwap ``models/fs_networks_fix.py``,
``Generator_Adain_Upsample`` with ``deep=False``: the 224/256 variant), re-written.

Module names follow SimSwap's (``first_layer``, ``down1..3``, ``BottleNeck.i.conv1/style1``,
``up3..1``, ``last_layer``) so its ``latest_net_G.pth`` loads at ``width=1.0``.
Inputs: target (N, 3, 256, 256) ImageNet-normalised RGB, source (N, 512) L2-normalised ArcFace
id. Output (N, 3, 256, 256): SimSwap has *no* final activation (its ``(x + 1) / 2`` is commented
out) and users clip to [0, 1]; ``clamp_output=True`` puts that clip in the graph (synthetic
weights use it so the declared range holds).
At width 1.0, measured with ``fusionrt.models.arch.profile`` at 256x256: 55.05 M parameters,
125.7 GFLOP (2 x MACs of convs and linears) per frame.
"""

from __future__ import annotations

import torch
from torch import nn

from . import scaled


class InstanceNorm(nn.Module):
    """Instance norm from explicit mean / rsqrt, as SimSwap writes it (no affine, eps 1e-8).

    Kept as primitive ops (ReduceMean, Mul, Rsqrt) because that is what SimSwap's ONNX exports
    contain; the FP16 converter must keep this pattern in FP32.
    """

    def __init__(self, epsilon: float = 1e-8):
        super().__init__()
        self.epsilon = epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - torch.mean(x, (2, 3), True)
        return x * torch.rsqrt(torch.mean(x * x, (2, 3), True) + self.epsilon)


class ApplyStyle(nn.Module):
    """AdaIN modulation: a linear map of the id latent gives per-channel (scale, shift)."""

    def __init__(self, latent_size: int, channels: int):
        super().__init__()
        self.linear = nn.Linear(latent_size, channels * 2)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        style = self.linear(latent).view(-1, 2, x.size(1), 1, 1)
        return x * (style[:, 0] + 1.0) + style[:, 1]


class ResnetBlockAdain(nn.Module):
    """Reflect-pad conv -> IN -> style -> ReLU -> reflect-pad conv -> IN -> style, plus x."""

    def __init__(self, dim: int, latent_size: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm())
        self.style1 = ApplyStyle(latent_size, dim)
        self.act1 = nn.ReLU(True)
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm())
        self.style2 = ApplyStyle(latent_size, dim)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.style1(self.conv1(x), latent))
        return x + self.style2(self.conv2(y), latent)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout),
                         nn.ReLU(True))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True))


class SimSwapGenerator(nn.Module):
    """Encoder (7x7 + 3 stride-2 convs) -> 9 AdaIN res-blocks at 1/8 size -> bilinear decoder."""

    def __init__(self, width: float = 1.0, n_blocks: int = 9, latent_size: int = 512,
                 clamp_output: bool = False):
        super().__init__()
        c64, c128, c256, c512 = (scaled(c, width) for c in (64, 128, 256, 512))
        self.clamp_output = clamp_output
        self.first_layer = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, c64, 7),
                                         nn.BatchNorm2d(c64), nn.ReLU(True))
        self.down1 = _down(c64, c128)
        self.down2 = _down(c128, c256)
        self.down3 = _down(c256, c512)
        self.BottleNeck = nn.ModuleList(
            ResnetBlockAdain(c512, latent_size) for _ in range(n_blocks))
        self.up3 = _up(c512, c256)
        self.up2 = _up(c256, c128)
        self.up1 = _up(c128, c64)
        self.last_layer = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c64, 3, 7))
        # What the blocks' styles read: the id latent itself. A hook for the compiled engines'
        # rewrite (build.generator_rewrite, part "style"), which puts all 18 style linears here
        # as one GEMM; no parameters, so SimSwap's checkpoints load unchanged.
        self.style_input = nn.Identity()

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        x = self.down3(self.down2(self.down1(self.first_layer(target))))
        latent = self.style_input(source)
        for block in self.BottleNeck:
            x = block(x, latent)
        x = self.last_layer(self.up1(self.up2(self.up3(x))))
        return x.clamp(0.0, 1.0) if self.clamp_output else x


def simswap256(width: float = 1.0, clamp_output: bool = False) -> SimSwapGenerator:
    """The SimSwap 224/256 generator (9 AdaIN blocks, 512-d id latent)."""
    return SimSwapGenerator(width=width, clamp_output=clamp_output)
