"""ONNX export and synthetic models: parity with torch on ORT CPU, contract metadata, the
inswapper emap initializer, opset and batch handling. Everything at width 0.125."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fusionrt.errors import ModelError
from fusionrt.models.spec import spec_from_metadata
from fusionrt.models.zoo import get_spec

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fusionrt.builders.export import export_onnx, parity, sample_inputs  # noqa: E402
from fusionrt.builders.synth import synthesize  # noqa: E402
from fusionrt.models.arch.reference import load_reference  # noqa: E402
from fusionrt.models.arch import build_arch  # noqa: E402

W = 0.125
MODELS = ("arcface_w600k_r50", "simswap_256", "inswapper_128")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    """One synthetic file per model for the whole module (each ~1-2 s to build and check)."""
    out = tmp_path_factory.mktemp("synthetic")
    for name in MODELS:
        synthesize(name, out / f"{name}.onnx", seed=3, width=W)
    return out


def _meta(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _ort_run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("name", MODELS)
def test_export_parity_report(name, tmp_path):
    spec = get_spec(name)
    torch.manual_seed(0)
    report = export_onnx(build_arch(spec.arch, W), spec, tmp_path / "m.onnx")
    assert report.path.is_file() and report.opset == 17 and report.simplified
    assert report.cosine >= 0.9999
    assert report.max_abs_diff < 1e-3


@pytest.mark.parametrize("name", MODELS)
def test_synthetic_metadata_round_trip(name, synth_dir):
    meta = _meta(synth_dir / f"{name}.onnx")
    assert spec_from_metadata(meta) == get_spec(name)
    assert meta["fusionrt.synthetic"] == "1"
    assert meta["fusionrt.seed"] == "3" and float(meta["fusionrt.width"]) == W
    assert meta["fusionrt.opset"] == "17" and meta["fusionrt.exporter"] == "torchscript"
    assert meta["fusionrt.torch_version"] == torch.__version__ and meta["fusionrt.date"]


@pytest.mark.parametrize("name", MODELS)
def test_synthetic_graph_io_follows_spec(name, synth_dir):
    spec = get_spec(name)
    graph = onnx.load(str(synth_dir / f"{name}.onnx")).graph
    assert [i.name for i in graph.input] == [t.name for t in spec.inputs]
    assert [o.name for o in graph.output] == [t.name for t in spec.outputs]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N"


@pytest.mark.parametrize("name", MODELS)
def test_load_reference_matches_onnx(name, synth_dir):
    spec = get_spec(name)
    path = synth_dir / f"{name}.onnx"
    module = load_reference(name, path.with_suffix(".pt"), width=1.0)  # width read from file
    feeds = sample_inputs(spec, batch=3, seed=11)
    with torch.no_grad():
        ref = module(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs)).numpy()
    got = _ort_run(path, feeds)
    assert got.shape == spec.outputs[0].with_batch(3)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["simswap_256", "inswapper_128"])
def test_synthetic_swap_output_in_unit_range_and_not_flat(name, synth_dir):
    spec = get_spec(name)
    out = _ort_run(synth_dir / f"{name}.onnx", sample_inputs(spec, batch=2, seed=5))
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert 0.05 < out.std() < 0.45  # spread over the range, neither constant nor saturated


def test_arcface_batchnorm_stats_are_calibrated(synth_dir):
    state = torch.load(synth_dir / "arcface_w600k_r50.pt", weights_only=True)["state_dict"]
    assert not torch.allclose(state["layer2.0.bn1.running_var"], torch.ones(1))
    assert not torch.allclose(state["features.running_mean"], torch.zeros(1))


def test_emap_is_last_initializer(synth_dir):
    path = synth_dir / "inswapper_128.onnx"
    emap = onnx.numpy_helper.to_array(onnx.load(str(path)).graph.initializer[-1])
    assert emap.shape == (512, 512) and emap.dtype == np.float32
    saved = torch.load(path.with_suffix(".pt"), weights_only=True)["state_dict"]["emap"]
    np.testing.assert_array_equal(emap, saved.numpy())
    assert not np.allclose(emap, np.eye(512))  # randomised, not the identity placeholder


def test_extra_initializer_name_clash_refused(tmp_path):
    spec = get_spec("inswapper_128")
    module = build_arch("inswapper", W)
    first = _export_small(tmp_path, "inswapper_128", check_parity=False)
    name = onnx.load(str(first)).graph.initializer[0].name
    with pytest.raises(ModelError, match=f"extra initializer '{name}' | name already used"):
        export_onnx(module, spec, tmp_path / "b.onnx", extra_initializers={name: np.zeros(2)},
                    check_parity=False)


def _export_small(tmp_path, name, **kw):
    spec = get_spec(name)
    torch.manual_seed(1)
    return export_onnx(build_arch(spec.arch, W), spec, tmp_path / f"{name}.onnx", **kw).path


def test_opset_12_refused(tmp_path):
    with pytest.raises(ModelError, match="opset 12 is too old; expected >= 13"):
        _export_small(tmp_path, "arcface_w600k_r50", opset=12)


def test_opset_13_accepted(tmp_path):
    path = _export_small(tmp_path, "arcface_w600k_r50", opset=13)
    assert onnx.load(str(path)).opset_import[0].version == 13


def test_static_batch_refuses_batch_3(tmp_path):
    path = _export_small(tmp_path, "arcface_w600k_r50", dynamic_batch=False)
    spec = get_spec("arcface_w600k_r50")
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 1
    assert _meta(path)["fusionrt.batch"] == "static"
    assert _ort_run(path, sample_inputs(spec, batch=1)).shape == (1, 512)
    with pytest.raises(Exception, match="(?i)invalid dimensions|index: 0 Got: 3 Expected: 1"):
        _ort_run(path, sample_inputs(spec, batch=3))


def test_parity_failure_raises(tmp_path):
    path = _export_small(tmp_path, "simswap_256")
    other = build_arch("simswap256", W)  # different random weights than the exported ones
    with pytest.raises(ModelError, match="output 'output' | ORT differs from torch"):
        parity(other, get_spec("simswap_256"), path)


def test_without_onnxslim_exports_unsimplified(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxslim", None)
    spec = get_spec("arcface_w600k_r50")
    with caplog.at_level("INFO", logger="fusionrt.builders.export"):
        report = export_onnx(build_arch(spec.arch, W), spec, tmp_path / "m.onnx")
    assert not report.simplified and report.cosine >= 0.9999
    assert "onnxslim not installed" in caplog.text


def test_metadata_prefix_optional(tmp_path):
    path = _export_small(tmp_path, "arcface_w600k_r50", check_parity=False,
                         metadata={"fusionrt.origin": "test", "note": 7})
    meta = _meta(path)
    assert meta["fusionrt.origin"] == "test" and meta["fusionrt.note"] == "7"


def test_symbolic_spatial_dims_refused(tmp_path):
    with pytest.raises(ModelError, match=r"input 'input' \| symbolic dims \(N, 3, H, W\)"):
        export_onnx(build_arch("iresnet50", W), get_spec("retinaface_mnet025"), tmp_path / "r.onnx")


def test_synthesize_retinaface_refused(tmp_path):
    with pytest.raises(ModelError, match="retinaface_mnet025' | ships real built-in weights"):
        synthesize("retinaface_mnet025", tmp_path / "r.onnx")


def test_synthesize_unknown_refused(tmp_path):
    with pytest.raises(ModelError, match="model 'nope' | unknown"):
        synthesize("nope", tmp_path / "n.onnx")


def test_synthesize_is_deterministic(tmp_path, synth_dir):
    again = synthesize("simswap_256", tmp_path / "s.onnx", seed=3, width=W)
    a = torch.load(again.with_suffix(".pt"), weights_only=True)["state_dict"]
    b = torch.load(synth_dir / "simswap_256.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_load_reference_missing_file(tmp_path):
    with pytest.raises(ModelError, match="torch weights not found"):
        load_reference("simswap_256", tmp_path / "absent.pt")


def test_load_reference_default_path_in_store(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONRT_HOME", str(tmp_path))
    with pytest.raises(ModelError, match=r"synthetic/simswap_256\.pt"):
        load_reference("simswap_256")


def test_load_reference_wrong_arch_refused(synth_dir):
    with pytest.raises(ModelError, match="holds architecture 'iresnet50'; expected 'simswap256'"):
        load_reference("simswap_256", synth_dir / "arcface_w600k_r50.pt")


def test_load_reference_plain_state_dict_wrong_width(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(build_arch("iresnet50", 0.25).state_dict(), path)
    assert load_reference("arcface_w600k_r50", path, width=0.25) is not None
    with pytest.raises(ModelError, match="does not fit iresnet50 at width 0.125"):
        load_reference("arcface_w600k_r50", path, width=W)


def test_rename_io_moves_a_clashing_internal_name_aside():
    """ArcFace's output is called "683": a traced graph may already use that name inside."""
    from onnx import TensorProto, helper

    from fusionrt.builders.export import _rename_io
    node = helper.make_node
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node("Relu", ["fusionrt_in_0"], ["683"]), node("Relu", ["683"], ["fusionrt_out_0"])],
        "g", [vi("fusionrt_in_0", TensorProto.FLOAT, ["N", 512])],
        [vi("fusionrt_out_0", TensorProto.FLOAT, ["N", 512])])
    model = helper.make_model(graph)
    _rename_io(model, get_spec("arcface_w600k_r50"))
    onnx.checker.check_model(model)
    assert [(list(n.input), list(n.output)) for n in model.graph.node] == [
        (["input.1"], ["683__internal"]), (["683__internal"], ["683"])]
