"""Native TensorRT engine + builder.

TensorRT cannot be installed on the development/CI machines, so everything that does not need
it is a pure function tested here; the end-to-end build + run is ``@pytest.mark.trt`` and skips
without the package (run it on a GPU machine with tensorrt-cu12/cu13 installed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fusionrt.builders.trt_builder import (TrtBuildConfig, build_engine, format_parser_errors,
                                        input_shape, profile_shapes, shapes_arg, trtexec_command)
from fusionrt.builders.open import open_engine
from fusionrt.engines.base import BatchProfile, EngineConfig
from fusionrt.engines.registry import get_engine
from fusionrt.engines.tensorrt import (TensorrtEngine, check_engine_io, trt_dtype_name)
from fusionrt.errors import EngineError
from fusionrt.models.spec import Artifact
from fusionrt.models.zoo import INSWAPPER_128, RETINAFACE_MNET025

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONRT_HOME", str(tmp_path / "home"))


# -- batch profiles / shapes ----------------------------------------------------------------
@pytest.mark.parametrize("text,want", [("8", (8, 8, 8)), ("1:8:32", (1, 8, 32)),
                                       ("1:1:1", (1, 1, 1))])
def test_batch_profile_parse(text, want):
    p = BatchProfile.parse(text)
    assert (p.min, p.opt, p.max) == want and BatchProfile.parse(str(p)) == p


@pytest.mark.parametrize("text,match", [("a", "expected N or MIN:OPT:MAX"),
                                        ("4:2:8", "1 <= MIN <= OPT <= MAX"),
                                        ("0:1:2", "1 <= MIN"), ("1:2:3:4", "expected N or MIN:OPT:MAX"),
                                        ("1:2", "expected N or MIN:OPT:MAX")])
def test_batch_profile_rejects(text, match):
    with pytest.raises(ValueError, match=match):
        BatchProfile.parse(text)


def test_profile_shapes_from_spec():
    shapes = profile_shapes(INSWAPPER_128, BatchProfile(1, 4, 16))
    assert shapes == {"target": ((1, 3, 128, 128), (4, 3, 128, 128), (16, 3, 128, 128)),
                      "source": ((1, 512), (4, 512), (16, 512))}


def test_other_dynamic_axes_need_dims():
    t = RETINAFACE_MNET025.inputs[0]
    assert input_shape(t, 2, {"H": 480, "W": 640}) == (2, 3, 480, 640)
    with pytest.raises(EngineError, match=r"input 'input' \| axis 2 \('H'\) is dynamic"):
        input_shape(t, 2)


def test_shapes_arg():
    assert shapes_arg(INSWAPPER_128, 8) == "target:8x3x128x128,source:8x512"


def test_trtexec_command_exact(tmp_path):
    cfg = TrtBuildConfig(onnx_path=Path("/m/inswapper_128.fp16.onnx"), batch=BatchProfile(1, 4, 8),
                         workspace_gb=4, optimization_level=3,
                         timing_cache=Path("/c/trt/timing.cache"))
    cmd = trtexec_command(cfg, INSWAPPER_128, Path("/c/inswapper.plan"))
    assert cmd == (
        "trtexec --onnx=/m/inswapper_128.fp16.onnx --saveEngine=/c/inswapper.plan --stronglyTyped"
        " --minShapes=target:1x3x128x128,source:1x512"
        " --optShapes=target:4x3x128x128,source:4x512"
        " --maxShapes=target:8x3x128x128,source:8x512"
        " --memPoolSize=workspace:4096M --timingCacheFile=/c/trt/timing.cache"
        " --builderOptimizationLevel=3")


def test_trtexec_command_quotes_paths_and_dims():
    cfg = TrtBuildConfig(onnx_path=Path("/my models/det.onnx"), batch=BatchProfile(2, 2, 2),
                         workspace_gb=1.5, optimization_level=5, dims={"H": 640, "W": 480})
    cmd = trtexec_command(cfg, RETINAFACE_MNET025, Path("det.plan"))
    assert cmd == ("trtexec --onnx='/my models/det.onnx'"
                   " --saveEngine=det.plan --stronglyTyped --minShapes=input:2x3x640x480"
                   " --optShapes=input:2x3x640x480 --maxShapes=input:2x3x640x480"
                   " --memPoolSize=workspace:1536M --builderOptimizationLevel=5")


@pytest.mark.parametrize("kwargs,match", [
    ({"strongly_typed": False}, "strongly typed networks only"),
    ({"optimization_level": 6}, r"optimization_level \| got 6; expected 0..5"),
    ({"workspace_gb": 0}, r"workspace_gb \| got 0; expected > 0")])
def test_build_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrtBuildConfig(onnx_path=Path("m.onnx"), **kwargs)


def test_builder_tag_changes_with_plan_settings():
    a = TrtBuildConfig(onnx_path=Path("m.onnx"))
    assert a.builder_tag() == "opt3"
    assert TrtBuildConfig(onnx_path=Path("m.onnx"), optimization_level=5,
                          dims={"W": 480, "H": 640}).builder_tag() == "opt5;H=640,W=480"


# -- error text / dtype mapping / contract checks ------------------------------------------------
def test_parser_errors_one_line():
    msg = format_parser_errors(Path("m.onnx"), [
        {"node": 12, "name": "/norm/InstanceNormalization", "op": "InstanceNormalization",
         "desc": "unsupported attribute\n"},
        {"node": -1, "name": "", "op": "", "desc": "graph has no outputs"}])
    assert "\n" not in msg
    assert msg.startswith("model 'm.onnx' | TensorRT's ONNX parser failed: node 12 "
                          "'/norm/InstanceNormalization' (InstanceNormalization): unsupported "
                          "attribute; graph has no outputs; expected")
    assert "without reporting" in format_parser_errors(Path("m.onnx"), [])


@pytest.mark.parametrize("trt_name,name", [("FLOAT", "float32"), ("HALF", "float16"),
                                           ("DataType.BF16", "bfloat16"), ("INT64", "int64"),
                                           ("INT8", "int8"), ("BOOL", "bool")])
def test_trt_dtype_names(trt_name, name):
    assert trt_dtype_name(trt_name) == name


def test_trt_dtype_objects_by_name():
    class FakeEnum:  # trt.DataType members expose .name like this
        name = "HALF"
    assert trt_dtype_name(FakeEnum()) == "float16"


def test_trt_dtype_unknown():
    with pytest.raises(EngineError, match=r"tensorrt dtype INT4 \| not supported"):
        trt_dtype_name("INT4")


def test_torch_dtype_mapping():
    torch = pytest.importorskip("torch")
    from fusionrt.engines.tensorrt import torch_dtype
    assert torch_dtype(trt_dtype_name("HALF")) is torch.float16
    assert torch_dtype(trt_dtype_name("FLOAT")) is torch.float32


GOOD_IO = [("target", True, "float32"), ("source", True, "float32"), ("output", False, "float32")]


def test_engine_io_matches_contract():
    check_engine_io(INSWAPPER_128, GOOD_IO)


def test_engine_io_wrong_name():
    io = [("input.1", True, "float32"), ("source", True, "float32"), ("output", False, "float32")]
    with pytest.raises(EngineError, match=r"engine has inputs \['input.1', 'source'\]"):
        check_engine_io(INSWAPPER_128, io)


def test_engine_io_wrong_dtype():
    io = GOOD_IO[:2] + [("output", False, "float16")]
    with pytest.raises(EngineError, match="'output' is float16; contract expects float32"):
        check_engine_io(INSWAPPER_128, io)


# -- availability here ---------------------------------------------------------------------
@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_available_false_with_install_hint():
    ok, why = TensorrtEngine.available()
    assert not ok
    assert why == "tensorrt Python package not installed: pip install tensorrt-cu12 (or -cu13)"
    assert get_engine("trt") is TensorrtEngine


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_load_refused_with_hint(tmp_path):
    eng = TensorrtEngine(Artifact(INSWAPPER_128, tmp_path / "m.onnx"), EngineConfig(device="cuda"))
    with pytest.raises(EngineError, match=r"engine 'trt' \| not usable here: tensorrt Python"):
        eng.load()


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_build_engine_without_tensorrt(tmp_path):
    cfg = TrtBuildConfig(onnx_path=tmp_path / "m.onnx")
    with pytest.raises(EngineError, match="tensorrt Python package not installed: pip install"):
        build_engine(cfg, INSWAPPER_128)


def test_batch_outside_profile_rejected():
    eng = TensorrtEngine(Artifact(INSWAPPER_128, None),
                         EngineConfig(device="cuda", batch=BatchProfile(1, 2, 4)))
    feeds = {"target": np.zeros((8, 3, 128, 128), np.float32),
             "source": np.zeros((8, 512), np.float32)}
    with pytest.raises(EngineError, match="got batch 8; this engine was built for batch 1..4"):
        eng.check_feeds(feeds)


# -- end to end on a GPU with TensorRT --------------------------------------------------------
def _tiny_swapper(path: Path) -> None:
    """inswapper's I/O contract: output = target * sigmoid(mean(source))."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    g = helper.make_graph(
        [helper.make_node("ReduceMean", ["source"], ["m"], axes=[1], keepdims=1),
         helper.make_node("Reshape", ["m", "shape4"], ["m4"]),
         helper.make_node("Sigmoid", ["m4"], ["s"]),
         helper.make_node("Mul", ["target", "s"], ["output"])], "tiny_swap",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, ["N", 3, 128, 128]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, ["N", 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 128, 128])],
        [helper.make_tensor("shape4", TensorProto.INT64, [4], [-1, 1, 1, 1])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
              str(path))


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT cannot be installed on this machine; run on a "
                                        "GPU machine with pip install tensorrt-cu12 (or -cu13)")
def test_trt_build_run_and_cache(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    onnx_path = tmp_path / "tiny.onnx"
    _tiny_swapper(onnx_path)
    cfg = EngineConfig(device="cuda", batch=BatchProfile(1, 2, 4),
                       options={"cache_dir": str(tmp_path / "engines")})
    rng = np.random.default_rng(0)
    feeds = {"target": rng.random((3, 3, 128, 128), dtype=np.float32),
             "source": rng.standard_normal((3, 512), dtype=np.float32)}
    s = 1 / (1 + np.exp(-feeds["source"].mean(1)))
    want = feeds["target"] * s[:, None, None, None]
    with open_engine(TensorrtEngine, Artifact(INSWAPPER_128, onnx_path), cfg) as eng:
        got = eng.run(feeds)["output"]  # numpy in → numpy out
        dev = eng.run({k: torch.from_numpy(v).cuda() for k, v in feeds.items()})["output"]
        assert dev.is_cuda
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dev.cpu().numpy(), want, rtol=1e-5, atol=1e-5)
    plans = list((tmp_path / "engines" / "trt").glob("*.frtc"))
    assert len(plans) == 1 and (tmp_path / "engines" / "trt" / "timing.cache").is_file()
    mtime = plans[0].stat().st_mtime_ns
    with open_engine(TensorrtEngine, Artifact(INSWAPPER_128, onnx_path), cfg) as eng:  # cache hit
        np.testing.assert_allclose(eng.run(feeds)["output"], want, rtol=1e-5, atol=1e-5)
    assert plans[0].stat().st_mtime_ns == mtime


# -- the builder's TensorRT calls, against a recording stand-in for the tensorrt module ---------
# Not a substitute for the real build above: it checks the calls build_engine makes (strongly
# typed flag, no precision flags, the profile, workspace, timing cache round trip, error text).
class _FakeTrt:
    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            pass

    NetworkDefinitionCreationFlag = type("F", (), {"STRONGLY_TYPED": 1})
    MemoryPoolType = type("M", (), {"WORKSPACE": "workspace"})

    def __init__(self):
        self.calls: dict[str, Any] = {"profile": {}}
        trt = self

        class Err:
            def node(self): return 7
            def desc(self): return "Unsupported operator Foo"
            def node_name(self): return "/foo"
            def node_operator(self): return "Foo"

        class Network:
            inputs: list[str] = []
            num_inputs = property(lambda self: len(self.inputs))
            num_layers = 4
            def get_input(self, i): return type("T", (), {"name": self.inputs[i]})

        class OnnxParser:
            def __init__(self, network, logger): self.network, self.num_errors = network, 0
            def get_error(self, i): return Err()

            def parse_from_file(self, path):
                text = Path(path).read_text()
                if text == "bad":
                    self.num_errors = 1
                    return False
                self.network.inputs = text.split(",")
                return True

        class Cache:
            def __init__(self, data): self.data = bytes(data)
            def serialize(self): return self.data + b"+timed"

        class Config:
            builder_optimization_level = None
            def set_memory_pool_limit(self, pool, n): trt.calls["pool"] = (pool, n)
            def set_flag(self, flag): trt.calls["flag"] = flag  # must never be called
            def add_optimization_profile(self, p): trt.calls["profiles"] = 1
            def create_timing_cache(self, data): return Cache(data)
            def set_timing_cache(self, c, ignore): self.cache = c; return not ignore
            def get_timing_cache(self): return self.cache

        class Profile:
            def set_shape(self, name, lo, opt, hi): trt.calls["profile"][name] = (lo, opt, hi)

        class Builder:
            def __init__(self, logger): self.logger = logger
            def create_network(self, flags): trt.calls["flags"] = flags; return Network()
            def create_builder_config(self): trt.config = Config(); return trt.config
            def create_optimization_profile(self): return Profile()

            def build_serialized_network(self, network, config):
                trt.calls["opt_level"] = config.builder_optimization_level
                if trt.fail_build:
                    self.logger.log(trt.ILogger.Severity.ERROR, "out of GPU memory")
                    return None
                return memoryview(b"PLAN")

        self.OnnxParser, self.Builder, self.fail_build = OnnxParser, Builder, False


@pytest.fixture
def fake_trt(monkeypatch):
    import sys
    from fusionrt.builders import trt_builder
    fake = _FakeTrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_builder, "_LOGGERS", {})
    return fake


def _cfg(tmp_path, graph="target,source", **kw):
    onnx = tmp_path / "m.onnx"
    onnx.write_text(graph)
    return TrtBuildConfig(onnx_path=onnx, batch=BatchProfile(1, 4, 8),
                          timing_cache=tmp_path / "tc" / "timing.cache", **kw)


def test_build_calls(fake_trt, tmp_path):
    cfg = _cfg(tmp_path, workspace_gb=2, optimization_level=4)
    assert build_engine(cfg, INSWAPPER_128) == b"PLAN"
    c = fake_trt.calls
    assert c["flags"] == 1 << 1 and "flag" not in c  # strongly typed; no FP16/INT8 flags
    assert c["pool"] == ("workspace", 2 << 30) and c["opt_level"] == 4
    assert c["profile"] == profile_shapes(INSWAPPER_128, BatchProfile(1, 4, 8))
    assert (tmp_path / "tc" / "timing.cache").read_bytes() == b"+timed"
    build_engine(cfg, INSWAPPER_128)  # the saved cache is loaded into the next build
    assert (tmp_path / "tc" / "timing.cache").read_bytes() == b"+timed+timed"


def test_build_parser_errors(fake_trt, tmp_path):
    with pytest.raises(EngineError, match=r"ONNX parser failed: node 7 '/foo' \(Foo\): "
                                          "Unsupported operator Foo"):
        build_engine(_cfg(tmp_path, graph="bad"), INSWAPPER_128)


def test_build_graph_inputs_must_match(fake_trt, tmp_path):
    with pytest.raises(EngineError, match=r"graph has inputs \['input.1'\]; contract expects"):
        build_engine(_cfg(tmp_path, graph="input.1"), INSWAPPER_128)


def test_build_failure_reports_tensorrt_errors(fake_trt, tmp_path):
    fake_trt.fail_build = True
    with pytest.raises(EngineError, match="TensorRT build failed: out of GPU memory"):
        build_engine(_cfg(tmp_path), INSWAPPER_128)
    assert not (tmp_path / "tc" / "timing.cache").exists()


def test_build_missing_onnx(fake_trt, tmp_path):
    cfg = TrtBuildConfig(onnx_path=tmp_path / "nope.onnx")
    with pytest.raises(EngineError, match="ONNX file not found"):
        build_engine(cfg, INSWAPPER_128)
