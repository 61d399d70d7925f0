"""Reference torch architectures behind the zoo specs (``ModelSpec.arch``), torch optional.

Importing this package never imports torch; building an architecture does, and without the
``torch`` extra it raises ``EngineError`` naming what to install. Every builder takes
``width`` (channel multiplier, 1.0 = the published size) so tests can build tiny variants with
the same I/O contract, plus architecture options recorded next to synthetic weights.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from ...errors import EngineError, ModelError

TORCH_HINT = "pip install 'fusionrt[torch]'"


def require_torch() -> Any:
    """The torch module, or an ``EngineError`` saying how to install it."""
    try:
        import torch
    except ImportError:
        raise EngineError(f"reference architectures | torch is not installed: {TORCH_HINT}") \
            from None
    return torch


def read_onnx_graph(path: Any) -> tuple[Any, str, Callable[[str], str]]:
    """(graph, label, resolve) of the ONNX file at ``path`` for the native loaders:
    ``label`` names the file in errors, ``resolve`` follows Identity nodes back to the tensor
    they copy (exporters put weights behind them). ``ModelError`` if it cannot be read."""
    from pathlib import Path

    import onnx
    label = f"ONNX '{Path(path).name}'"
    try:
        graph = onnx.load(str(path)).graph
    except Exception as e:  # noqa: BLE001 - protobuf/IO errors have no common base
        raise ModelError(f"{label} | cannot be read: {e}") from None
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    return graph, label, resolve


def _lazy(module: str, builder: str) -> Callable[..., Any]:
    """A builder that imports its (torch-using) module only when called."""

    def build(width: float = 1.0, **options: Any):
        require_torch()
        if not 0.0 < float(width) <= 4.0:
            raise ModelError(f"architecture width | got {width}; expected 0 < width <= 4")
        return getattr(importlib.import_module(f".{module}", __name__), builder)(
            width=float(width), **options)

    build.__name__ = builder
    build.__doc__ = f"Build ``{module}.{builder}`` (imports torch)."
    return build


ARCHS: dict[str, Callable[..., Any]] = {
    "iresnet50": _lazy("iresnet", "iresnet50"),
    "simswap256": _lazy("simswap", "simswap256"),
    "inswapper": _lazy("inswapper", "inswapper"),
    # stand-ins with the real contract where the architecture is unpublished (standin.py)
    "converter512": _lazy("standin", "converter512"),
    "hyperswap_standin": _lazy("standin", "hyperswap_standin"),
    "tanh_standin": _lazy("standin", "tanh_standin"),
    "clip_standin": _lazy("standin", "clip_standin"),
    "fan4_standin": _lazy("standin_landmark", "fan4_standin"),  # FaceFusion's 2dfan4
    # FaceFusion's face detectors: scrfd_2.5g, retinaface_10g, yoloface_8n (standin_detect.py)
    **{m: _lazy("standin_detect", m) for m in ("scrfd_standin", "retinaface10g_standin",
                                               "yoloface_standin")},
    # FaceFusion's face enhancers: same-contract U-Nets at the real cost (standin_enhance.py)
    **{f"{m}_standin": _lazy("standin_enhance", f"{m}_standin")
       for m in ("gfpgan", "gpen256", "gpen512", "codeformer", "restoreformer")},
    # FaceFusion's face masks: XSeg occluders, BiSeNet parsers (standin_mask.py)
    **{m: _lazy("standin_mask", m) for m in ("xseg_standin", "bisenet_resnet18_standin",
                                              "bisenet_resnet34_standin")},
}


def build_arch(name: str, width: float = 1.0, **options: Any):
    """Build the architecture ``name``; an unknown name lists the known ones."""
    try:
        builder = ARCHS[name]
    except KeyError:
        raise ModelError(f"architecture '{name}' | unknown; expected one of: "
                         f"{', '.join(ARCHS)}") from None
    return builder(width, **options)


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 4 so norms and PReLU keep a meaning."""
    return max(4, int(round(channels * width)))


def profile(module: Any, *inputs: Any) -> tuple[int, int]:
    """(parameters, FLOPs) of one forward pass; FLOPs = 2 x MACs of every Conv2d and Linear.

    Counted with forward hooks on the real modules (no fvcore): norms, activations, resizes and
    adds are left out, as in the published GFLOP figures.
    """
    torch = require_torch()
    macs = [0]

    def hook(mod, args, out):
        if isinstance(mod, torch.nn.Conv2d):
            kh, kw = mod.kernel_size
            macs[0] += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        else:
            macs[0] += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    batch = int(inputs[0].shape[0])
    return sum(p.numel() for p in module.parameters()), 2 * macs[0] // batch
