"""Engine registry: names → engine classes, imported lazily so that torch/tensorrt stay optional."""

from __future__ import annotations

import importlib

from ..errors import EngineError
from .base import Engine

# name -> "module:Class"; modules are imported on first use only.
_ENGINES: dict[str, str] = {
    "ort-cpu": "fusionrt.engines.onnxruntime:OrtCpuEngine",
    "ort-cuda": "fusionrt.engines.onnxruntime:OrtCudaEngine",
    "ort-trt": "fusionrt.engines.onnxruntime:OrtTensorrtEngine",
    "torch": "fusionrt.engines.torch_eager:TorchEngine",
    "torch-compile": "fusionrt.engines.torch_compile:TorchCompileEngine",
    "trt": "fusionrt.engines.tensorrt:TensorrtEngine",
    "trt-rtx": "fusionrt.engines.tensorrt_rtx:TensorrtRtxEngine",
    "ort-trt-rtx": "fusionrt.engines.ort_trt_rtx:OrtTrtRtxEngine",
}

#: The FP32 reference (ONNX Runtime CPU: exact FP32 kernels, independent of the GPU stack) that
#: quality gates, ``--engine auto`` and the bench check every other engine against. The one
#: definition: code below the pipeline imports it from here, ``pipeline.plan`` re-exports it.
REFERENCE_ENGINE = "ort-cpu"


def engine_names() -> list[str]:
    return list(_ENGINES)


def get_engine(name: str) -> type[Engine]:
    """The engine class registered as ``name``; an unknown name lists the valid ones."""
    try:
        target = _ENGINES[name]
    except KeyError:
        raise EngineError(
            f"engine '{name}' | unknown; expected one of: {', '.join(_ENGINES)}") from None
    module, cls = target.split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:  # the engine's module itself failed: report, don't crash
        raise EngineError(f"engine '{name}' | cannot be imported: {e}") from None


def register(name: str, target: str) -> None:
    """Add or replace an engine ("module:Class"), e.g. from a plugin."""
    _ENGINES[name] = target


def availability() -> dict[str, tuple[bool, str]]:
    """Every engine: (usable here, reason + fix if not). Used by ``doctor`` and ``--engine auto``."""
    out = {}
    for name in _ENGINES:
        try:
            out[name] = get_engine(name).available()
        except EngineError as e:
            out[name] = (False, str(e))
    return out
