"""Zero-pad conv channel counts to a multiple of 8 (the torch engines' ``align_channels``).

Why it was tried: cuDNN's fast NHWC implicit-GEMM kernels want channel counts that are
multiples of 8 at 16-bit precision, and generators begin and end with 3-channel 7x7 convs at
full resolution. On the H100 (SimSwap-256, bs16, torch.compile FP16 channels_last) those two
took 0.49 ms (3 -> 64) and 0.84 ms (64 -> 3) of a 5.8 ms run, at 40 and 23 TFLOP/s against
~770 for the 512-channel convs.

What it bought, measured in the same run: nothing (2639 vs 2665 FPS compiled, 956 vs 961
eager; ``benchmarks/results/2026-11-25-h100-r2/generator_steps.md`` steps 10/12, 6/13). The
3 -> 8 conv got a slightly better kernel (0.40 ms), the 64 -> 8 one kept the same Triton
template: the narrow output, not the alignment, is what makes it slow. So it is off by default;
kept as an option because the measurement should stay reproducible.

Padding is exact: extra input channels are zeros met by zero weights, extra output channels
are computed and sliced away, so every kept output is the same sum of the same products.
Imports torch (only the torch engines use it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def padded(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class ChannelPaddedConv(nn.Module):
    """``conv`` with zero channels added up to ``multiple``: input channels padded before it,
    output channels sliced after it. The conv object is kept (hooks on it still run)."""

    def __init__(self, conv: nn.Conv2d, multiple: int):
        super().__init__()
        self.cin, self.cout = conv.in_channels, conv.out_channels
        self.pad_in = padded(self.cin, multiple) - self.cin
        with torch.no_grad():
            w = F.pad(conv.weight, (0, 0, 0, 0, 0, self.pad_in,
                                    0, padded(self.cout, multiple) - self.cout))
            conv.weight = nn.Parameter(w, requires_grad=False)
            if conv.bias is not None:
                conv.bias = nn.Parameter(F.pad(conv.bias, (0, w.shape[0] - self.cout)),
                                         requires_grad=False)
        conv.in_channels, conv.out_channels = w.shape[1], w.shape[0]
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_in:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad_in))
        y = self.conv(x)
        return y[:, :self.cout] if y.shape[1] != self.cout else y


def align_conv_channels(module: nn.Module, multiple: int = 8) -> nn.Module:
    """Wrap every dense ``nn.Conv2d`` whose channel counts are not multiples of ``multiple``
    (in place; returns ``module``). Grouped convs and non-zero padding modes stay as they are."""

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, ChannelPaddedConv):
                continue
            if (isinstance(child, nn.Conv2d) and child.groups == 1
                    and child.padding_mode == "zeros"
                    and (child.in_channels % multiple or child.out_channels % multiple)):
                setattr(parent, name, ChannelPaddedConv(child, multiple))
            else:
                swap(child)

    swap(module)
    return module
