"""TensorRT for RTX: real plans built on this CPU-only machine for every zoo model (CI installs the
trt-rtx extra, so these run there, not skip), ``fusionrt build --engine trt-rtx --arch``, the
GPU refusal, the prebuilt-plan lookup and the runtime cache.

Loading and running a plan needs an RTX GPU, which no machine of this project has: those parts
are checked against stand-ins for the runtime objects, and no speed is measured anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from fusionrt.builders import trt_rtx
from fusionrt.builders.trt_builder import BuiltPlan, TrtBuildConfig
from fusionrt.cli import main
from fusionrt.engines import tensorrt_rtx as rtx
from fusionrt.engines import trt_base
from fusionrt.engines.base import BatchProfile, EngineConfig
from fusionrt.engines.registry import get_engine
from fusionrt.engines.tensorrt import RuntimeCacheSlot, TrtPlan
from fusionrt.errors import EngineError
from fusionrt.models.spec import Artifact
from fusionrt.models.store import ModelStore
from fusionrt.models.zoo import INSWAPPER_128, ZOO
from fusionrt.runtime.cache import EngineCache, Fingerprint

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt_rtx not installed: pip install "
                               "'fusionrt[trt-rtx]' (CI installs it, so there this runs)")
Engine = rtx.TensorrtRtxEngine
H200 = ("NVIDIA H200", "9.0")
RTX4090 = ("NVIDIA GeForce RTX 4090", "8.9")
DETECT_DIMS = {"H": 640, "W": 640}


# -- archs and GPUs (pure) ----------------------------------------------------------------------
def test_registered_with_capabilities():
    assert get_engine("trt-rtx") is Engine
    assert Engine.devices == ("cuda",) and Engine.fixed_batch_profile and Engine.cuda_graphs
    assert Engine.needs(Artifact(INSWAPPER_128, None), EngineConfig()) == "trt-rtx-plan"


def test_parse_archs():
    assert trt_rtx.parse_archs("sm86, SM89,sm120,sm89") == ("sm86", "sm89", "sm120")
    with pytest.raises(EngineError, match=r"arch 'sm90' \| not a TensorRT-RTX target .*Hopper"):
        trt_rtx.parse_archs("sm89,sm90")


@pytest.mark.parametrize("cc,ok", [("7.5", True), ("8.0", True), ("8.6", True), ("8.9", True),
                                   ("9.0", False), ("10.0", False), ("11.0", False),
                                   ("12.0", True), ("12.1", True), ("13.0", True), ("x", False)])
def test_cc_supported(cc, ok):
    assert rtx.cc_supported(cc) is ok


def test_hopper_refused_by_name_with_the_list():
    assert rtx.cc_reason("9.0", "NVIDIA H200", 0) == (
        "GPU 0 (NVIDIA H200) | compute capability 9.0: TensorRT for RTX does not run on it; "
        "expected one of 7.5, 8.0, 8.6, 8.9, 12.0, 12.1 or newer than 12.0 (RTX 20/30/40/50-class "
        "GPUs)")
    assert rtx.cc_reason("8.9", "NVIDIA GeForce RTX 4090") == ""


def test_available_gives_the_gpu_reason_first(monkeypatch):
    monkeypatch.setattr(rtx, "gpu_facts", lambda index=0: H200)
    ok, why = Engine.available()
    assert not ok and why.startswith("GPU 0 (NVIDIA H200) | compute capability 9.0")


def test_available_here_says_plans_still_build():
    ok, why = Engine.available()
    assert not ok  # no GPU on this machine (or the package is missing)
    if HAS_RTX and "no CUDA GPU" in why:
        assert why.endswith("plans still build here: fusionrt build MODEL --engine trt-rtx "
                            "--arch sm89")


def test_product_refuses_hopper_before_any_build(monkeypatch, tmp_path):
    monkeypatch.setattr(rtx, "gpu_facts", lambda index=0: H200)
    monkeypatch.setattr(trt_rtx, "build_network", _never)
    monkeypatch.setattr(trt_rtx, "build_rtx", _never)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(EngineError, match=r"engine 'trt-rtx' \| GPU 0 \(NVIDIA H200\) \| "
                                          r"compute capability 9.0"):
        trt_rtx.build_trt_rtx_plan(Engine, Artifact(INSWAPPER_128, onnx),
                                   EngineConfig(device="cuda"))


def _never(*a, **k):
    raise AssertionError("a build was attempted")


def test_int8_refused_with_the_reason(monkeypatch, tmp_path):
    assert "no INT8 activation calibration" in Engine.precision_refusal("int8")
    assert Engine.precision_refusal("fp16") is None
    monkeypatch.setattr(rtx, "gpu_facts", lambda index=0: RTX4090)
    with pytest.raises(EngineError, match=r"precision int8 \| TensorRT for RTX has no INT8"):
        trt_rtx.build_trt_rtx_plan(Engine, Artifact(INSWAPPER_128, tmp_path / "m.onnx"),
                                   EngineConfig(device="cuda", precision="int8"))


def test_cli_refuses_int8_before_converting(capsys):
    assert main(["build", "inswapper_128", "--engine", "trt-rtx", "--arch", "sm89",
                 "--precision", "int8"]) != 0
    assert "precision int8 | TensorRT for RTX has no INT8" in capsys.readouterr().err


def test_bench_lists_trt_rtx_rows():
    from fusionrt.bench.config import BUILD_ENGINES, CUDA_DEFAULTS
    assert "trt-rtx" in CUDA_DEFAULTS["engines"] and "trt-rtx" in BUILD_ENGINES


# -- every zoo model parses and builds for SM89, FP32 and FP16 ----------------------------------
@pytest.fixture(scope="module")
def zoo_onnx(tmp_path_factory):
    """name -> FP32 ONNX: the real built-in detector, reduced-width synthetic others (made once,
    on first use; needs torch)."""
    from conftest import SYNTH_WIDTHS
    home = tmp_path_factory.mktemp("rtx_zoo")
    store, made = ModelStore(home), {}

    def get(name: str) -> Path:
        spec = ZOO[name]
        if spec.builtin:
            return store.resolve(name).onnx_path
        if spec.arch not in made:  # inswapper_128_fp16 shares inswapper_128's graph
            pytest.importorskip("torch")
            from fusionrt.builders.synth import synthesize
            width = SYNTH_WIDTHS.get(name) or next(
                (w for n, w in SYNTH_WIDTHS.items() if ZOO[n].arch == spec.arch), 0.0625)
            made[spec.arch] = synthesize(name, home / f"{name}.onnx", seed=0, width=width)
        return made[spec.arch]
    return get


@needs_rtx
@pytest.mark.trt_rtx
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
# every zoo model with a graph to build: spec-only entries (``runnable: False``: FaceFusion's
# image-source blendswap/uniface, whose architectures are unpublished) have none yet
@pytest.mark.parametrize("name", [n for n in ZOO if ZOO[n].extra.get("runnable", True)])
def test_zoo_model_builds_for_sm89(name, precision, zoo_onnx, tmp_path, capsys):
    """A real parse + strongly typed build; a parser failure fails here naming the ONNX node."""
    from fusionrt.builders.fp16 import convert_fp16
    spec, path = ZOO[name], zoo_onnx(name)
    if precision == "fp16":
        convert_fp16(path, tmp_path / f"{name}.fp16.onnx")
        path = tmp_path / f"{name}.fp16.onnx"
    cfg = TrtBuildConfig(Path(path), dims=DETECT_DIMS if spec.task == "detect" else {})
    b = trt_rtx.build_rtx(trt_rtx.rtx_module(), cfg, spec, "sm89")
    assert len(b.plan) > 1000 and b.layers > 0
    with capsys.disabled():  # the figures go into CI's log (reduced widths except the detector)
        print(f"\n[trt-rtx sm89] {name} {precision}: built in {b.seconds:.2f} s, "
              f"plan {len(b.plan) / 1e6:.2f} MB, {b.layers} layers", end="")


@needs_rtx
def test_parser_error_names_the_node(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    g = helper.make_graph(
        [helper.make_node("Relu", ["target"], ["r"], name="ok_relu"),
         helper.make_node("NoSuchOp", ["r", "source"], ["output"], name="bad_node",
                          domain="fusionrt.test")], "bad",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, ["N", 3, 128, 128]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, ["N", 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 128, 128])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                  helper.make_opsetid("fusionrt.test", 1)],
                                ir_version=8), str(path))
    with pytest.raises(EngineError, match=r"TensorRT-RTX's ONNX parser failed: node 1 "
                                          r"'bad_node' \(NoSuchOp\)"):
        trt_rtx.build_rtx(trt_rtx.rtx_module(), TrtBuildConfig(path), INSWAPPER_128, "sm89")


# -- fusionrt build --engine trt-rtx --arch ------------------------------------------------------
@needs_rtx
def test_cli_builds_plans_with_manifest(fusionrt_home, capsys):
    argv = ["build", "retinaface_mnet025", "--engine", "trt-rtx", "--arch", "sm86,sm89"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sm86  3.2 MB  built in" in out and "326 layers" in out and "manifest: " in out
    man = fusionrt_home / "engines" / "trt-rtx" / "retinaface_mnet025.fp32.manifest.json"
    doc = json.loads(man.read_text())
    onnx = ModelStore().resolve("retinaface_mnet025").onnx_path
    assert doc["model_sha256"] == hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert (doc["precision"], doc["engine"]) == ("fp32", "trt-rtx")
    assert doc["tensorrt_rtx"] == trt_rtx.rtx_module().__version__
    assert [p["arch"] for p in doc["plans"]] == ["sm86", "sm89"]
    cache = EngineCache()
    for p in doc["plans"]:
        fp = trt_rtx.plan_fingerprint(onnx, "trt-rtx", "fp32", BatchProfile(), doc["builder"],
                                      p["compute_capability"], doc["tensorrt_rtx"])
        payload = cache.read(fp)
        assert cache.path_for(fp).name == p["file"] and p["plan_bytes"] == len(payload)
        assert p["plan_sha256"] == hashlib.sha256(payload).hexdigest() and p["build_s"] > 0
    assert main(argv[:-1] + ["sm89"]) == 0  # again: from the cache, figures kept
    assert "sm89  3.2 MB  cached" in capsys.readouterr().out
    assert json.loads(man.read_text())["plans"][1]["build_s"] == doc["plans"][1]["build_s"]


@needs_rtx
def test_cli_inswapper_synthetic(synthetic_home, capsys):
    assert main(["build", "inswapper_128", "--engine", "trt-rtx", "--arch", "sm89",
                 "--allow-synthetic"]) == 0
    out = capsys.readouterr().out
    assert "inswapper_128  fp32  sm89" in out and ("built in" in out or "cached" in out)
    assert list((synthetic_home / "engines" / "trt-rtx").glob("*.frtc"))


def test_cli_needs_an_arch_without_a_gpu(capsys):
    assert main(["build", "retinaface_mnet025", "--engine", "trt-rtx"]) != 0
    assert "--arch | no supported GPU here" in capsys.readouterr().err


# -- a GPU of a listed arch loads the prebuilt plan without building -----------------------------
class _FakeRuntime:
    got: list = []

    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, plan):
        _FakeRuntime.got.append(bytes(plan))
        return "ENGINE"


@needs_rtx
def test_prebuilt_plan_loads_without_building(fusionrt_home, monkeypatch):
    assert main(["build", "retinaface_mnet025", "--engine", "trt-rtx", "--arch", "sm89"]) == 0
    art = ModelStore().resolve("retinaface_mnet025")
    monkeypatch.setattr(rtx, "gpu_facts", lambda index=0: RTX4090)
    monkeypatch.setattr(trt_base, "cuda_device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(trt_rtx, "build_rtx", _never)
    monkeypatch.setattr(trt_rtx.rtx_module(), "Runtime", _FakeRuntime)
    _FakeRuntime.got = []
    plan = trt_rtx.build_trt_rtx_plan(Engine, art, EngineConfig(
        device="cuda", options={"dims": DETECT_DIMS}))
    assert (plan.engine, plan.built, plan.info["arch"]) == ("ENGINE", False, "sm89")
    doc = json.loads((fusionrt_home / "engines" / "trt-rtx" /
                      "retinaface_mnet025.fp32.manifest.json").read_text())
    assert hashlib.sha256(_FakeRuntime.got[0]).hexdigest() == doc["plans"][0]["plan_sha256"]
    assert plan.runtime_cache.fingerprint.engine == "trt-rtx"
    # an RTX 5090 (12.0) finds no sm120 plan: it builds exactly that arch
    calls = []
    monkeypatch.setattr(rtx, "gpu_facts", lambda index=0: ("NVIDIA GeForce RTX 5090", "12.0"))
    monkeypatch.setattr(trt_rtx, "build_rtx", lambda trt, cfg, spec, arch: calls.append(arch)
                        or BuiltPlan(b"PLAN120", 0.1, 1))
    plan = trt_rtx.build_trt_rtx_plan(Engine, art, EngineConfig(
        device="cuda", options={"dims": DETECT_DIMS}))
    assert calls == ["sm120"] and plan.built and _FakeRuntime.got[-1] == b"PLAN120"


# -- runtime cache and CUDA-graph option (stand-ins for the runtime objects) ---------------------
class _Cache:
    def __init__(self):
        self.loaded = None

    def deserialize(self, data):
        self.loaded = bytes(data)
        return True

    def serialize(self):
        return memoryview(b"KERNELS:" + (self.loaded or b""))


class _RuntimeConfig:
    cuda_graph_strategy = "DISABLED"

    def create_runtime_cache(self):
        self.cache = _Cache()
        return self.cache

    def set_runtime_cache(self, cache):
        self.set = cache
        return True


class _CudaEngine:
    def create_runtime_config(self):
        self.rc = _RuntimeConfig()
        return self.rc

    def create_execution_context(self, rc=None):
        return ("CONTEXT", rc)


class _Trt:
    CudaGraphStrategy = type("S", (), {"WHOLE_GRAPH_CAPTURE": "WHOLE_GRAPH_CAPTURE"})


def test_runtime_cache_kept_in_the_engine_cache(tmp_path):
    fp = Fingerprint("ab" * 32, "fp16", "1:1:1", "trt-rtx", gpu_name="RTX 4090",
                     compute_capability="8.9", builder="opt3;runtime-cache")
    slot = RuntimeCacheSlot(tmp_path, fp)

    def start(options):
        eng = Engine(Artifact(INSWAPPER_128, None), EngineConfig(device="cuda", options=options),
                     plan=TrtPlan(_CudaEngine(), None, None, runtime_cache=slot))
        cuda_engine = eng._plan.engine
        ctx = eng._create_context(_Trt, cuda_engine)
        return eng, cuda_engine.rc, ctx

    eng, rc, ctx = start({})
    assert ctx == ("CONTEXT", rc) and rc.set is rc.cache and rc.cache.loaded is None
    assert rc.cuda_graph_strategy == "DISABLED" and not eng.runtime_cache_loaded
    eng._after_first_run()  # the first enqueue compiled the kernels: stored at once
    assert slot.load() == b"KERNELS:"
    eng2, rc2, _ = start({"cuda_graph": True})  # a second process start: kernels handed back
    assert rc2.cache.loaded == b"KERNELS:" and eng2.runtime_cache_loaded
    assert rc2.cuda_graph_strategy == "WHOLE_GRAPH_CAPTURE"
    assert list(tmp_path.glob("trt-rtx/*.frtc")) == [EngineCache(tmp_path).path_for(fp)]
