"""``config.pbtxt`` generation from Triton's own schema.

Each config is first a plain dict keyed by ``ModelConfig`` field names (``inference.ModelConfig``
in ``model_config.proto``). With ``tritonclient`` installed it is parsed into
``tritonclient.grpc.model_config_pb2.ModelConfig`` (``json_format.ParseDict``: a misspelt
field or a wrong enum raises) and printed with ``text_format``; without it, a small printer
writes the same text format (the repository tests then parse it with the protobuf schema).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import EngineError

# numpy dtype name -> Triton data type (model_config.proto DataType)
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int8": "TYPE_INT8",
                 "uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                 "bool": "TYPE_BOOL", "object": "TYPE_STRING", "bytes": "TYPE_STRING"}
PRECISION_MODES = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
# Fields whose dict value is a protobuf map (printed as repeated {key, value} entries).
MAP_FIELDS = {"parameters", "cc_model_filenames"}


class Enum(str):
    """A protobuf enum value (printed bare, not quoted)."""


@dataclass(frozen=True)
class IO:
    """One input/output as Triton sees it: dims exclude the batch axis when batching."""

    name: str
    dtype: str  # numpy name
    dims: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        try:
            t = TRITON_DTYPES[self.dtype]
        except KeyError:
            raise EngineError(f"tensor '{self.name}' | dtype {self.dtype} has no Triton type; "
                              f"expected one of {sorted(TRITON_DTYPES)}") from None
        return {"name": self.name, "data_type": Enum(t), "dims": list(self.dims)}


@dataclass(frozen=True)
class TrtOptions:
    """The TensorRT accelerator of the ``onnxruntime`` backend (ORT's TensorRT EP options as
    the Triton onnxruntime backend names them): precision, engine + timing cache, profiles."""

    precision: str = "fp16"
    workspace_bytes: int = 2 << 30
    cache_path: str = "/opt/fusionrt/trt_cache"
    profile_min: str = ""
    profile_opt: str = ""
    profile_max: str = ""
    optimization_level: int = 3

    def to_dict(self) -> dict[str, Any]:
        params = {"precision_mode": PRECISION_MODES[self.precision],
                  "max_workspace_size_bytes": str(self.workspace_bytes),
                  "trt_engine_cache_enable": "1", "trt_engine_cache_path": self.cache_path,
                  "trt_timing_cache_enable": "1", "trt_timing_cache_path": self.cache_path,
                  "trt_builder_optimization_level": str(self.optimization_level)}
        for key, value in (("trt_profile_min_shapes", self.profile_min),
                           ("trt_profile_opt_shapes", self.profile_opt),
                           ("trt_profile_max_shapes", self.profile_max)):
            if value:
                params[key] = value
        return {"name": "tensorrt", "parameters": params}


@dataclass(frozen=True)
class StageModel:
    """Settings of one Triton model (a stage or the pipeline)."""

    name: str
    backend: str  # "onnxruntime" | "tensorrt" | "python"
    inputs: tuple[IO, ...]
    outputs: tuple[IO, ...]
    max_batch_size: int = 8
    max_queue_delay_us: int = 2000
    instances: int = 1
    kind: str = "KIND_GPU"
    trt: TrtOptions | None = None
    cc_plans: Mapping[str, str] = field(default_factory=dict)  # compute capability -> file
    parameters: Mapping[str, str] = field(default_factory=dict)
    versions: tuple[int, ...] | None = None  # None: serve the latest version


def model_config_dict(m: StageModel) -> dict[str, Any]:
    """The ``ModelConfig`` of ``m`` as a dict of proto field names."""
    backends = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan", "python": None}
    if m.backend not in backends:
        raise EngineError(f"backend '{m.backend}' | unknown; expected one of {sorted(backends)}")
    d: dict[str, Any] = {"name": m.name, "backend": m.backend}
    if backends[m.backend]:
        d["platform"] = backends[m.backend]
    d["max_batch_size"] = m.max_batch_size
    d["version_policy"] = ({"specific": {"versions": list(m.versions)}} if m.versions
                           else {"latest": {"num_versions": 1}})
    d["input"] = [io.to_dict() for io in m.inputs]
    d["output"] = [io.to_dict() for io in m.outputs]
    if m.max_batch_size > 0:  # Triton: dynamic batching needs a batch axis
        d["dynamic_batching"] = {"max_queue_delay_microseconds": m.max_queue_delay_us}
    d["instance_group"] = [{"count": m.instances, "kind": Enum(m.kind)}]
    if m.trt is not None:
        d["optimization"] = {"execution_accelerators": {
            "gpu_execution_accelerator": [m.trt.to_dict()]}}
    if m.cc_plans:
        d["cc_model_filenames"] = dict(m.cc_plans)
    if m.parameters:
        d["parameters"] = {k: {"string_value": v} for k, v in m.parameters.items()}
    return d


def _model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return None
    return model_config_pb2


def to_pbtxt(d: Mapping[str, Any]) -> str:
    """Text-format ``ModelConfig``: through the protobuf schema when tritonclient is installed."""
    pb2 = _model_config_pb2()
    if pb2 is None:
        return "".join(_print(d, 0))
    from google.protobuf import json_format, text_format
    try:
        msg = json_format.ParseDict(_plain(d), pb2.ModelConfig())
    except json_format.ParseError as e:
        raise EngineError(f"config '{d.get('name')}' | not a valid Triton ModelConfig: {e}") \
            from None
    return text_format.MessageToString(msg)


def parse_pbtxt(text: str):
    """A ``config.pbtxt`` as ``model_config_pb2.ModelConfig`` (needs tritonclient)."""
    pb2 = _model_config_pb2()
    if pb2 is None:
        raise EngineError("config.pbtxt | parsing needs tritonclient: "
                          "pip install 'tritonclient[http,grpc]'")
    from google.protobuf import text_format
    return text_format.Parse(text, pb2.ModelConfig())


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return str(v) if isinstance(v, Enum) else v


def _scalar(v: Any) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(v)


def _print(d: Mapping[str, Any], depth: int) -> list[str]:
    """Protobuf text format of a dict (fallback printer; same layout as text_format)."""
    pad, out = "  " * depth, []
    for key, value in d.items():
        if key in MAP_FIELDS and isinstance(value, Mapping):
            entries = [{"key": k, "value": v} for k, v in value.items()]
            out += _print({key: entries}, depth)
        elif isinstance(value, Mapping):
            out += [f"{pad}{key} {{\n", *_print(value, depth + 1), f"{pad}}}\n"]
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, Mapping):
                    out += [f"{pad}{key} {{\n", *_print(item, depth + 1), f"{pad}}}\n"]
                else:
                    out.append(f"{pad}{key}: {_scalar(item)}\n")
        else:
            out.append(f"{pad}{key}: {_scalar(value)}\n")
    return out


_POLICY = re.compile(r"version_policy\s*\{(?:[^{}]|\{[^{}]*\})*\}\s*", re.DOTALL)


def with_version_policy(text: str, versions: Sequence[int] | None) -> str:
    """``text`` with its version policy replaced: ``specific`` ``versions`` (a rollback pin) or,
    for None, ``latest`` 1 (the newest version directory serves)."""
    policy = ({"specific": {"versions": list(versions)}} if versions
              else {"latest": {"num_versions": 1}})
    pb2 = _model_config_pb2()
    if pb2 is not None:
        from google.protobuf import json_format, text_format
        msg = parse_pbtxt(text)
        msg.ClearField("version_policy")
        json_format.ParseDict(policy, msg.version_policy)
        return text_format.MessageToString(msg)
    block = "".join(_print({"version_policy": policy}, 0))
    if not _POLICY.search(text):
        return text + block
    return _POLICY.sub(lambda _: block, text, count=1)


def pinned_versions(text: str) -> list[int] | None:
    """The versions a ``specific`` policy pins, or None (latest)."""
    m = re.search(r"specific\s*\{([^{}]*)\}", text)
    if not m:
        return None
    return [int(v) for v in re.findall(r"versions:\s*(\d+)", m.group(1))]
