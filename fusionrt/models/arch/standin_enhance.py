"""Stand-ins for FaceFusion's face enhancers (GFPGAN 1.4, GPEN-BFR 256/512, CodeFormer,
RestoreFormer++): the real I/O contract, a cost near the real model's, random weights.

The real architectures are public (StyleGAN2 decoders with SFT, VQ codebooks, transformers)
but large; what the pipeline needs from a stand-in is the contract and the cost, so every one
here is the same small U-Net: ``input`` (N, 3, S, S) RGB in [-1, 1] → ``output`` (N, 3, S, S)
in [-1, 1] (tanh), fully convolutional. CodeFormer's stand-in also takes ``weight``, a float64
(1,) array as FaceFusion feeds it (``face_enhancer/core.py`` ``enhance_face``), which scales
the encoder's skip connections as CodeFormer's fidelity weight scales its fused encoder
features (w = 0: codebook path only, w = 1: most faithful to the input).

FLOPs per face at width 1 (2 x MACs of Conv2d, ``fusionrt.models.arch.profile``) against the
public architectures' (``torch.utils.flop_counter`` on random weights; figures and sources in
``fusionrt.models.facefusion_enhancers.ENHANCER_GFLOP``): GFPGAN 1.4 390.0 vs 395.6, GPEN-BFR-256
18.0 vs 17.4, GPEN-BFR-512 274.9 vs 276.2, CodeFormer 795.0 vs 809.8, RestoreFormer++ 680.4 vs
687.6. Parameters are fewer (4.9-54 M against 19-94 M): a cost stand-in, not a capacity one.
"""

from __future__ import annotations

import torch
from torch import nn

from . import scaled

LEVELS = 4  # S -> S/16: every contract size (256, 512) divides


class _Res(nn.Module):
    """conv-act-conv with an identity skip (no norm: nothing for batch statistics to learn)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EnhanceUNet(nn.Module):
    """Encoder (stride-2 convs, channels doubling to 8x) → residual middle → decoder (nearest
    upsample + conv, encoder skips added) → tanh head."""

    def __init__(self, base: int, width: float = 1.0, weight_input: bool = False) -> None:
        super().__init__()
        chans = [scaled(base * min(2 ** i, 8), width) for i in range(LEVELS + 1)]
        self.weight_input = weight_input
        self.stem = nn.Sequential(nn.Conv2d(3, chans[0], 3, padding=1), nn.LeakyReLU(0.2),
                                  _Res(chans[0]))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1),
                          nn.LeakyReLU(0.2), _Res(chans[i + 1])) for i in range(LEVELS))
        self.middle = nn.Sequential(_Res(chans[-1]), _Res(chans[-1]))
        self.up = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"),
                          nn.Conv2d(chans[i + 1], chans[i], 3, padding=1), nn.LeakyReLU(0.2))
            for i in reversed(range(LEVELS)))
        self.fuse = nn.ModuleList(_Res(chans[i]) for i in reversed(range(LEVELS)))
        self.head = nn.Conv2d(chans[0], 3, 3, padding=1)

    def forward(self, input: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        h = self.stem(input)
        skips = [h]
        for block in self.down:
            h = block(h)
            skips.append(h)
        h = self.middle(h)
        # CodeFormer-like fidelity: the skips count by w (a float64 (1,) input, cast here)
        w = weight.to(h.dtype).reshape(1, 1, 1, 1) if self.weight_input else None
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips[:-1])):
            h = up(h)
            h = fuse(h + (skip * w if w is not None else skip))
        return torch.tanh(self.head(h))


# Base channels per model: chosen so the width-1 FLOPs land near the real model's.
BASES = {"gfpgan": 56, "gpen256": 24, "gpen512": 47, "codeformer": 80, "restoreformer": 74}


def gfpgan_standin(width: float = 1.0) -> EnhanceUNet:
    return EnhanceUNet(BASES["gfpgan"], width)


def gpen256_standin(width: float = 1.0) -> EnhanceUNet:
    return EnhanceUNet(BASES["gpen256"], width)


def gpen512_standin(width: float = 1.0) -> EnhanceUNet:
    return EnhanceUNet(BASES["gpen512"], width)


def codeformer_standin(width: float = 1.0) -> EnhanceUNet:
    return EnhanceUNet(BASES["codeformer"], width, weight_input=True)


def restoreformer_standin(width: float = 1.0) -> EnhanceUNet:
    return EnhanceUNet(BASES["restoreformer"], width)
