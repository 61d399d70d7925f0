"""Triton repository generation: every config parsed with Triton's own protobuf schema
(tritonclient's model_config_pb2), dims checked against the ONNX files, the BLS pipeline model
run against the in-process pipeline."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                          reason="needs tritonclient: pip install 'tritonclient[http,grpc]'")
pytest.importorskip("torch", reason="synthetic embed/swap models are built with torch")

from fusionrt.errors import InputError, ModelError
from fusionrt.triton import configs
from fusionrt.triton.repository import (
    PIPELINE,
    STAGES,
    RepoOptions,
    onnx_io,
    stage_model,
    write_repository,
)

# INT8 is covered per stage below (test_int8_stage_config): a full INT8 repository calibrates
# and gates three models (~2 min here) and the random-weight generator fails the INT8 gate.
COMBOS = [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("tensorrt", "fp16")]
DET = 320  # detector input side in these tests (640 works the same, only slower)


def parse(path: Path):
    return configs.parse_pbtxt(path.read_text())


@pytest.fixture(scope="module")
def repos(tmp_path_factory, synthetic_store):
    """(backend, precision) -> repository, written once per module."""
    import os
    old = os.environ.get("FUSIONRT_HOME")
    os.environ["FUSIONRT_HOME"] = str(synthetic_store)
    out = {}
    try:
        for backend, precision in COMBOS:
            root = tmp_path_factory.mktemp("repos") / f"{backend}-{precision}"
            write_repository(root, RepoOptions(precision, backend, allow_synthetic=True,
                                               det_size=DET))
            out[backend, precision] = root
    finally:
        if old is None:
            os.environ.pop("FUSIONRT_HOME", None)
        else:
            os.environ["FUSIONRT_HOME"] = old
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend,precision", COMBOS)
def test_configs_are_valid_and_dims_match_onnx(repos, backend, precision):
    import onnxruntime as ort
    root = repos[backend, precision]
    manifest = json.loads((root / "fusionrt.json").read_text())
    assert manifest["precision"] == precision and manifest["backend"] == backend
    for name in STAGES.values():
        cfg = parse(root / name / "config.pbtxt")
        assert cfg.name == name and cfg.backend == backend
        assert cfg.platform == {"onnxruntime": "onnxruntime_onnx",
                                "tensorrt": "tensorrt_plan"}[backend]
        assert cfg.max_batch_size == 8
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
        assert cfg.instance_group[0].count == 1
        assert cfg.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU
        assert cfg.parameters["fusionrt.precision"].string_value == precision
        graph = onnx_io(root / name / "1" / "model.onnx")
        for t in list(cfg.input) + list(cfg.output):
            assert t.data_type == pb2.TYPE_FP32
            onnx_dims = graph[t.name][1:]  # config dims exclude the batch axis
            assert len(onnx_dims) == len(t.dims)
            for have, got in zip(onnx_dims, t.dims):
                assert got > 0 and (isinstance(have, str) or have == got), (t.name, have, got)
        # the config dims are what the ONNX file really produces at batch 2
        sess = ort.InferenceSession(str(root / name / "1" / "model.onnx"))
        feeds = {t.name: np.zeros((2, *t.dims), np.float32) for t in cfg.input}
        outs = sess.run([t.name for t in cfg.output], feeds)
        assert [o.shape for o in outs] == [(2, *t.dims) for t in cfg.output]
        if backend == "onnxruntime":
            acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
            p = dict(acc.parameters)
            assert acc.name == "tensorrt"
            assert p["precision_mode"] == precision.upper()
            assert p["trt_engine_cache_enable"] == "1" and p["trt_timing_cache_enable"] == "1"
            first = cfg.input[0]
            assert p["trt_profile_max_shapes"].startswith(
                f"{first.name}:8x" + "x".join(str(d) for d in first.dims))
        else:
            assert dict(cfg.cc_model_filenames) == {
                "8.0": "model.sm80.plan", "8.6": "model.sm86.plan", "8.9": "model.sm89.plan",
                "9.0": "model.sm90.plan"}
    pipe = parse(root / PIPELINE / "config.pbtxt")
    assert pipe.backend == "python" and pipe.max_batch_size == 0
    assert [t.name for t in pipe.input] == ["TARGET", "SOURCE"]
    assert list(pipe.input[0].dims) == [-1, -1, 3] and pipe.input[0].data_type == pb2.TYPE_UINT8
    assert (root / PIPELINE / "1" / "model.py").is_file()


@pytest.mark.slow
def test_tensorrt_repo_has_commands_not_fake_plans(repos):
    root = repos["tensorrt", "fp16"]
    assert not list(root.rglob("*.plan"))
    script = (root / "build_plans.sh").read_text()
    for name in STAGES.values():
        for cc in ("80", "86", "89", "90"):
            assert f"--saveEngine=model.sm{cc}.plan" in script
    assert "--stronglyTyped" in script and "--minShapes=input:1x3x320x320" in script
    assert "NOT built" in (root / "README.md").read_text()


def test_int8_stage_config(tmp_path, synthetic_home):
    """INT8: the Q/DQ graph's config asks TensorRT for INT8 and keeps the FP32 graph's dims."""
    from fusionrt.builders.export import sample_inputs
    from fusionrt.builders.int8 import quantize_int8
    from fusionrt.models.store import ModelStore
    art = ModelStore().resolve("arcface_w600k_r50", allow_synthetic=True)
    q = tmp_path / "embed.int8.onnx"
    quantize_int8(art.onnx_path, q, [sample_inputs(art.spec, 1, i) for i in range(4)],
                  spec=art.spec)
    m = stage_model("embed", art.spec, q, RepoOptions("int8"))
    cfg = configs.parse_pbtxt(configs.to_pbtxt(configs.model_config_dict(m)))
    acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert acc.parameters["precision_mode"] == "INT8"
    assert [list(t.dims) for t in cfg.input] == [[3, 112, 112]]
    assert [list(t.dims) for t in cfg.output] == [[512]]


def test_fallback_printer_matches_protobuf(monkeypatch):
    """Without tritonclient the hand printer must write the same config."""
    m = configs.StageModel("x", "onnxruntime", (configs.IO("a", "float32", (3, 4)),),
                           (configs.IO("b", "float16", (2,)),), trt=configs.TrtOptions("fp16"),
                           parameters={"k": "v"})
    d = configs.model_config_dict(m)
    real = configs.to_pbtxt(d)
    monkeypatch.setattr(configs, "_model_config_pb2", lambda: None)
    fallback = configs.to_pbtxt(d)
    monkeypatch.undo()
    assert configs.parse_pbtxt(fallback) == configs.parse_pbtxt(real)
    for text in (real, fallback):
        pinned = configs.with_version_policy(text, [3])
        assert list(configs.parse_pbtxt(pinned).version_policy.specific.versions) == [3]
        assert configs.pinned_versions(pinned) == [3]
        back = configs.with_version_policy(pinned, None)
        assert configs.parse_pbtxt(back).version_policy.latest.num_versions == 1


def test_bad_enum_is_refused():
    d = configs.model_config_dict(configs.StageModel(
        "x", "onnxruntime", (configs.IO("a", "float32", (1,)),), (), kind="KIND_TPU"))
    with pytest.raises(Exception, match="not a valid Triton ModelConfig"):
        configs.to_pbtxt(d)


def test_refuses_non_empty_folder(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(InputError, match="exists and is not empty"):
        write_repository(tmp_path, RepoOptions())


def test_unknown_backend():
    with pytest.raises(InputError, match="backend 'tflite'"):
        RepoOptions(backend="tflite")


def test_swapper_must_be_a_swap_model(tmp_path):
    with pytest.raises(InputError, match="expected a swap model"):
        write_repository(tmp_path / "r", RepoOptions(swapper="arcface_w600k_r50"))


def test_missing_model_leaves_nothing(tmp_path):
    """No synthetic/real arcface in this (empty) store: refused, no repo, no staging left."""
    with pytest.raises(ModelError, match="not installed"):
        write_repository(tmp_path / "r", RepoOptions())
    assert list(tmp_path.iterdir()) == []


# -- the BLS pipeline model, with a stand-in for Triton's Python backend module ----------------

def fake_pb_utils(root: Path):
    """triton_python_backend_utils where a BLS request runs the repository's ONNX on ORT."""
    import onnxruntime as ort
    sessions = {}
    mod = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, np.asarray(array)

        def as_numpy(self):
            return self.array

    class InferenceRequest:
        def __init__(self, model_name, requested_output_names, inputs):
            self.model, self.names, self.inputs = model_name, requested_output_names, inputs

        def exec(self):
            if self.model not in sessions:
                sessions[self.model] = ort.InferenceSession(str(root / self.model / "1" /
                                                                "model.onnx"))
            outs = sessions[self.model].run(self.names, {t.name: t.array for t in self.inputs})
            return InferenceResponse([Tensor(n, o) for n, o in zip(self.names, outs)])

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self._error = output_tensors, error

        def has_error(self):
            return self._error is not None

        def error(self):
            return self._error

    mod.Tensor, mod.InferenceRequest, mod.InferenceResponse = Tensor, InferenceRequest, \
        InferenceResponse
    mod.TritonError = lambda msg: types.SimpleNamespace(message=lambda: msg)
    mod.get_input_tensor_by_name = lambda req, n: next(t for t in req.inputs if t.name == n)
    mod.get_output_tensor_by_name = lambda resp, n: next(
        t for t in resp.output_tensors if t.name == n)
    return mod


def _bls_model(root, monkeypatch):
    """The repository's pipeline model.py loaded as Triton would, with the stand-in pb_utils."""
    from google.protobuf import json_format
    pb = fake_pb_utils(root)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    spec = importlib.util.spec_from_file_location("bls_model", root / PIPELINE / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    cfg = json_format.MessageToDict(parse(root / PIPELINE / "config.pbtxt"),
                                    preserving_proto_field_name=True)
    model.initialize({"model_config": json.dumps(cfg),
                      "model_repository": str(root / PIPELINE)})
    return pb, model


@pytest.mark.slow
def test_bls_pipeline_model_equals_in_process(repos, synthetic_home, monkeypatch, astronaut,
                                              grace):
    from fusionrt.triton.repo_pipeline import build_pipeline
    root = repos["onnxruntime", "fp32"]
    pb, model = _bls_model(root, monkeypatch)
    req = pb.InferenceRequest("", [], [pb.Tensor("TARGET", grace), pb.Tensor("SOURCE", astronaut)])
    resp = model.execute([req])[0]
    assert not resp.has_error()
    got = pb.get_output_tensor_by_name(resp, "IMAGE").as_numpy()
    ref = build_pipeline(root, warm=False)
    ref.pipe.set_source(astronaut.copy())
    want, n = ref.pipe.process_frame(grace.copy())
    assert n == 1 and pb.get_output_tensor_by_name(resp, "FACES").as_numpy().tolist() == [1]
    assert np.array_equal(got, want)
    assert (got != grace).mean() > 0.01  # a face was really pasted
    bad = model.execute([pb.InferenceRequest("", [], [
        pb.Tensor("TARGET", grace), pb.Tensor("SOURCE", np.zeros((64, 64, 3), np.uint8))])])[0]
    assert bad.has_error() and "no face" in bad.error().message()


@pytest.mark.slow
def test_bls_pipeline_model_drives_the_one_swapper(repos, synthetic_home, monkeypatch, astronaut,
                                                   grace):
    """Triton's pipeline model runs no stage itself: every stage of a request is a call into the
    ``FaceSwapper``'s kernel set (recorded here), whose engines are BLS requests."""
    pb, model = _bls_model(repos["onnxruntime", "fp32"], monkeypatch)
    kernels, calls = model.swapper.kernels, []
    for name in ("detect", "embed", "swap", "paste"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    assert {e.name for e in kernels.engines} == {"triton-bls"}
    req = pb.InferenceRequest("", [], [pb.Tensor("TARGET", grace), pb.Tensor("SOURCE", astronaut)])
    resp = model.execute([req, req])
    assert not resp[0].has_error() and not resp[1].has_error()
    assert calls[:2] == ["detect", "embed"]  # the source identity, once for both requests
    assert calls[2:] == ["detect", "swap", "paste"]  # both requests in one batch


def test_swapper_that_needs_a_converter_is_refused(tmp_path):
    """SimSwap's identity goes through crossface_simswap (the plan's 'convert' stage), which a
    Triton repository has no model for yet: refused in one line, nothing written."""
    with pytest.raises(InputError, match="needs the identity converter 'crossface_simswap'"):
        write_repository(tmp_path / "repo", RepoOptions(swapper="simswap_256"))
    assert not (tmp_path / "repo").exists()
