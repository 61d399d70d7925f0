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

import json
import logging
import re

import numpy as np
import torch
from torch import nn

from ..._fs import sha256_file
from ...runtime.cache import EngineCache, Fingerprint
from ...runtime.machine import library_version
from ...errors import ModelError
from . import read_onnx_graph, scaled

log = logging.getLogger(__name__)


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


# -- loading an ONNX export -------------------------------------------------------------------

def simswap_from_onnx(path) -> SimSwapGenerator:
    """The native module (eval, FP32, CPU) with its weights from an ONNX export of SimSwap-256.

    Why: the torch engines then run the downloaded ``simswap_256.onnx`` as this module, not as
    an onnx2torch graph, so torch-compile's layer rewrites (``build.generator_rewrite``) apply
    to the real weights too. Mapping: the 26 Conv nodes in graph order onto the module's 26
    convs (shapes and attributes checked); BatchNorm nodes onto its 7 BatchNorms, or, where the
    exporter folded them into the convs (torch's eval-mode export does), those BatchNorms become
    identities; the 18 style linears (Gemm, or MatMul + Add) by their SimSwap names when the
    file keeps them, else in graph order; a final Clip turns ``clamp_output`` on. Graph order
    is an assumption, so the module is then run against ONNX Runtime on one input and refused
    on any difference (once per file: the passed check is cached). Raises ``ModelError`` with
    the reason.
    """
    from onnx import helper, numpy_helper

    graph, label, resolve = read_onnx_graph(path)
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def const(name: str, what: str) -> np.ndarray:
        name = resolve(name)
        if name not in consts:
            raise ModelError(f"{label} | {what} '{name}' is computed, not stored: not a plain "
                             "SimSwap export")
        return np.array(consts[name], dtype=np.float32)

    convs = [n for n in graph.node if n.op_type == "Conv"]
    if not convs:
        raise ModelError(f"{label} | has no Conv node")
    width = const(convs[0].input[1], "weight").shape[0] / 64.0
    gen = SimSwapGenerator(width=width, clamp_output=any(n.op_type == "Clip" for n in graph.node))
    targets = ([gen.first_layer[1], gen.down1[0], gen.down2[0], gen.down3[0]]
               + [c for b in gen.BottleNeck for c in (b.conv1[1], b.conv2[1])]
               + [gen.up3[1], gen.up2[1], gen.up1[1], gen.last_layer[1]])
    if len(convs) != len(targets):
        raise ModelError(f"{label} | {len(convs)} Conv nodes; SimSwap-256 has {len(targets)}")
    with torch.no_grad():
        for i, (node, conv) in enumerate(zip(convs, targets)):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            got = (tuple(attrs.get("strides", (1, 1))), tuple(attrs.get("pads", (0,) * 4)),
                   attrs.get("group", 1))
            want = (conv.stride, conv.padding * 2, conv.groups)
            w = const(node.input[1], "weight")
            if w.shape != tuple(conv.weight.shape) or got != want:
                raise ModelError(f"{label} | Conv #{i} '{node.name}': weight {w.shape}, "
                                 f"(strides, pads, group) {got}; SimSwap at width {width:g} has "
                                 f"{tuple(conv.weight.shape)}, {want}")
            conv.weight.copy_(torch.from_numpy(w))
            conv.bias.copy_(torch.from_numpy(const(node.input[2], "bias")) if len(node.input) > 2
                            else torch.zeros_like(conv.bias))
        _load_batchnorms(gen, graph, const, label)
        _load_styles(gen, graph, const, label)
    gen.eval()
    names = [i.name for i in graph.input if i.name not in consts]
    if len(names) != 2:
        raise ModelError(f"{label} | inputs {names}; SimSwap takes (target, source)")
    _check_once(gen, path, names, label)
    return gen


def _check_once(gen: SimSwapGenerator, path, names: list[str], label: str) -> None:
    """Run the ONNX Runtime check unless this file already passed it with this fusionrt, torch
    and onnxruntime: the verdict is kept in the engine cache (engine ``native-check``, keyed by
    the file's sha256), because the check is most of a load (~4.5 s of ~5 on 2 CPU cores)."""
    fp = Fingerprint(onnx_sha256=sha256_file(path), precision="fp32", batch_profile="1",
                     engine="native-check", builder="simswap256",
                     onnxruntime=library_version("onnxruntime"),
                     torch=library_version("torch"), fusionrt=library_version("fusionrt"))
    cache = EngineCache()
    if cache.read(fp) is not None:
        return
    err = _check_against_ort(gen, path, names, label)
    try:
        cache.put(fp, json.dumps({"max_abs_diff": err}).encode())
    except OSError as e:  # a read-only home: the check simply runs again next time
        log.warning("%s | check passed but not cached (%s)", label, e)


def _check_against_ort(gen: SimSwapGenerator, path, names: list[str], label: str) -> float:
    """The check that makes graph order safe to rely on: same outputs as ONNX Runtime on one
    input. Returns the max abs difference; raises ``ModelError`` past 1e-3 (relative)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feeds = {"target": rng.random((1, 3, 256, 256), dtype=np.float32),
             "source": rng.standard_normal((1, 512)).astype(np.float32)}
    feeds["source"] /= np.linalg.norm(feeds["source"])
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want = sess.run(None, dict(zip(names, feeds.values())))[0]
    except Exception as e:  # noqa: BLE001 - e.g. an FP16 graph: ORT's own error types
        raise ModelError(f"{label} | ONNX Runtime cannot run it on FP32 inputs for the check "
                         f"({type(e).__name__}: {str(e)[:200]})") from None
    with torch.no_grad():
        got = gen(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if err > 1e-3 * max(1.0, float(np.abs(want).max())):
        raise ModelError(f"{label} | the native SimSwap module differs from ONNX Runtime on the "
                         f"same input (max |diff| {err:.3g}): not this architecture")
    return err


def _load_batchnorms(gen: SimSwapGenerator, graph, const, label: str) -> None:
    bns = [n for n in graph.node if n.op_type == "BatchNormalization"]
    seqs = [(gen.first_layer, 2), (gen.down1, 1), (gen.down2, 1), (gen.down3, 1),
            (gen.up3, 2), (gen.up2, 2), (gen.up1, 2)]
    if not bns:  # folded into the convs by the exporter
        for seq, i in seqs:
            seq[i] = nn.Identity()
        return
    if len(bns) != len(seqs):
        raise ModelError(f"{label} | {len(bns)} BatchNormalization nodes; SimSwap-256 has "
                         f"{len(seqs)} (or none, folded)")
    for node, (seq, i) in zip(bns, seqs):
        bn = seq[i]
        for param, name in zip((bn.weight, bn.bias, bn.running_mean, bn.running_var),
                               node.input[1:5]):
            v = const(name, "BatchNorm input")
            if v.shape != tuple(param.shape):
                raise ModelError(f"{label} | BatchNormalization '{node.name}' input {v.shape}; "
                                 f"expected {tuple(param.shape)}")
            param.copy_(torch.from_numpy(v))
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        bn.eps = float(eps)


_STYLE_NAME = re.compile(r"BottleNeck\.(\d+)\.style([12])\.linear\.weight$")


def _load_styles(gen: SimSwapGenerator, graph, const, label: str) -> None:
    """The 18 style linears: Gemm(source, W, b) or MatMul(source, W) followed by Add(b)."""
    from onnx import helper
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    found = []  # (weight name, W [out, in], b)
    for n in graph.node:
        if n.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            w = const(n.input[1], "Gemm weight")
            w = w if attrs.get("transB", 0) else w.T
            b = const(n.input[2], "Gemm bias") if len(n.input) > 2 else np.zeros(w.shape[0])
            found.append((n.input[1], w, b * attrs.get("beta", 1.0), attrs.get("alpha", 1.0)))
        elif n.op_type == "MatMul" and len(consumers.get(n.output[0], ())) == 1:
            add = consumers[n.output[0]][0]
            if add.op_type != "Add":
                continue
            bias = [i for i in add.input if i != n.output[0]]
            found.append((n.input[1], const(n.input[1], "MatMul weight").T,
                          const(bias[0], "MatMul bias"), 1.0))
    styles = [s for b in gen.BottleNeck for s in (b.style1, b.style2)]
    if len(found) != len(styles):
        raise ModelError(f"{label} | {len(found)} linear layers; SimSwap-256 has {len(styles)} "
                         "(one per AdaIN)")
    keys = [_STYLE_NAME.search(name) for name, *_ in found]
    if all(keys):  # the file keeps SimSwap's names: use them, not the order
        order = [(int(k.group(1)), int(k.group(2))) for k in keys]
        found = [f for _, f in sorted(zip(order, found), key=lambda x: x[0])]
    for (name, w, b, alpha), style in zip(found, styles):
        lin = style.linear
        if w.shape != tuple(lin.weight.shape) or b.shape != tuple(lin.bias.shape):
            raise ModelError(f"{label} | linear '{name}' {w.shape}; expected "
                             f"{tuple(lin.weight.shape)}")
        lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w * alpha, dtype=np.float32)))
        lin.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))

