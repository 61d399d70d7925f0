"""Native TensorRT engine (TensorRT 10 and 11): a strongly typed plan built once per fingerprint,
run with ``execute_async_v3`` on torch's current CUDA stream.

The TensorRT code path is shared with TensorRT-RTX (``trt_base.TrtEngineBase``); this class names
the ``tensorrt`` module and the ``"trt-plan"`` product, which ``fusionrt.builders.trt_plan``
builds (on a cache miss, and once more when TensorRT rejects a cached plan) and deserializes.

TensorRT 10 and 11: the path uses none of the APIs TensorRT 11 removed (weakly typed precision
flags, the INT8 calibrator, ``device_memory_size``, ``platform_has_fast_fp16``; see
``_compat.py``). Full TensorRT cannot be installed on the machines this was developed on (its
wheels download from NVIDIA's own index), so ``_load``/``_run`` have not been run; the GPU test is
marked ``trt`` and skips without the package, and the TensorRT 11 build calls are checked against
a stand-in module with only the TensorRT 11 API (``tests/test_trt11.py``).
"""

from __future__ import annotations

from .trt_base import (TRT_DTYPES, RuntimeCacheSlot, TrtEngineBase, TrtPlan,  # noqa: F401
                       check_engine_io, device_index, torch_dtype, trt_dtype_name)

INSTALL_HINT = "pip install tensorrt-cu12 (or -cu13)"


class TensorrtEngine(TrtEngineBase):
    """Full TensorRT 10/11, strongly typed, one optimization profile (``config.batch``)."""

    name = "trt"
    trt_module = "tensorrt"
    install_hint = INSTALL_HINT
    product = "trt-plan"
