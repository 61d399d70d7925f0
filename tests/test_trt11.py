"""The native ``trt`` engine against TensorRT 11's API, which cannot be installed here.

Two checks, both against NVIDIA's documented "TensorRT 10.x to 11.x Python API" migration list:
the TensorRT code names none of the removed symbols, and the builder, the plan product and the
engine's load path run against a stand-in ``tensorrt`` module that has *only* the TensorRT 11 API
(every removed attribute raises AttributeError, as the real module would). Plus the edge preset
(Jetson Orin, not run on one) and the doctor's TensorRT major / ONNX Runtime EP lines.
"""

from __future__ import annotations

import ast
import contextlib
import sys
import types
from pathlib import Path

import pytest

from fusionrt.builders import trt_builder
from fusionrt.builders.trt_builder import TrtBuildConfig, build_engine, trtexec_command
from fusionrt.builders.trt_plan import build_trt_plan, trt_build_config
from fusionrt.builders.trt_presets import PRESETS, apply_preset, get_preset
from fusionrt.cli import main
from fusionrt.engines import _compat, trt_base
from fusionrt.engines.base import BatchProfile, EngineConfig
from fusionrt.engines.tensorrt import TensorrtEngine
from fusionrt.errors import EngineError
from fusionrt.models.spec import Artifact
from fusionrt.models.zoo import INSWAPPER_128
from fusionrt.runtime import probes

PKG = Path(__file__).resolve().parent.parent / "fusionrt"
TRT_FILES = ["engines/trt_base.py", "engines/tensorrt.py", "engines/tensorrt_rtx.py",
             "builders/trt_builder.py", "builders/trt_plan.py", "builders/trt_rtx.py",
             "builders/trt_presets.py", "cli/build.py"]


# -- 1. no removed symbol on any TensorRT path ---------------------------------------------------
def _docstrings(tree):
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


@pytest.mark.parametrize("rel", TRT_FILES)
def test_no_symbol_tensorrt_11_removed(rel):
    tree = ast.parse((PKG / rel).read_text())
    docs, bad = _docstrings(tree), []
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute):
            if n.attr in _compat.REMOVED_ATTRIBUTES:
                bad.append(f"{rel}:{n.lineno} .{n.attr}")
            if n.attr in _compat.REMOVED_BUILDER_FLAGS and isinstance(n.value, ast.Attribute) \
                    and n.value.attr == "BuilderFlag":
                bad.append(f"{rel}:{n.lineno} BuilderFlag.{n.attr}")
            if n.attr == "set_flag":  # precision lives in the graph: no builder flag at all
                bad.append(f"{rel}:{n.lineno} .set_flag")
        elif isinstance(n, ast.Constant) and id(n) not in docs and \
                n.value in _compat.REMOVED_ATTRIBUTES:  # getattr(x, "device_memory_size")
            bad.append(f"{rel}:{n.lineno} {n.value!r}")
    assert not bad, "TensorRT 11 removed these: " + ", ".join(bad)


# -- 2. a stand-in with only the TensorRT 11 API ------------------------------------------------
class _Strict:
    """Attributes not declared raise AttributeError, as on the real bindings."""
    __slots__ = ()


def _enum(name, **members):
    return type(name, (), members)


def make_trt11(calls: dict) -> types.ModuleType:
    """The TensorRT 11.4 surface fusionrt's build/load path touches (per the 11.x Python API
    docs); every symbol the migration guide lists as removed is absent."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "11.4.0.9"
    # STRONGLY_TYPED is kept in 11 (deprecated, ignored); EXPLICIT_BATCH is gone.
    trt.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", STRONGLY_TYPED=1,
                                              PREFER_AOT_PYTHON_PLUGINS=2,
                                              PREFER_JIT_PYTHON_PLUGINS=3)
    trt.BuilderFlag = _enum("BuilderFlag", TF32=0, DEBUG=1, GPU_FALLBACK=2, REFIT=3,
                            SPARSE_WEIGHTS=4, VERSION_COMPATIBLE=5, STRIP_PLAN=6)
    trt.MemoryPoolType = _enum("MemoryPoolType", WORKSPACE="workspace")
    trt.TensorIOMode = _enum("TensorIOMode", INPUT="in", OUTPUT="out")
    trt.DataType = _enum("DataType", FLOAT=types.SimpleNamespace(name="FLOAT"))

    class ILogger:
        Severity = _enum("Severity", INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self):
            pass

    class Network(_Strict):
        __slots__ = ("inputs",)
        num_layers = property(lambda self: 7)
        num_inputs = property(lambda self: len(self.inputs))

        def get_input(self, i):
            return types.SimpleNamespace(name=self.inputs[i])

    class OnnxParser(_Strict):
        __slots__ = ("network",)
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            self.network.inputs = ["target", "source"]
            return True

    class TimingCache(_Strict):
        def serialize(self):
            return memoryview(b"TC")

    class IBuilderConfig(_Strict):  # no int8_calibrator, no quantization flags
        __slots__ = ("builder_optimization_level", "_cache")

        def set_memory_pool_limit(self, pool, n):
            calls["pool"] = (pool, n)

        def set_flag(self, flag):
            calls["flag"] = flag

        def add_optimization_profile(self, p):
            calls["profiles"] = calls.get("profiles", 0) + 1

        def create_timing_cache(self, data):
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    class Profile(_Strict):
        def set_shape(self, name, lo, opt, hi):
            calls.setdefault("shapes", {})[name] = (lo, opt, hi)

    class Builder(_Strict):  # no platform_has_fast_fp16 / _int8
        __slots__ = ("logger",)

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return memoryview(b"PLAN11")

    class ICudaEngine(_Strict):  # device_memory_size is gone; _v2 stays
        names = ("target", "source", "output")
        num_io_tensors = 3
        device_memory_size_v2 = 12345

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, n):
            return trt.TensorIOMode.OUTPUT if n == "output" else trt.TensorIOMode.INPUT

        def get_tensor_dtype(self, n):
            return trt.DataType.FLOAT

        def create_execution_context(self):
            return "CONTEXT"

    class Runtime(_Strict):
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            calls["deserialized"] = bytes(plan)
            return ICudaEngine()

    for k, v in dict(ILogger=ILogger, OnnxParser=OnnxParser, Builder=Builder,
                     Runtime=Runtime).items():
        setattr(trt, k, v)
    return trt


@pytest.fixture
def trt11(monkeypatch, tmp_path):
    calls: dict = {}
    trt = make_trt11(calls)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_builder, "_LOGGERS", {})
    monkeypatch.setattr(trt_base, "cuda_device", lambda index: contextlib.nullcontext())
    trt.calls = calls
    return trt


def test_the_stand_in_lacks_what_11_removed(trt11):
    for flag in _compat.REMOVED_BUILDER_FLAGS:
        assert not hasattr(trt11.BuilderFlag, flag)
    b = trt11.Builder(None)
    for attr in ("platform_has_fast_fp16", "platform_has_fast_int8"):
        assert not hasattr(b, attr)
    with pytest.raises(AttributeError):
        b.create_builder_config().int8_calibrator = object()
    assert not hasattr(trt11.Runtime(None).deserialize_cuda_engine(b""), "device_memory_size")


def test_build_against_tensorrt_11(trt11, tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph")
    cfg = TrtBuildConfig(onnx, batch=BatchProfile(1, 2, 4), timing_cache=tmp_path / "tc.cache")
    assert build_engine(cfg, INSWAPPER_128) == b"PLAN11"
    c = trt11.calls
    assert c["network_flags"] == 1 << 1 and "flag" not in c  # strongly typed bit, no flags
    assert c["pool"] == ("workspace", 4 << 30) and c["profiles"] == 1
    assert c["shapes"]["source"] == ((1, 512), (2, 512), (4, 512))
    assert (tmp_path / "tc.cache").read_bytes() == b"TC"


def test_without_the_strongly_typed_flag_a_later_release_builds_with_none(trt11, tmp_path):
    trt11.NetworkDefinitionCreationFlag = _enum("F", PREFER_AOT_PYTHON_PLUGINS=2)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph")
    build_engine(TrtBuildConfig(onnx), INSWAPPER_128)
    assert trt11.calls["network_flags"] == 0


def test_plan_and_engine_load_against_tensorrt_11(trt11, tmp_path):
    pytest.importorskip("torch")  # the engine's load path allocates its I/O through torch
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph")
    art = Artifact(INSWAPPER_128, onnx)
    cfg = EngineConfig(device="cuda", options={"cache_dir": str(tmp_path / "engines")})
    plan = build_trt_plan(TensorrtEngine, art, cfg)
    assert plan.built and trt11.calls["deserialized"] == b"PLAN11"
    assert not build_trt_plan(TensorrtEngine, art, cfg).built  # second open: from the cache
    eng = TensorrtEngine(art, cfg, plan=plan)
    eng._load()  # context, I/O contract, device memory through device_memory_size_v2
    assert eng._context == "CONTEXT" and eng.device_memory_bytes == 12345


def test_compat_device_memory_and_major():
    assert _compat.device_memory_size(types.SimpleNamespace(device_memory_size_v2=7)) == 7
    assert _compat.device_memory_size(object()) is None
    assert _compat.trt_major(types.SimpleNamespace(__version__="11.4.0")) == 11
    assert _compat.trt_major(object()) is None


def test_trtexec_line_is_strongly_typed():
    cmd = trtexec_command(TrtBuildConfig(Path("m.onnx")), INSWAPPER_128, Path("m.plan"))
    assert " --stronglyTyped " in cmd and "--fp16" not in cmd and "--int8" not in cmd


# -- doctor: which TensorRT major, which ONNX Runtime its EP needs ------------------------------
@pytest.mark.parametrize("trt_version,ort_version,want", [
    ("11.4.0", "1.32.0", "onnxruntime-gpu >= 1.27"),
    ("11.1.0", "1.26.1", "onnxruntime-gpu >= 1.27 (installed onnxruntime 1.26.1 is older: its "
                         "TensorRT EP cannot use it)"),
    ("10.13.0", "1.22.0", "onnxruntime-gpu >= 1.18"),
    (None, "1.32.0", None)])
def test_ort_ep_needs(trt_version, ort_version, want):
    assert probes.ort_ep_needs(trt_version, ort_version) == want


def test_doctor_reports_tensorrt_11(trt11, monkeypatch):
    monkeypatch.setattr(probes, "library_version",
                        lambda m: {"tensorrt": "11.4.0.9", "onnxruntime": "1.26.0"}.get(m))
    r = probes.probe_tensorrt("13.0")
    assert (r["version"], r["major"], r["error"]) == ("11.4.0.9", 11, None)
    assert r["ort_ep_needs"].startswith("onnxruntime-gpu >= 1.27 (installed onnxruntime 1.26.0")


# -- the edge preset (Jetson Orin; written and unit-tested here, not run on a Jetson) ------------
def test_edge_preset():
    edge = get_preset("edge")
    assert (edge.workspace_gb, edge.batch, edge.precision) == (1.0, BatchProfile(1, 1, 1), "fp16")
    assert "not run on a Jetson" in edge.note and set(PRESETS) == {"default", "edge"}
    assert apply_preset(edge, None, None) == (BatchProfile(1, 1, 1), "fp16")
    assert apply_preset(edge, BatchProfile(1, 1, 1), "fp32") == (BatchProfile(1, 1, 1), "fp32")
    with pytest.raises(EngineError, match=r"build profile 'edge' \| got batch profile 1:4:8; "
                                          r"expected 1:1:1"):
        apply_preset(edge, BatchProfile(1, 4, 8), None)
    with pytest.raises(EngineError, match=r"build profile 'jetson' \| unknown; expected one of"):
        get_preset("jetson")


def test_edge_build_settings_and_trtexec_line(tmp_path):
    art = Artifact(INSWAPPER_128, tmp_path / "m.fp16.onnx")
    cfg = trt_build_config(art, EngineConfig(device="cuda", precision="fp16",
                                             options={"profile": "edge"}))
    assert cfg.workspace_gb == 1.0 and cfg.batch == BatchProfile(1, 1, 1)
    assert cfg.builder_tag() == "opt3;ws=1"  # its own cache slot, apart from a 4 GiB build
    assert trtexec_command(cfg, INSWAPPER_128, Path("/p/m.plan")).endswith(
        "--stronglyTyped --minShapes=target:1x3x128x128,source:1x512 "
        "--optShapes=target:1x3x128x128,source:1x512 --maxShapes=target:1x3x128x128,source:1x512"
        f" --memPoolSize=workspace:1024M --timingCacheFile={cfg.timing_cache} "
        "--builderOptimizationLevel=3")
    with pytest.raises(EngineError, match=r"build profile 'edge' \| got batch profile 1:2:4"):
        trt_build_config(art, EngineConfig(device="cuda", batch=BatchProfile(1, 2, 4),
                                           options={"profile": "edge"}))


def test_edge_build_against_tensorrt_11(trt11, tmp_path):
    onnx = tmp_path / "m.fp16.onnx"
    onnx.write_bytes(b"graph")
    cfg = trt_build_config(Artifact(INSWAPPER_128, onnx), EngineConfig(
        device="cuda", precision="fp16", options={"profile": "edge",
                                                  "cache_dir": str(tmp_path)}))
    build_engine(cfg, INSWAPPER_128)
    assert trt11.calls["pool"] == ("workspace", 1 << 30)
    assert trt11.calls["shapes"]["target"] == ((1, 3, 128, 128),) * 3


def test_cli_edge_profile_refusals(capsys):
    assert main(["build", "retinaface_mnet025", "--engine", "trt", "--profile", "edge",
                 "--batch", "4"]) != 0
    assert "build profile 'edge' | got batch profile 4:4:4; expected 1:1:1" in \
        capsys.readouterr().err
    assert main(["build", "retinaface_mnet025", "--engine", "trt-rtx", "--profile", "edge",
                 "--arch", "sm89"]) != 0
    assert "--profile edge | Jetson Orin (CC 8.7)" in capsys.readouterr().err
