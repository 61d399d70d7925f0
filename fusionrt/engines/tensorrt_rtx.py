"""TensorRT for RTX engine (``trt-rtx``): the shared TensorRT path (``trt_base``) on the
``tensorrt_rtx`` module, with what TensorRT-RTX adds at run time.

TensorRT-RTX installs from PyPI (``pip install 'fusionrt[trt-rtx]'``) and builds plans on any
machine, GPU or not, for named RTX architectures (``fusionrt build MODEL --engine trt-rtx --arch
sm86,sm89,sm120``); a plan runs only on a GPU of its architecture. What differs from full
TensorRT:

- strongly typed only: FP16 is the converted FP16 graph (``fusionrt build --precision fp16``);
  there is no INT8 activation calibration (only weight-only INT8/INT4 GEMMs), so INT8 is refused;
- no timing cache: kernels are compiled just in time at the first run and kept in a *runtime
  cache* (``IRuntimeConfig.create_runtime_cache`` / ``set_runtime_cache``), which this engine
  loads from and saves to the fingerprinted engine cache, so a second process start skips the JIT;
- a built-in CUDA-graph strategy (``options["cuda_graph"]`` → ``WHOLE_GRAPH_CAPTURE``);
- the GPUs it runs on are RTX-class (compute capability 7.5 with a plan built for SM75; 8.0, 8.6,
  8.9, 12.0, 12.1 and newer). On any other GPU — Hopper (H100/H200, CC 9.0), datacenter
  Blackwell (10.x) — it refuses by name with that list before any build is attempted: the
  H200 lent to this project refuses to deserialize a plan ("The engine cannot run on this GPU,
  which has compute capability 9.0").

Not run here: building is measured on a CPU-only machine (CI); loading and running need an RTX
GPU, which no machine of this project has, so no TensorRT-RTX speed is claimed anywhere.
"""

from __future__ import annotations

import logging
from typing import Any

from .trt_base import TrtEngineBase

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fusionrt[trt-rtx]' (tensorrt-rtx-cu13)"
#: Compute capabilities TensorRT-RTX plans run on (its support matrix and its own refusal text:
#: "Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0"; 7.5 needs a plan built for
#: SM75, which is never part of the default portable set).
RUN_CC = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
INT8_REASON = ("precision int8 | TensorRT for RTX has no INT8 activation calibration (only "
               "weight-only INT8/INT4 GEMMs); expected fp32 or fp16 (an FP16 graph: "
               "--precision fp16)")


def _cc(cc: str) -> tuple[int, int]:
    major, _, minor = str(cc).partition(".")
    return int(major), int(minor or 0)


def cc_supported(cc: str) -> bool:
    """Can a TensorRT-RTX plan run on a GPU of compute capability ``cc`` ("8.9")?"""
    try:
        return cc in RUN_CC or _cc(cc) > (12, 0)
    except ValueError:
        return False


def supported_list() -> str:
    return ", ".join(RUN_CC) + " or newer than 12.0"


def cc_reason(cc: str, gpu: str | None = None, index: int = 0) -> str:
    """"" when TensorRT-RTX runs on ``cc``, else the refusal naming the GPU and the list."""
    if cc_supported(cc):
        return ""
    who = f"GPU {index}" + (f" ({gpu})" if gpu else "")
    return (f"{who} | compute capability {cc}: TensorRT for RTX does not run on it; expected "
            f"one of {supported_list()} (RTX 20/30/40/50-class GPUs)")


def gpu_facts(index: int = 0) -> tuple[str | None, str | None]:
    """(GPU name, compute capability) of CUDA device ``index`` (torch, else NVML); Nones when
    there is no GPU or no way to ask. Never raises."""
    from ..runtime.cache import runtime_fingerprint_fields
    f = runtime_fingerprint_fields(index)
    return f["gpu_name"], f["compute_capability"]


def gpu_reason(index: int = 0) -> str:
    """The refusal for GPU ``index`` if TensorRT-RTX cannot run there, else "" (also when there
    is no GPU: the CUDA check reports that)."""
    name, cc = gpu_facts(index)
    return cc_reason(cc, name, index) if cc else ""


class TensorrtRtxEngine(TrtEngineBase):
    """TensorRT for RTX: strongly typed, one batch profile, JIT runtime cache in the engine cache.

    Options: those of ``TrtEngineBase`` plus ``cuda_graph`` (TensorRT-RTX captures and replays
    the whole graph itself).
    """

    name = "trt-rtx"
    trt_module = "tensorrt_rtx"
    install_hint = INSTALL_HINT
    product = "trt-rtx-plan"
    cuda_graphs = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        # The GPU first: on a Hopper no package install helps, so that is the reason to give.
        why = gpu_reason(0)
        if why:
            return False, why
        ok, why = super().available()
        if not ok and why.startswith("torch sees no CUDA GPU"):
            why += "; plans still build here: fusionrt build MODEL --engine trt-rtx --arch sm89"
        return ok, why

    @classmethod
    def precision_refusal(cls, precision: str) -> str | None:
        return INT8_REASON if precision == "int8" else None

    def _create_context(self, trt: Any, engine: Any):
        rc = engine.create_runtime_config()
        cache = rc.create_runtime_cache()
        slot = self._plan.runtime_cache if self._plan is not None else None
        data = slot.load() if slot is not None else None
        if data and not cache.deserialize(data):
            # TensorRT-RTX checks its version, the GPU and the driver; a mismatch starts empty.
            log.warning("engine '%s' | stored runtime cache rejected (other GPU, driver or "
                        "TensorRT-RTX version); kernels compile again", self.name)
        if not rc.set_runtime_cache(cache):
            log.warning("engine '%s' | runtime cache not accepted; kernels compile every start",
                        self.name)
        if self.config.options.get("cuda_graph"):
            rc.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        self._runtime_config, self._runtime_cache = rc, cache
        self.runtime_cache_loaded = bool(data)
        return engine.create_execution_context(rc)

    def _save_runtime_cache(self) -> None:
        slot = self._plan.runtime_cache if self._plan is not None else None
        cache = getattr(self, "_runtime_cache", None)
        if slot is None or cache is None:
            return
        blob = cache.serialize()
        if blob is not None:
            slot.save(bytes(memoryview(blob)))

    def _after_first_run(self) -> None:
        # Kernels are compiled by the first enqueue: keep them even if the process is killed.
        self._save_runtime_cache()

    def _close(self) -> None:
        try:
            self._save_runtime_cache()  # kernels compiled for later shapes too
        finally:
            self._runtime_cache = None
            self._runtime_config = None
            super()._close()
