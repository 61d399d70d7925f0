"""``fusionrt doctor``: runs on a CPU-only machine, never crashes, stable JSON keys."""

from __future__ import annotations

import json
import os
import sys

import pytest

from fusionrt import doctor
from fusionrt.runtime import probes
from fusionrt.cli import main
from fusionrt.engines import registry

TOP_KEYS = {"schema", "fusionrt", "os", "python", "driver", "gpus", "cuda", "cudnn", "tensorrt",
            "tensorrt_rtx", "onnxruntime", "torch", "engines"}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONRT_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def report_json():
    """One real ``fusionrt doctor --json`` run (a few seconds: torch import, provider probes)."""
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["doctor", "--json"])
    assert rc == 0
    return json.loads(buf.getvalue())


def test_json_has_stable_keys(report_json):
    r = report_json
    assert set(r) == TOP_KEYS and r["schema"] == doctor.SCHEMA_VERSION
    assert set(r["driver"]) == {"version", "cuda_driver", "source", "error"}
    assert set(r["cuda"]) == {"torch", "cupy"}
    assert set(r["tensorrt"]) == {"version", "major", "ort_ep_needs", "error"}
    assert set(r["tensorrt_rtx"]) == {"version", "build_archs", "gpus", "error"}
    assert set(r["onnxruntime"]) == {"version", "providers", "provider_status", "error"}
    assert set(r["torch"]) == {"version", "cuda", "cuda_available", "error"}
    assert isinstance(r["gpus"], list)
    assert r["python"]["version"] == "%d.%d.%d" % sys.version_info[:3]


def test_json_reports_this_machine(report_json):
    import onnxruntime
    r = report_json
    assert r["onnxruntime"]["version"] == onnxruntime.__version__
    assert "CPUExecutionProvider" in r["onnxruntime"]["providers"]
    if r["driver"]["version"] is None:
        assert r["driver"]["error"]  # says why: no driver, NVML error, or nvidia-smi failure


def test_engines_listed_with_reasons(report_json):
    engines = report_json["engines"]
    assert list(engines) == registry.engine_names()
    for name, e in engines.items():
        assert isinstance(e["usable"], bool) and isinstance(e["reason"], str)
        assert e["usable"] or e["reason"], f"{name} unusable without a reason"
    assert engines["ort-cpu"] == {"usable": True, "reason": ""}


def test_trt_reason_names_the_install(report_json):
    if report_json["tensorrt"]["version"] is not None:
        pytest.skip("tensorrt is installed here")
    assert "pip install tensorrt-cu1" in report_json["tensorrt"]["error"]
    trt = report_json["engines"]["trt"]
    assert not trt["usable"] and "pip install tensorrt-cu12" in trt["reason"]


def test_text_report(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for word in ("OS", "Python", "NVIDIA driver", "ONNX Runtime", "Engines", "ort-cpu", "trt"):
        assert word in out


def test_import_error_is_a_reason(monkeypatch):
    monkeypatch.setitem(registry._ENGINES, "broken", "fusionrt.engines.no_such_module:Nope")
    e = doctor.probe_engines()["broken"]
    assert not e["usable"]
    assert e["reason"].startswith("engine 'broken' | cannot be imported: No module named")


def test_raising_available_is_a_reason(monkeypatch):
    class Bad:
        @classmethod
        def available(cls):
            raise RuntimeError("driver exploded")

    monkeypatch.setitem(registry._ENGINES, "bad", "x:y")
    real = registry.get_engine
    monkeypatch.setattr(registry, "get_engine", lambda n: Bad if n == "bad" else real(n))
    assert doctor.probe_engines()["bad"] == {"usable": False,
                                             "reason": "RuntimeError: driver exploded"}


def test_no_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml → ImportError
    monkeypatch.setattr(probes.shutil, "which", lambda name: None)
    info, gpus = probes.probe_driver()
    assert gpus == [] and info["version"] is None
    assert info["error"] == ("no NVIDIA driver (nvidia-ml-py not installed; nvidia-smi not on "
                             "PATH)")


SMI_OUT = ("0, NVIDIA H100 80GB HBM3, 570.124.06, 81559, 9.0\n"
           "1, NVIDIA L4, 570.124.06, 23034, 8.9\n")


def test_parse_nvidia_smi():
    driver, gpus = probes.parse_nvidia_smi(SMI_OUT)
    assert driver == "570.124.06"
    assert gpus == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
         "compute_capability": "9.0"},
        {"index": 1, "name": "NVIDIA L4", "memory_total_mib": 23034, "compute_capability": "8.9"}]


def test_driver_from_nvidia_smi_on_path(tmp_path, monkeypatch):
    """A real executable named nvidia-smi on PATH (prints what the real one prints)."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\ncat <<'EOF'\n" + SMI_OUT + "EOF\n")
    smi.chmod(0o755)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
    info, gpus = probes.probe_driver()
    assert info == {"version": "570.124.06", "cuda_driver": None, "source": "nvidia-smi",
                    "error": None}
    assert [g["name"] for g in gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA L4"]


def test_failing_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\necho "NVIDIA-SMI has failed because it couldn\'t communicate '
                   'with the NVIDIA driver."\nexit 9\n')
    smi.chmod(0o755)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    info, gpus = probes.probe_driver()
    assert gpus == [] and info["version"] is None
    assert info["error"].startswith("nvidia-smi failed: NVIDIA-SMI has failed")


class _FakeSession:
    def __init__(self, model, so, providers):
        self._providers = ["CPUExecutionProvider"]  # ORT's silent fallback

    def get_providers(self):
        return self._providers


class _FakeOrt:
    SessionOptions = type("SessionOptions", (), {})
    InferenceSession = _FakeSession


def test_trt_ep_listed_without_libnvinfer(monkeypatch):
    monkeypatch.setattr(probes, "_library_loadable", lambda name: False)
    s = probes.probe_provider(_FakeOrt, "TensorrtExecutionProvider", "13.0")
    assert s == {"usable": False, "reason": "TensorRT EP listed but libnvinfer.so.10 not found: "
                                            "pip install tensorrt-cu13"}


def test_cuda_ep_fallback_reason():
    s = probes.probe_provider(_FakeOrt, "CUDAExecutionProvider", "12.8")
    assert not s["usable"] and "onnxruntime-gpu[cuda,cudnn]" in s["reason"]


def test_provider_probe_really_runs_a_session():
    import onnxruntime as ort
    assert probes.probe_provider(ort, "CPUExecutionProvider", None) == {"usable": True,
                                                                         "reason": ""}


def test_probe_model_is_the_documented_graph():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=7,
                          producer_name="fusionrt")
    assert m.SerializeToString() == probes.PROBE_MODEL
    onnx.checker.check_model(onnx.load_from_string(probes.PROBE_MODEL))


@pytest.mark.parametrize("cuda,hint", [("13.0", "pip install tensorrt-cu13"),
                                       ("12.8", "pip install tensorrt-cu12"),
                                       (None, "pip install tensorrt-cu12 (or tensorrt-cu13, "
                                              "matching your CUDA)")])
def test_tensorrt_pip_hint(cuda, hint):
    assert probes.tensorrt_pip_hint(cuda) == hint
