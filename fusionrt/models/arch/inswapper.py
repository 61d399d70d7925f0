"""A contract-identical stand-in for insightface's inswapper_128 (its code is unpublished).

The layout follows what the community read off the released ONNX graph (e.g. ReSwapper's
``StyleTransferModel_128``, whose weights map 1:1 from inswapper_128.onnx): a 7x7 reflect conv
to 128 channels, convs to 256 / 512 / 1024 (two stride-2, so 32x32 at the bottom), six AdaIN
style blocks at 1024 channels, a bilinear decoder, tanh and ``(x + 1) / 2``. At width 1.0,
measured with ``fusionrt.models.arch.profile``: 138.29 M parameters + the 262,144-value emap =
554.2 MB fp32 (the real file is 554,253,681 bytes), 349 GFLOP (2 x MACs) per 128x128 face.
Inputs: target (N, 3, 128, 128) RGB in [0, 1]; source (N, 512) = l2norm(embedding @ emap).
Output (N, 3, 128, 128) in [0, 1]. ``emap`` (512x512) is a buffer that ``forward`` never uses:
the exporter appends it as the ONNX graph's last initializer, where insightface reads it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import scaled


class AdaIN(nn.Module):
    """Instance norm (ONNX InstanceNormalization) then per-channel (gamma, beta) from the id."""

    def __init__(self, latent_size: int, channels: int):
        super().__init__()
        self.style = nn.Linear(latent_size, channels * 2)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(latent)[:, :, None, None].chunk(2, dim=1)
        return gamma * F.instance_norm(x, eps=1e-6) + beta


class StyleBlock(nn.Module):
    """conv -> AdaIN -> ReLU -> conv -> AdaIN, added to the input."""

    def __init__(self, channels: int, latent_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.adain1 = AdaIN(latent_size, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.adain2 = AdaIN(latent_size, channels)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.adain1(self.conv1(x), latent))
        return x + self.adain2(self.conv2(y), latent)


class InSwapperStandIn(nn.Module):
    """Encoder -> 6 style blocks at 1/4 size -> decoder -> (tanh + 1) / 2."""

    def __init__(self, width: float = 1.0, n_blocks: int = 6, latent_size: int = 512):
        super().__init__()
        c128, c256, c512, c1024 = (scaled(c, width) for c in (128, 256, 512, 1024))
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.down = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, c128, 7), act(),
            nn.Conv2d(c128, c256, 3, padding=1), act(),
            nn.Conv2d(c256, c512, 3, stride=2, padding=1), act(),
            nn.Conv2d(c512, c1024, 3, stride=2, padding=1), act())
        self.styles = nn.ModuleList(StyleBlock(c1024, latent_size) for _ in range(n_blocks))
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(c1024, c512, 3, padding=1), act(),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(c512, c256, 3, padding=1), act(),
            nn.Conv2d(c256, c128, 3, padding=1), act(),
            nn.ReflectionPad2d(3), nn.Conv2d(c128, 3, 7))
        # Not used by forward: the pipeline maps the embedding through it before the model.
        self.register_buffer("emap", torch.eye(latent_size))

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        x = self.down(target)
        for block in self.styles:
            x = block(x, source)
        return (torch.tanh(self.up(x)) + 1.0) / 2.0


def inswapper(width: float = 1.0) -> InSwapperStandIn:
    """The inswapper_128 stand-in (6 AdaIN style blocks, 512-d source latent)."""
    return InSwapperStandIn(width=width)
