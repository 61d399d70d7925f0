"""The TensorRT code path both TensorRT engines share: ``trt`` (full TensorRT 10 and 11, Python
module ``tensorrt``) and ``trt-rtx`` (TensorRT for RTX, module ``tensorrt_rtx``).

The two Python APIs are the same where fusionrt touches them: a strongly typed plan built from
the ONNX graph with one batch profile, deserialized by a ``Runtime``, an execution context, named
I/O tensors bound to torch buffers and ``execute_async_v3`` on torch's current CUDA stream. So
one base class does all of it, and an engine class names only its module (``trt_module``), its
product kind and what differs (TensorRT-RTX: a runtime config with the JIT runtime cache and the
CUDA-graph strategy, see ``tensorrt_rtx.py``).

Plans are built and deserialized by ``fusionrt.builders`` (``trt_plan``, ``trt_rtx``); the engine
takes the deserialized plan as ``plan=``. Feeds are torch CUDA tensors (bound in place, outputs
are torch CUDA tensors, so consecutive GPU stages never touch the host) or numpy arrays (uploaded
once, outputs downloaded).

Not run here: no machine this was developed on can run a TensorRT plan (full TensorRT does not
install; TensorRT-RTX installs but refuses the only GPU lent, an H200, CC 9.0). ``_load``/``_run``
are written against both documented APIs; the pure helpers and the context set-up are unit-tested
with stand-in modules.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ..errors import EngineError
from ..models.spec import Artifact, ModelSpec
from ..runtime.cache import EngineCache, Fingerprint
from ._compat import device_memory_size
from .base import Engine, EngineConfig

log = logging.getLogger(__name__)

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


def cuda_device(index: int):
    """The torch CUDA device context TensorRT deserializes and enqueues under (TensorRT uses the
    current device)."""
    import torch
    return torch.cuda.device(torch.device("cuda", index))


def device_index(device: str, engine: str = "trt") -> int:
    if device != "cuda" and not device.startswith("cuda:"):
        raise EngineError(f"engine '{engine}' | got device '{device}'; expected cuda or cuda:N")
    return int(device.split(":")[1]) if ":" in device else 0


@dataclass(frozen=True)
class RuntimeCacheSlot:
    """Where a TensorRT-RTX runtime cache (the kernels it compiles just in time at the first run)
    is kept: an entry of the fingerprinted engine cache, so a second process start on the same
    GPU, driver and library versions skips the compilation."""

    root: Path
    fingerprint: Fingerprint

    def load(self) -> bytes | None:
        return EngineCache(self.root).read(self.fingerprint)

    def save(self, data: bytes) -> None:
        try:
            EngineCache(self.root).put(self.fingerprint, data)
        except OSError as e:  # a read-only cache: the kernels are compiled again next time
            log.warning("runtime cache | cannot store it (%s); kernels compile again next start", e)


@dataclass(frozen=True)
class TrtPlan:
    """A deserialized TensorRT (or TensorRT-RTX) plan ready to run, made by ``fusionrt.builders``.

    Attributes:
        engine: the ``ICudaEngine``.
        runtime: the ``Runtime`` that deserialized it (it must outlive the engine).
        logger: the process's logger for that module (its ``errors`` name the last failures).
        built: True when this open built the plan, False when it came from the engine cache.
        runtime_cache: TensorRT-RTX only: where its JIT runtime cache is kept.
        info: facts about the plan for logs and reports (arch, size, build seconds).
    """

    engine: Any
    runtime: Any
    logger: Any
    built: bool = False
    runtime_cache: RuntimeCacheSlot | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


class TrtEngineBase(Engine):
    """A strongly typed TensorRT plan with one optimization profile (``config.batch``).

    Options (``EngineConfig.options``, read by the plan builder): ``workspace_gb`` (4),
    ``builder_optimization_level`` (3), ``dims`` (values for non-batch dynamic axes),
    ``profile`` (``"edge"``: see ``builders.trt_builder.PRESETS``), ``cache_dir`` (default
    ``$FUSIONRT_HOME/engines``).
    """

    #: The Python module of the TensorRT flavour this engine runs on.
    trt_module: ClassVar[str] = "tensorrt"
    install_hint: ClassVar[str] = "pip install tensorrt-cu12 (or -cu13)"
    #: The product kind ``fusionrt.builders.open`` builds for it.
    product: ClassVar[str] = "trt-plan"
    devices = ("cuda",)
    fixed_batch_profile = True

    def __init__(self, artifact: Artifact, config: EngineConfig | None = None, *,
                 plan: TrtPlan | None = None):
        super().__init__(artifact, config)
        self._plan = plan

    @classmethod
    def trt(cls):
        """The TensorRT module (ImportError when absent)."""
        return importlib.import_module(cls.trt_module)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            cls.trt()
        except ImportError:
            return False, f"{cls.trt_module} Python package not installed: {cls.install_hint}"
        except Exception as e:  # installed but its libraries fail to load
            return False, f"{cls.trt_module} cannot be imported ({e}): reinstall with " \
                          f"{cls.install_hint}"
        return cuda_reason()

    @classmethod
    def needs(cls, artifact: Artifact, config: EngineConfig) -> str | None:
        return cls.product

    # -- load ------------------------------------------------------------------
    def _load(self) -> None:
        import torch

        trt = self.trt()
        if self._plan is None:
            raise self._needs_builder(f"a {self.trt_module} plan")
        self.device = torch.device("cuda", device_index(self.config.device, self.name))
        self._logger, self._runtime = self._plan.logger, self._plan.runtime
        engine = self._plan.engine
        with cuda_device(self.device.index):
            self._engine = engine
            self._context = self._create_context(trt, engine)
        if self._context is None:
            raise EngineError(f"model '{self.spec.name}' | {self.trt_module} could not create "
                              "an execution context (out of GPU memory?)")
        io = []
        for i in range(engine.num_io_tensors):
            n = engine.get_tensor_name(i)
            io.append((n, engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                       trt_dtype_name(engine.get_tensor_dtype(n))))
        check_engine_io(self.spec, io)
        self._out_dtypes = {n: torch_dtype(d) for n, inp, d in io if not inp}
        self.device_memory_bytes = device_memory_size(engine)
        self._runs = 0

    def _create_context(self, trt, engine):
        """The execution context (TensorRT-RTX adds its runtime config here)."""
        return engine.create_execution_context()

    # -- run -------------------------------------------------------------------
    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        with cuda_device(self.device.index):  # TensorRT enqueues on the current device
            out = self._run_on_device(feeds)
        self._runs += 1
        if self._runs == 1:
            self._after_first_run()
        return out

    def _after_first_run(self) -> None:
        pass

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
            raise EngineError(f"model '{self.spec.name}' | {self.trt_module} enqueue failed: "
                              f"{'; '.join(self._logger.errors) or 'no error given'}")
        if host:  # .cpu() waits for the stream; the GPU path returns without a sync
            return {k: v.cpu().numpy() for k, v in outs.items()}
        return outs

    def _close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None


def cuda_reason() -> tuple[bool, str]:
    """(True, "") where torch sees a CUDA GPU for the engine's device buffers, else the fix."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed (needed for device buffers): " \
                      "pip install 'fusionrt[torch]'"
    if not torch.cuda.is_available():
        return False, ("torch sees no CUDA GPU (CPU-only torch build or no driver): install a "
                       "CUDA build of torch on a machine with an NVIDIA GPU")
    return True, ""
