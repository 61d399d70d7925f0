"""Native TensorRT 10 engine: a strongly typed plan built once per fingerprint, run with
``execute_async_v3`` on torch's current CUDA stream.

The plan is built (on a cache miss, and once more when TensorRT rejects a cached one) and
deserialized by ``fusionrt.builders.trt_plan``; this engine takes it as ``plan=`` (what
``fusionrt.builders.open.open_engine`` does), makes the execution context and runs it.

Feeds are torch CUDA tensors (bound in place, outputs are torch CUDA tensors, so consecutive GPU
stages never touch the host) or numpy arrays (uploaded once, outputs downloaded).

Written against the TensorRT 10 Python API; TensorRT cannot be installed on the machines this
was developed on, so ``_load``/``_run`` have not been run here (the GPU test is marked ``trt``
and skipped without the package). The pure helpers below are unit-tested.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import EngineError
from ..models.spec import Artifact, ModelSpec
from .base import Engine, EngineConfig

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install tensorrt-cu12 (or -cu13)"

# TensorRT DataType member name → numpy-style dtype name (torch has an attribute of each name).
TRT_DTYPES: dict[str, str] = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
    "INT32": "int32", "INT64": "int64", "BOOL": "bool", "UINT8": "uint8",
    "FP8": "float8_e4m3fn",
}


def trt_dtype_name(trt_dtype: Any) -> str:
    """``trt.DataType.HALF`` (or ``"HALF"``/``"DataType.HALF"``) → ``"float16"``."""
    key = getattr(trt_dtype, "name", None) or str(trt_dtype).rsplit(".", 1)[-1]
    try:
        return TRT_DTYPES[key]
    except KeyError:
        raise EngineError(f"tensorrt dtype {key} | not supported; expected one of "
                          f"{', '.join(TRT_DTYPES)}") from None


def torch_dtype(name: str):
    """numpy-style dtype name → torch dtype (``"float16"`` → ``torch.float16``)."""
    import torch
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise EngineError(f"dtype '{name}' | no torch equivalent")
    return dt


def check_engine_io(spec: ModelSpec, io: Sequence[tuple[str, bool, str]]) -> None:
    """The plan must keep the contract: same input/output names, same dtypes.

    Args:
        io: (tensor name, is_input, numpy-style dtype name) for every I/O tensor of the plan.
    """
    for want, is_input, kind in ((spec.inputs, True, "inputs"), (spec.outputs, False, "outputs")):
        got = {n: d for n, inp, d in io if inp == is_input}
        names = sorted(t.name for t in want)
        if sorted(got) != names:
            raise EngineError(f"model '{spec.name}' | engine has {kind} {sorted(got)}; "
                              f"contract expects {names}")
        for t in want:
            if got[t.name] != t.dtype:
                raise EngineError(f"model '{spec.name}' | engine tensor '{t.name}' is "
                                  f"{got[t.name]}; contract expects {t.dtype} (rebuild from the "
                                  "matching ONNX graph)")


@dataclass(frozen=True)
class TrtPlan:
    """A deserialized TensorRT plan ready to run (made by ``fusionrt.builders.trt_plan``).

    Attributes:
        engine: the ``trt.ICudaEngine``.
        runtime: the ``trt.Runtime`` that deserialized it (it must outlive the engine).
        logger: the process's TensorRT logger (its ``errors`` name the last failures).
        built: True when this open built the plan, False when it came from the engine cache.
    """

    engine: Any
    runtime: Any
    logger: Any
    built: bool = False


def device_index(device: str) -> int:
    if device != "cuda" and not device.startswith("cuda:"):
        raise EngineError(f"engine 'trt' | got device '{device}'; expected cuda or cuda:N")
    return int(device.split(":")[1]) if ":" in device else 0


class TensorrtEngine(Engine):
    """TensorRT 10, strongly typed, one optimization profile (``config.batch``).

    Options (``EngineConfig.options``, read by the plan builder): ``workspace_gb`` (4),
    ``builder_optimization_level`` (3), ``dims`` (values for non-batch dynamic axes),
    ``cache_dir`` (default ``$FUSIONRT_HOME/engines``).
    """

    name = "trt"
    devices = ("cuda",)
    fixed_batch_profile = True

    def __init__(self, artifact: Artifact, config: EngineConfig | None = None, *,
                 plan: TrtPlan | None = None):
        super().__init__(artifact, config)
        self._plan = plan

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return False, f"tensorrt Python package not installed: {INSTALL_HINT}"
        except Exception as e:  # installed but its libraries fail to load
            return False, f"tensorrt cannot be imported ({e}): reinstall with {INSTALL_HINT}"
        try:
            import torch
        except ImportError:
            return False, "torch is not installed (needed for device buffers): " \
                          "pip install 'fusionrt[torch]'"
        if not torch.cuda.is_available():
            return False, ("torch sees no CUDA GPU (CPU-only torch build or no driver): install a "
                           "CUDA build of torch on a machine with an NVIDIA GPU")
        return True, ""

    @classmethod
    def needs(cls, artifact: Artifact, config: EngineConfig) -> str | None:
        return "trt-plan"

    # -- load ------------------------------------------------------------------
    def _load(self) -> None:
        import tensorrt as trt
        import torch

        if self._plan is None:
            raise self._needs_builder("a TensorRT plan")
        self.device = torch.device("cuda", device_index(self.config.device))
        self._logger, self._runtime = self._plan.logger, self._plan.runtime
        engine = self._plan.engine
        with torch.cuda.device(self.device):
            self._engine = engine
            self._context = engine.create_execution_context()
        if self._context is None:
            raise EngineError(f"model '{self.spec.name}' | TensorRT could not create an "
                              "execution context (out of GPU memory?)")
        io = []
        for i in range(engine.num_io_tensors):
            n = engine.get_tensor_name(i)
            io.append((n, engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                       trt_dtype_name(engine.get_tensor_dtype(n))))
        check_engine_io(self.spec, io)
        self._out_dtypes = {n: torch_dtype(d) for n, inp, d in io if not inp}

    # -- run -------------------------------------------------------------------
    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        import torch
        with torch.cuda.device(self.device):  # TensorRT enqueues on the current device
            return self._run_on_device(feeds)

    def _run_on_device(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        import torch
        host = isinstance(next(iter(feeds.values())), np.ndarray)
        ctx = self._context
        keep = []  # inputs must outlive the enqueue; the caching allocator is stream-ordered
        for t in self.inputs:
            x = feeds[t.name]
            x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, non_blocking=True) \
                if host else x.contiguous()
            if x.device != self.device:
                raise EngineError(f"input '{t.name}' | got device {x.device}; "
                                  f"expected {self.device}")
            ctx.set_input_shape(t.name, tuple(x.shape))
            ctx.set_tensor_address(t.name, x.data_ptr())
            keep.append(x)
        outs = {}
        for t in self.outputs:
            shape = tuple(ctx.get_tensor_shape(t.name))
            y = torch.empty(shape, dtype=self._out_dtypes[t.name], device=self.device)
            ctx.set_tensor_address(t.name, y.data_ptr())
            outs[t.name] = y
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise EngineError(f"model '{self.spec.name}' | TensorRT enqueue failed: "
                              f"{'; '.join(self._logger.errors) or 'no error given'}")
        if host:  # .cpu() waits for the stream; the GPU path returns without a sync
            return {k: v.cpu().numpy() for k, v in outs.items()}
        return outs

    def _close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None
