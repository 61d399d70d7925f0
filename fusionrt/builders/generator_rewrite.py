"""Exact rewrites of a generator's slow layers for the compiled torch engines (option ``rewrite``).

Why (issue 6, H100 profile of SimSwap-256 FP16 bs16 under torch.compile, 5.8 ms of kernels,
``benchmarks/results/2026-11-25-h100-r2/generator_steps.md``): the 18 bottleneck convs run
near the card's FP16 peak (1.8 ms), but the layers around them do not:

* ``head``: the last 64 -> 3, 7x7 conv at 256² took 0.84 ms (23 TFLOP/s): a 3-wide output
  leaves the tensor cores idle. Rewritten as one wide GEMM (64 -> 49 taps x 3 channels, a 1x1
  conv) followed by a shifted sum of the 49 tap planes in FP32: reflection padding commutes
  with a 1x1 conv, so the padding moves after the GEMM.
* ``stem``: the first 3 -> 64, 7x7 conv took 0.49 ms (40 TFLOP/s): explicit patches
  (im2col, K = 147) and one GEMM whose output is already channels_last.
* ``upconv``: bilinear 2x upsampling then a 3x3 conv (three decoder stages, ~0.5 ms of
  upsampling kernels writing a 4x larger tensor). Bilinear weights are fixed, so
  ``conv(up(x))`` equals one 3x3 conv on the low-resolution input with 4x the output
  channels (one per output phase) and a pixel shuffle. Only the outer ring of output pixels
  differs (the conv's zero padding sits outside the upsampled image), so those rows and
  columns are recomputed the original way, one output line each from 2-pixel slabs.
* ``style``: every AdaIN block computes its (scale, shift) with its own small linear layer
  from the same identity latent: 18 small GEMM launches (~3 us each at bs1). They become one
  concatenated linear, run once in the generator's ``style_input`` hook; each block reads
  its slice of the result.
* ``respad``: each residual block's output feeds both the next block's reflect-padded conv
  and its residual add, so the compiler writes it, then pads it in a second kernel. Chained
  blocks instead hand each other the padded tensor (written once, by the kernel that computes
  it) and read the residual from its interior.
* ``norm``: SimSwap's instance norm reads its input twice (mean, then mean of squares of
  the centred values); ``torch.var_mean`` gives both in one pass.

Every rewrite computes the same function (tests compare against the original module in FP32
on CPU); only rounding differs. Patterns are matched on ``nn.Sequential`` children, so any
module built that way (the reference SimSwap, also when loaded from a downloaded ONNX by
``models.arch.simswap.simswap_from_onnx``; our stand-ins) is rewritten; a module with none of
the patterns (an onnx2torch graph) is left as is and the counts say so.
The shifted sum is 49 slice-adds: one fused kernel under torch.compile, 49 in eager mode,
which is why the eager engine leaves ``rewrite`` off by default; torch-compile picks a set by
batch size (``TorchCompileEngine.AUTO_SMALL_BATCH``). What each part bought on an H100:
``benchmarks/results/2026-11-26-h100-r3/NOTES.md`` and the README.
Imports torch (only the torch engines use it).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

PARTS = ("norm", "upconv", "head", "stem", "style", "respad")
NARROW = 4  # a conv with at most this many input (stem) or output (head) channels is narrow


def parse_parts(value) -> tuple[str, ...]:
    """Option value -> parts: True/"all" = every part, False/None/"" = none, else a list or a
    comma-separated string of ``PARTS``."""
    if value in (None, False, "", 0, "none"):
        return ()
    if value is True or value == "all":
        return PARTS
    parts = value.split(",") if isinstance(value, str) else list(value)
    parts = tuple(p.strip() for p in parts if p.strip())
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"unknown rewrite part(s) {bad}; expected some of {list(PARTS)}")
    return parts


# -- the rewritten layers ---------------------------------------------------------------------

class InstanceNormVarMean(nn.Module):
    """``(x - mean) * rsqrt(var + eps)`` with mean and (biased) variance from one pass."""

    def __init__(self, epsilon: float):
        super().__init__()
        self.epsilon = epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, (2, 3), correction=0, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.epsilon)


# Bilinear 2x (align_corners=False) as weights on x[i-1], x[i], x[i+1] (rows e) of each of the
# upsampled taps 2i+a-1, 2i+a, 2i+a+1 (columns d), for output phase a = 0 and a = 1.
_PHASE = torch.tensor([[[0.75, 0.25, 0.00], [0.25, 0.75, 0.75], [0.00, 0.00, 0.25]],
                       [[0.25, 0.00, 0.00], [0.75, 0.75, 0.25], [0.00, 0.25, 0.75]]],
                      dtype=torch.float64)


class UpsampleConv(nn.Module):
    """``conv(upsample_bilinear_2x(x))`` for a 3x3, stride-1, zero-padding-1 conv, as one conv
    on the low-resolution input (4 phases x C_out channels) and a pixel shuffle.

    Inside the image the bilinear taps of x are those of x with its edge replicated (that is
    how ``upsample`` clamps), so the phase conv runs on a replicate-padded x. On the outer ring
    of the output the original conv reads its zero padding instead, so the first/last row and
    column are recomputed the original way, one output line each from 2-pixel slabs of x.
    Channels are phase-major ((a, b), then C_out), so the shuffle reads contiguous channels.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv  # kept for the border lines
        w = conv.weight.detach().double()
        k = torch.einsum("aed,bfg,oidg->aboief", _PHASE, _PHASE, w)  # (a, b, o, i, e, f)
        self.cout = w.shape[0]
        self.weight = nn.Parameter(k.reshape(4 * self.cout, w.shape[1], 3, 3).to(
            conv.weight.dtype), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(
            conv.bias.detach().repeat(4), requires_grad=False)

    @staticmethod
    def matches(up: nn.Module, conv: nn.Module) -> bool:
        return (isinstance(up, nn.Upsample) and up.mode == "bilinear" and not up.align_corners
                and up.size is None and up.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0))
                and isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)
                and conv.stride == (1, 1) and conv.padding == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1
                and conv.padding_mode == "zeros")

    def _line(self, slab: torch.Tensor, dim: int, first: bool) -> torch.Tensor:
        """The original op's first (or last) output line along ``dim`` (2 = rows, 3 = cols)
        from a 2-line slab of x: upsample it, keep the 2 lines next to the edge, add the zero
        line the original conv pads with, and convolve without padding along ``dim``."""
        u = F.interpolate(slab, scale_factor=2, mode="bilinear", align_corners=False)
        u = u.narrow(dim, 0 if first else 2, 2)
        # zeros: the original's padding line beyond the edge, and its usual 1 along the other dim
        pad = {(2, True): (1, 1, 1, 0), (2, False): (1, 1, 0, 1),
               (3, True): (1, 0, 1, 1), (3, False): (0, 1, 1, 1)}[dim, first]
        return F.conv2d(F.pad(u, pad), self.conv.weight, self.conv.bias)

    def _original(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h < 2 or w < 2:
            return self._original(x)
        y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.weight, self.bias)
        # (n, (a, b, o), h, w) -> (n, o, 2h, 2w): the pixel shuffle, phase-major
        y = y.view(n, 2, 2, self.cout, h, w).permute(0, 3, 4, 1, 5, 2).reshape(
            n, self.cout, 2 * h, 2 * w)
        top = self._line(x[:, :, :2], 2, True)
        bottom = self._line(x[:, :, -2:], 2, False)
        left = self._line(x[..., :2], 3, True)
        right = self._line(x[..., -2:], 3, False)
        # Selects, not cats: one pointwise pass that the compiler fuses with the shuffle and
        # whatever follows (BatchNorm, ReLU), instead of copying the whole output twice.
        r = torch.arange(2 * h, device=x.device).view(-1, 1)
        c = torch.arange(2 * w, device=x.device)
        y = torch.where(r == 0, top, torch.where(r == 2 * h - 1, bottom, y))
        return torch.where(c == 0, left, torch.where(c == 2 * w - 1, right, y))


def _reflect_conv(pad: nn.Module, conv: nn.Module) -> bool:
    """``ReflectionPad2d(p)`` then a square, stride-1, unpadded conv of kernel 2p+1."""
    if not (isinstance(pad, nn.ReflectionPad2d) and isinstance(conv, nn.Conv2d)):
        return False
    p = pad.padding
    k = conv.kernel_size
    return (len(set(p)) == 1 and k[0] == k[1] == 2 * p[0] + 1 and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1)


class ShiftSumConv(nn.Module):
    """Reflection pad + k x k conv with a narrow output, as a 1x1 conv to k*k*C_out tap planes
    (a wide GEMM) then the sum of the k*k shifted planes, accumulated and returned in FP32
    (the output head stays FP32, as ``fp16_module`` keeps it)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        co, ci, k, _ = conv.weight.shape
        self.k, self.cout = k, co
        # row (ky * k + kx) * C_out + c  <-  weight[c, :, ky, kx]
        self.weight = nn.Parameter(conv.weight.detach().permute(2, 3, 0, 1).reshape(k * k * co, ci)
                                   .clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(),
                                                                requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k, p = self.k, self.k // 2
        xt = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view when x is channels_last
        planes = torch.matmul(self.weight, xt.transpose(1, 2)).view(n, k * k * self.cout, h, w)
        planes = F.pad(planes, (p, p, p, p), mode="reflect")
        out = None
        for ky in range(k):
            for kx in range(k):
                t = (ky * k + kx) * self.cout
                s = planes[:, t:t + self.cout, ky:ky + h, kx:kx + w].float()
                out = s if out is None else out + s
        return out if self.bias is None else out + self.bias.float().view(1, -1, 1, 1)


class PatchConv(nn.Module):
    """Reflection pad + k x k conv with a narrow input, as explicit patches (``unfold``: one
    gather the compiler fuses with the padding, K = k*k*C_in rows) and one GEMM that reads
    them transposed, so its output is channels_last with no layout copy."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        co, ci, k, _ = conv.weight.shape
        self.k = k
        # row i * k * k + ky * k + kx (unfold's order)  ->  weight[:, i, ky, kx]
        self.weight = nn.Parameter(conv.weight.detach().reshape(co, ci * k * k).t().contiguous(),
                                   requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(),
                                                                requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.k // 2
        patches = F.unfold(F.pad(x, (p, p, p, p), mode="reflect"), self.k)  # (n, K, h*w)
        out = torch.matmul(patches.transpose(1, 2), self.weight)  # (n, h*w, C_out)
        if self.bias is not None:
            out = out + self.bias
        return out.view(n, h, w, -1).permute(0, 3, 1, 2)


class StyleBank(nn.Module):
    """The AdaIN style linears of a generator, concatenated (one GEMM for all of them)."""

    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in linears]),
                                   requires_grad=False)
        self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in linears]),
                                 requires_grad=False)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return F.linear(latent, self.weight, self.bias)


class BankedStyle(nn.Module):
    """SimSwap's ``ApplyStyle`` taking its (scale, shift) from a slice of the bank's output,
    which the generator computes once (its ``style_input``) and hands to every block."""

    def __init__(self, offset: int, channels: int):
        super().__init__()
        self.offset, self.channels = offset, channels

    def forward(self, x: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        o, c = self.offset, self.channels
        style = styles[:, o:o + 2 * c].view(-1, 2, c, 1, 1)
        return x * (style[:, 0] + 1.0) + style[:, 1]


def _bank_styles(module: nn.Module) -> int:
    """Every generator with an identity ``style_input`` hook (the SimSwap arch): its style
    linears become one bank computed there, and each block reads its slice."""
    count = 0
    for gen in module.modules():
        if not isinstance(getattr(gen, "style_input", None), nn.Identity):
            continue
        styles = [(parent, name, child) for parent in gen.modules()
                  for name, child in parent.named_children()
                  if type(child).__name__ == "ApplyStyle"
                  and isinstance(getattr(child, "linear", None), nn.Linear)]
        if not styles or any(child.linear.bias is None for _, _, child in styles):
            continue
        gen.style_input = StyleBank([child.linear for _, _, child in styles])
        offset = 0
        for parent, name, child in styles:
            setattr(parent, name, BankedStyle(offset, child.linear.out_features // 2))
            offset += child.linear.out_features
        count += len(styles)
    return count


class PaddedResBlock(nn.Module):
    """SimSwap's ``ResnetBlockAdain`` (reflect pad, conv, IN, style, ReLU, same again, plus x)
    taking its input already padded unless it is the first of the chain, and returning its
    output padded for the next block unless it is the last."""

    def __init__(self, block: nn.Module, first: bool, last: bool):
        super().__init__()
        self.block, self.first, self.last = block, first, last
        self.p = block.conv1[0].padding[0]

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        b, p = self.block, self.p
        xp = F.pad(x, (p, p, p, p), mode="reflect") if self.first else x
        y = b.act1(b.style1(b.conv1[2](b.conv1[1](xp)), latent))
        out = xp[:, :, p:-p, p:-p] + b.style2(b.conv2(y), latent)
        return out if self.last else F.pad(out, (p, p, p, p), mode="reflect")


def _is_adain_block(m: nn.Module) -> bool:
    conv1 = getattr(m, "conv1", None)
    return (type(m).__name__ == "ResnetBlockAdain" and isinstance(conv1, nn.Sequential)
            and len(conv1) == 3 and isinstance(conv1[0], nn.ReflectionPad2d)
            and len(set(conv1[0].padding)) == 1 and conv1[0].padding[0] > 0)


def _pad_chains(module: nn.Module) -> int:
    """Every ``nn.ModuleList`` made only of AdaIN residual blocks (SimSwap's ``BottleNeck``:
    the generator chains them, each output feeding only the next block)."""
    count = 0
    for m in list(module.modules()):
        if isinstance(m, nn.ModuleList) and len(m) > 1 and all(_is_adain_block(b) for b in m):
            n = len(m)
            for i in range(n):
                m[i] = PaddedResBlock(m[i], first=i == 0, last=i == n - 1)
            count += n
    return count


# -- matching ---------------------------------------------------------------------------------

def _rewrite_sequential(seq: nn.Sequential, parts: Iterable[str], counts: dict) -> None:
    children = list(seq.children())
    changed = False
    for i in range(len(children) - 1):
        a, b = children[i], children[i + 1]
        new, part = None, ""
        if "upconv" in parts and UpsampleConv.matches(a, b):
            new, part = UpsampleConv(b), "upconv"
        elif _reflect_conv(a, b) and min(b.in_channels, b.out_channels) <= NARROW:
            # narrow on its narrower side: output (head) or input (stem)
            if b.out_channels < b.in_channels and "head" in parts:
                new, part = ShiftSumConv(b), "head"
            elif b.out_channels >= b.in_channels and "stem" in parts:
                new, part = PatchConv(b), "stem"
        if new is not None:
            children[i], children[i + 1] = nn.Identity(), new
            counts[part] += 1
            changed = True
    if changed:
        for name, child in zip(list(seq._modules), children):
            seq._modules[name] = child


def rewrite_generator(module: nn.Module, parts=PARTS) -> dict[str, int]:
    """Rewrite ``module`` in place (eval, FP32, before any FP16 cast); returns how many layers
    each part changed. ``parts``: which of ``PARTS`` to apply (see ``parse_parts``)."""
    parts = parse_parts(parts)
    counts = {p: 0 for p in parts}
    with torch.no_grad():
        if "style" in parts:
            counts["style"] = _bank_styles(module)
        if "respad" in parts:
            counts["respad"] = _pad_chains(module)
        for parent in list(module.modules()):
            if isinstance(parent, nn.Sequential):
                _rewrite_sequential(parent, parts, counts)
            if "norm" in parts:
                for name, child in list(parent.named_children()):
                    if type(child).__name__ == "InstanceNorm" and hasattr(child, "epsilon"):
                        setattr(parent, name, InstanceNormVarMean(child.epsilon))
                        counts["norm"] += 1
    return counts
