"""FP16 conversion: keep-list in FP32, float32 graph I/O, real FP16 arithmetic checked with the
ONNX reference evaluator (ORT CPU would compute FP16 nodes in FP32 and hide the difference)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from fusionrt.builders.fp16 import FLOAT, FLOAT16, convert_fp16, keep_list_violations, value_types  # noqa: E402
from fusionrt.builders.keeplist import NORM_STATISTICS, OUTPUT_HEAD, fp32_nodes, name_nodes  # noqa: E402
from fusionrt.errors import ModelError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """Conv -> x300 (large pre-norm activations, as in trained generators) -> InstanceNorm ->
    hand-written IN (ReduceMean/Sub/Mul/Sqrt/Div) -> AdaIN style -> conv -> (tanh+1)/2, plus
    a Softmax head."""
    torch = pytest.importorskip("torch")
    from torch import nn
    import torch.nn.functional as F

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.style = nn.Linear(16, 16)
            self.c2 = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x, z):
            y = F.instance_norm(self.c1(x) * 300.0, eps=1e-6)
            m = y - y.mean((2, 3), keepdim=True)
            y = m * torch.rsqrt((m * m).mean((2, 3), keepdim=True) + 1e-8) * 300.0
            y = F.instance_norm(y, eps=1e-6)
            g, b = self.style(z)[:, :, None, None].chunk(2, 1)
            y = y * g + b
            return (torch.tanh(self.c2(y)) + 1) / 2, torch.softmax(y.mean((2, 3)) * 10, 1)

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    kw = {"dynamo": False} if "dynamo" in torch.onnx.export.__code__.co_varnames else {}
    torch.onnx.export(Tiny().eval(), (torch.rand(1, 3, 16, 16), torch.randn(1, 16)), str(path),
                      input_names=["x", "z"], output_names=["img", "prob"], opset_version=17,
                      **kw)
    return path


def _feeds(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.random((1, 3, 16, 16), dtype=np.float32),
            "z": rng.standard_normal((1, 16)).astype(np.float32)}


def _run_ref(model, feeds):
    from onnx.reference import ReferenceEvaluator
    with np.errstate(all="ignore"):
        return ReferenceEvaluator(model).run(None, feeds)


def test_keep_list_finds_norms_statistics_softmax_and_head(tiny_onnx):
    m = onnx.load(str(tiny_onnx))
    name_nodes(m)
    keep = fp32_nodes(m)
    ops = {n.name: n.op_type for n in m.graph.node}
    kept_ops = {ops[k] for k in keep}
    assert {"InstanceNormalization", "ReduceMean", "Softmax", "Sqrt", "Tanh"} <= kept_ops
    reasons = {e.reason for e in keep.values()}
    assert NORM_STATISTICS in reasons and OUTPUT_HEAD in reasons
    assert not any(ops[k] == "Conv" for k in keep)  # the heavy ops are converted


def test_no_fp16_instance_norm_and_io_stays_float32(tiny_onnx, tmp_path):
    out = tmp_path / "tiny.fp16.onnx"
    model, rep = convert_fp16(tiny_onnx, out)
    assert out.is_file() and rep.casts > 0 and rep.fp16_nodes > 0
    types = value_types(model)
    for n in model.graph.node:
        if n.op_type in ("InstanceNormalization", "ReduceMean", "Softmax"):
            assert all(types[t] == FLOAT for t in n.input if t and t in types), n.name
        if n.op_type == "Conv":
            assert types[n.output[0]] == FLOAT16, n.name  # the work really is FP16
    assert keep_list_violations(model) == []
    assert all(v.type.tensor_type.elem_type == FLOAT
               for v in (*model.graph.input, *model.graph.output))
    onnx.checker.check_model(model)


def test_keep_list_is_what_keeps_fp16_correct(tiny_onnx):
    ref = _run_ref(onnx.load(str(tiny_onnx)), _feeds())[0]
    good, _ = convert_fp16(tiny_onnx)
    broken, _ = convert_fp16(tiny_onnx, keep={})
    assert keep_list_violations(broken)  # InstanceNormalization now FP16
    err_good = np.abs(_run_ref(good, _feeds())[0] - ref).max()
    err_bad = np.nan_to_num(np.abs(_run_ref(broken, _feeds())[0] - ref), nan=1.0).max()
    assert err_good < 5e-3
    assert err_bad > 0.05  # x*x overflows FP16: the garbled-face failure


def test_synthetic_models_convert(synthetic_home, tmp_path):
    from fusionrt.models.store import ModelStore
    import onnxruntime as ort
    for name in ("inswapper_128", "simswap_256", "arcface_w600k_r50"):
        src = ModelStore().synthetic_path(name)
        model, rep = convert_fp16(src, tmp_path / f"{name}.fp16.onnx")
        assert keep_list_violations(model) == []
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["fusionrt.precision"] == "fp16" and meta["fusionrt.name"] == name
        ort.InferenceSession(str(tmp_path / f"{name}.fp16.onnx"),
                             providers=["CPUExecutionProvider"])
    # SimSwap's hand-written instance norm: every statistics op stays FP32
    m = onnx.load(str(tmp_path / "simswap_256.fp16.onnx"))
    types = value_types(m)
    for n in m.graph.node:
        if n.op_type in ("ReduceMean", "Sqrt"):
            assert types[n.output[0]] == FLOAT, n.name


def test_unreadable_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="cannot be read by onnx"):
        convert_fp16(bad)
    with pytest.raises(ModelError, match="cannot be read by onnx"):
        convert_fp16(tmp_path / "missing.onnx")


def test_fp16_module_keeps_norms_fp32_and_matches(synthetic_home):
    torch = pytest.importorskip("torch")
    from fusionrt.builders.export import sample_inputs
    from fusionrt.builders.fp16 import fp16_module
    from fusionrt.models.arch.reference import load_reference
    from fusionrt.models.zoo import get_spec
    ref = load_reference("simswap_256")
    half = fp16_module(load_reference("simswap_256"))
    norms = [m for m in half.modules() if type(m).__name__ == "InstanceNorm"]
    convs = [m for m in half.modules() if isinstance(m, torch.nn.Conv2d)]
    assert norms and all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    assert convs[0].weight.dtype == torch.float16
    feeds = sample_inputs(get_spec("simswap_256"), 1, seed=3)
    args = [torch.from_numpy(feeds[k]) for k in ("target", "source")]
    with torch.inference_mode():
        a, b = ref(*args), half(*args)
    assert b.dtype == torch.float32 and b.shape == a.shape
    assert float((a - b).abs().max()) < 2e-2
