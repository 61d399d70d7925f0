"""``ort-trt-rtx``: ONNX Runtime with the NV TensorRT-RTX plugin EP.

On this CPU-only machine the plugin (when installed) is really registered and fails for want of
an NVIDIA driver; the other reasons and the session set-up are checked against a stand-in
ONNX Runtime. A session on the plugin needs an RTX GPU: not run here.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types

import pytest

from fusionrt.engines import ort_trt_rtx as ep
from fusionrt.engines import tensorrt_rtx as rtx
from fusionrt.engines.base import BatchProfile, EngineConfig
from fusionrt.engines.registry import get_engine
from fusionrt.errors import EngineError
from fusionrt.models.spec import Artifact
from fusionrt.models.zoo import INSWAPPER_128, RETINAFACE_MNET025

HAS_PLUGIN = importlib.util.find_spec(ep.PLUGIN_MODULE) is not None
Engine = ep.OrtTrtRtxEngine


@pytest.fixture(autouse=True)
def _fresh_registration(monkeypatch):
    monkeypatch.setattr(ep, "_REGISTERED", {})


def test_registered():
    assert get_engine("ort-trt-rtx") is Engine
    assert Engine.devices == ("cuda",) and Engine.fixed_batch_profile


def test_reason_on_this_machine():
    """Real: the plugin's library cannot load without a driver; without the plugin, the extra."""
    ok, why = Engine.available()
    assert not ok
    if not HAS_PLUGIN:
        assert why == f"{ep.PLUGIN_MODULE} not installed: {ep.INSTALL_HINT}"
    elif "cannot be registered" in why:  # this CPU-only machine
        assert why.startswith(f"{ep.EP_NAME} plugin | cannot be registered: ")
        assert why.endswith("expected an NVIDIA driver and an RTX GPU")


@pytest.mark.skipif(not HAS_PLUGIN, reason="plugin not installed (pip install "
                    "'fusionrt[ort-trt-rtx]'; ~146 MB, not in CI)")
def test_real_registration_without_a_driver():
    import onnxruntime as ort
    ok, why = ep.register_plugin(ort)
    if ok:
        pytest.skip("the plugin registered: this machine has an NVIDIA driver")
    assert "libcuda.so.1 not found (no NVIDIA driver on this machine)" in why
    assert ep.register_plugin(ort) == (ok, why)  # once per process


# -- a stand-in ONNX Runtime ----------------------------------------------------------------------
class _Device:
    def __init__(self, name=ep.EP_NAME):
        self.ep_name = name


class _Session:
    def __init__(self, path, so):
        self.so = so
        self.providers = list(_Ort.session_providers)

    def get_providers(self):
        return self.providers

    def get_inputs(self):
        return [types.SimpleNamespace(name="target", shape=["N", 3, 128, 128]),
                types.SimpleNamespace(name="source", shape=["N", 512])]


class _SessionOptions:
    def __init__(self):
        self.added = None

    def add_provider_for_devices(self, devices, options):
        self.added = (devices, options)


class _Ort:
    __version__ = "1.32.0"
    devices: list = []
    session_providers = [ep.EP_NAME, "CPUExecutionProvider"]
    registered: list = []
    fail_with = None
    SessionOptions = _SessionOptions
    GraphOptimizationLevel = types.SimpleNamespace(ORT_ENABLE_ALL=99)
    InferenceSession = _Session

    @classmethod
    def register_execution_provider_library(cls, name, path):
        if cls.fail_with:
            raise RuntimeError(cls.fail_with)
        cls.registered.append((name, path))

    @classmethod
    def get_ep_devices(cls):
        return [_Device("CPUExecutionProvider")] + cls.devices


_PLUGIN = types.SimpleNamespace(get_ep_name=lambda: ep.EP_NAME,
                                get_library_path=lambda: "/x/libonnxruntime_providers_nv.so")


@pytest.fixture
def fake_ort(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", _Ort)
    monkeypatch.setitem(sys.modules, ep.PLUGIN_MODULE, _PLUGIN)
    monkeypatch.setattr(_Ort, "devices", [_Device()])
    monkeypatch.setattr(_Ort, "registered", [])
    monkeypatch.setattr(_Ort, "fail_with", None)
    monkeypatch.setattr(rtx, "gpu_facts", lambda index=0: ("NVIDIA GeForce RTX 4090", "8.9"))
    return _Ort


def test_available_on_an_rtx_gpu(fake_ort):
    assert Engine.available() == (True, "")
    assert fake_ort.registered == [(ep.EP_NAME, "/x/libonnxruntime_providers_nv.so")]
    Engine.available()
    assert len(fake_ort.registered) == 1  # registered once per process


@pytest.mark.parametrize("setup,match", [
    (lambda o, m: m.setattr(o, "devices", []), "registered but offers no device"),
    (lambda o, m: m.setattr(o, "__version__", "1.23.2"), r"onnxruntime 1.23.2 \| too old for "
                                                         r"plugin execution providers; expected "
                                                         r">= 1.24"),
    (lambda o, m: m.setattr(o, "fail_with", "boom: libcuda.so.1: cannot open"),
     "cannot be registered: libcuda.so.1 not found"),
    (lambda o, m: m.setattr(rtx, "gpu_facts", lambda index=0: ("NVIDIA H200", "9.0")),
     r"GPU 0 \(NVIDIA H200\) \| compute capability 9.0: TensorRT for RTX does not run on it"),
])
def test_unavailable_reasons(fake_ort, monkeypatch, setup, match):
    setup(fake_ort, monkeypatch)
    ok, why = Engine.available()
    assert not ok
    assert re.search(match, why), why


def test_session_asks_for_the_plugin_devices(fake_ort, tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    cfg = EngineConfig(device="cuda", batch=BatchProfile(1, 4, 8),
                       options={"cuda_graph": True, "cache_dir": str(tmp_path / "c")})
    eng = Engine(Artifact(INSWAPPER_128, onnx), cfg)
    eng._load()
    devices, opts = eng.session.so.added
    assert devices == [fake_ort.devices[0]]
    assert opts["nv_profile_min_shapes"] == "target:1x3x128x128,source:1x512"
    assert opts["nv_profile_max_shapes"] == "target:8x3x128x128,source:8x512"
    assert opts["enable_cuda_graph"] == "1"
    assert opts["nv_runtime_cache_path"] == str(tmp_path / "c" / "ort-trt-rtx")


def test_no_silent_fallback(fake_ort, monkeypatch, tmp_path):
    monkeypatch.setattr(fake_ort, "session_providers", ["CPUExecutionProvider"])
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(EngineError, match=r"engine 'ort-trt-rtx' \| ONNX Runtime did not enable "
                                          r"NvTensorRTRTXExecutionProvider"):
        Engine(Artifact(INSWAPPER_128, onnx), EngineConfig(device="cuda"))._load()


def test_detector_profile_needs_dims():
    eng = Engine(Artifact(RETINAFACE_MNET025, None),
                 EngineConfig(device="cuda", options={"dims": {"H": 640, "W": 480}}))
    assert eng._shapes(2) == "input:2x3x640x480"
    with pytest.raises(EngineError, match=r"input 'input' \| axis 2 \('H'\) is dynamic"):
        Engine(Artifact(RETINAFACE_MNET025, None), EngineConfig(device="cuda"))._shapes(1)
