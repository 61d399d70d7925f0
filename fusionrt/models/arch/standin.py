"""Stand-ins for models whose architecture is not published: the real I/O contract, plausible
cost, random weights. Marked as stand-ins in the zoo (``extra["standin"]``) and in the
synthetic files' metadata; never a claim about the real model's output.

* ``converter512``: FaceFusion's crossface converters (512 -> 512) as one linear layer.
* ``hyperswap_standin``: FaceFusion's HyperSwap 256 (target (N, 3, 256, 256) in [-1, 1],
  source (N, 512) unit ArcFace vector, output in [-1, 1]) as the SimSwap-256 AdaIN generator
  with a final tanh: 55 M parameters, 125.7 GFLOP per frame at width 1 (HyperSwap's own FLOPs
  are unknown here).
* ``tanh_standin`` / ``clip_standin``: the same generator for ghost and hififace ([-1, 1]) and
  simswap_unofficial_512 ([0, 1], clip in the graph), whose architectures are not here
  (measured with ``profile``: 125.7 GFLOP at 256², 502.7 GFLOP at 512², 55.05 M parameters).
"""

from __future__ import annotations

import torch
from torch import nn

from .simswap import SimSwapGenerator


class Converter512(nn.Module):
    """An identity converter: raw 512-d ArcFace embedding -> another 512-d identity space."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(512, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def converter512(width: float = 1.0) -> Converter512:
    """One 512x512 linear layer (``width`` is ignored: the contract fixes 512)."""
    return Converter512()


class TanhGenerator(nn.Module):
    """The SimSwap-256 generator with a tanh output, i.e. a [-1, 1] contract."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.generator = SimSwapGenerator(width=width)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.generator(target, source))


def hyperswap_standin(width: float = 1.0) -> TanhGenerator:
    return TanhGenerator(width=width)


def tanh_standin(width: float = 1.0) -> TanhGenerator:
    """[-1, 1] generators without a reference architecture here (ghost, hififace)."""
    return TanhGenerator(width=width)


def clip_standin(width: float = 1.0) -> SimSwapGenerator:
    """[0, 1] generators without a reference architecture here (simswap_unofficial_512): the
    SimSwap generator (fully convolutional, so any input size) with the clip in the graph."""
    return SimSwapGenerator(width=width, clamp_output=True)
