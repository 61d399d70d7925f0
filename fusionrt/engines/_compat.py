"""Version-specific branches of the TensorRT Python APIs (TensorRT 10, TensorRT 11, TensorRT-RTX),
in one place.

TensorRT 11 removed (NVIDIA's "TensorRT 10.x to 11.x Python API" migration reference): the weakly
typed builder flags ``BuilderFlag.FP16/BF16/INT8/FP8/INT4/FP4/OBEY_PRECISION_CONSTRAINTS/
PREFER_PRECISION_CONSTRAINTS``, ``IBuilderConfig.int8_calibrator`` with the calibration profile and
quantization flags, ``ICudaEngine.device_memory_size`` (→ ``device_memory_size_v2``) and
``Builder.platform_has_fast_fp16/int8``; ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is
deprecated and ignored there (every network is strongly typed). fusionrt names none of the removed
symbols (``tests/test_trt11.py`` scans the TensorRT code for them and builds against a stand-in
module that has only the TensorRT 11 API); the two calls that changed go through here.
TensorRT-RTX has the TensorRT 11 shape already (strongly typed only, ``_v2`` sizes).
"""

from __future__ import annotations

from typing import Any

#: ``BuilderFlag`` members the TensorRT 11 Python API no longer has (the ``DataType`` members of
#: the same names stay: types live in the graph).
REMOVED_BUILDER_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4",
                         "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS")
#: Other attributes TensorRT 11 removed; never used on any TensorRT path.
REMOVED_ATTRIBUTES = (
    "int8_calibrator", "set_calibration_profile", "get_calibration_profile",
    "set_quantization_flag", "get_quantization_flag", "clear_quantization_flag",
    "quantization_flags", "device_memory_size", "get_device_memory_size_for_profile",
    "platform_has_fast_fp16", "platform_has_fast_int8",
    "IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2",
    "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator",
)


def trt_major(trt: Any) -> int | None:
    """The major version of a TensorRT module (10, 11; TensorRT-RTX is 1), or None if unknown."""
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return None


def network_flags(trt: Any) -> int:
    """``create_network`` flags for a strongly typed network: the STRONGLY_TYPED bit where the
    module still has it (TensorRT 10 needs it; TensorRT 11 and TensorRT-RTX accept it), 0 where a
    later release drops it (strong typing is then the only mode)."""
    flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    strongly = getattr(flags, "STRONGLY_TYPED", None)
    return 0 if strongly is None else 1 << int(strongly)


def device_memory_size(engine: Any) -> int | None:
    """Device memory an execution context needs (bytes): ``device_memory_size_v2`` (TensorRT
    >= 10.1, 11, TensorRT-RTX); None on older bindings, which fusionrt does not support."""
    v2 = getattr(engine, "device_memory_size_v2", None)
    try:
        return None if v2 is None else int(v2)
    except (TypeError, ValueError):
        return None
