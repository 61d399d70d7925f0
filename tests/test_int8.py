"""INT8 Q/DQ graphs: quantized where intended, norms/keep-list/style/last conv float, runs on
ORT CPU, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from fusionrt.builders.int8 import (Int8Options, dq_fed, qdq_summary, quantize_int8,  # noqa: E402
                                 quantized_nodes)
from fusionrt.builders.keeplist import last_convs  # noqa: E402
from fusionrt.errors import InputError  # noqa: E402
from fusionrt.models.zoo import get_spec  # noqa: E402


@pytest.fixture(scope="module")
def ins_set(tmp_path_factory, detector, synthetic_store):
    """8 augmented crops of the example photos for the tiny synthetic inswapper."""
    import os
    import shutil
    from conftest import ASTRONAUT, GRACE_HOPPER
    from fusionrt.pipeline.artifacts import build_calibration_set
    from fusionrt.models.store import ModelStore
    d = tmp_path_factory.mktemp("photos")
    shutil.copy(ASTRONAUT, d)
    shutil.copy(GRACE_HOPPER, d)
    old = os.environ.get("FUSIONRT_HOME")
    os.environ["FUSIONRT_HOME"] = str(synthetic_store)
    try:
        return build_calibration_set("inswapper_128", d, 8, seed=0, do_augment=True,
                                     detector=detector, allow_synthetic=True,
                                     model_path=ModelStore().synthetic_path("inswapper_128"))
    finally:
        if old is not None:
            os.environ["FUSIONRT_HOME"] = old


def test_qdq_only_where_intended(synthetic_home, ins_set, tmp_path):
    import onnxruntime as ort
    from fusionrt.models.store import ModelStore
    spec = get_spec("inswapper_128")
    src = ModelStore().synthetic_path("inswapper_128")
    out = tmp_path / "ins.int8.onnx"
    rep = quantize_int8(src, out, ins_set.feeds(spec), spec=spec)
    q = onnx.load(str(out))
    weights = quantized_nodes(q)
    last = set(last_convs(q))
    assert last, "the conv writing the pixels was found"
    for name, is_int8 in weights.items():
        node = next(n for n in q.graph.node if n.name == name)
        if node.op_type == "Gemm":        # AdaIN style projections of the identity: float
            assert not is_int8, name
        elif name in last:                # the last conv writes pixels: float
            assert not is_int8, name
        else:                             # every other conv: INT8 weights
            assert is_int8, name
    # norm layers stay unquantized: their scale/bias come from float initializers, not DQ
    dq_out = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    norms = [n for n in q.graph.node if n.op_type == "InstanceNormalization"]
    assert norms and all(i not in dq_out for n in norms for i in n.input[1:])
    # ...and their outputs are not re-quantized: the AdaIN modulation runs in float
    consumers = {i: n for n in q.graph.node for i in n.input}
    assert all(consumers[n.output[0]].op_type != "QuantizeLinear" for n in norms)
    s = qdq_summary(q)
    assert s["int8_weights"]["Conv"] == len(weights) - len(last) - s["float_weights"]["Gemm"]
    assert rep.samples == len(ins_set)
    meta = {p.key: p.value for p in q.metadata_props}
    assert meta["fusionrt.precision"] == "int8" and meta["fusionrt.name"] == "inswapper_128"
    feed = next(ins_set.feeds(spec))
    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert y.shape == (1, 3, 128, 128) and np.isfinite(y).all()


def test_embedder_quantizes_its_convs(synthetic_home, tmp_path):
    from fusionrt.builders.export import sample_inputs
    from fusionrt.models.store import ModelStore
    spec = get_spec("arcface_w600k_r50")
    src = ModelStore().synthetic_path("arcface_w600k_r50")
    feeds = [sample_inputs(spec, 1, seed=i) for i in range(4)]
    out = tmp_path / "arc.int8.onnx"
    quantize_int8(src, out, feeds, spec=spec, options=Int8Options(method="percentile"))
    q = onnx.load(str(out))
    w = quantized_nodes(q)
    convs = [n.name for n in q.graph.node if n.op_type == "Conv"]
    assert sum(w[c] for c in convs) == len(convs)  # no conv feeds ArcFace's output directly
    bns = [n for n in q.graph.node if n.op_type == "BatchNormalization"]
    dq_out = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert all(i not in dq_out for n in bns for i in n.input[1:])  # BN parameters stay float
    assert dq_fed(q)  # activations do flow through Q/DQ


def test_empty_calibration(synthetic_home, tmp_path):
    from fusionrt.models.store import ModelStore
    with pytest.raises(InputError, match="empty"):
        quantize_int8(ModelStore().synthetic_path("arcface_w600k_r50"), tmp_path / "x.onnx", [],
                      spec=get_spec("arcface_w600k_r50"))


def test_bad_method():
    with pytest.raises(ValueError, match="calibration method 'kl'"):
        Int8Options(method="kl")


@pytest.mark.parametrize("act, dtype", [("s8", np.int8), ("u8", np.uint8)])
def test_activation_zero_points(synthetic_home, tmp_path, act, dtype):
    """s8: every activation zero point is int8 0 (what TensorRT accepts); u8: uint8 (ORT CPU)."""
    from onnx import numpy_helper
    from fusionrt.builders.export import sample_inputs
    from fusionrt.models.store import ModelStore
    spec = get_spec("arcface_w600k_r50")
    out = tmp_path / f"arc.{act}.onnx"
    quantize_int8(ModelStore().synthetic_path("arcface_w600k_r50"), out,
                  [sample_inputs(spec, 1, seed=i) for i in range(2)], spec=spec,
                  options=Int8Options(method="minmax", activations=act))
    q = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    zps = [inits[n.input[2]] for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.dtype == dtype for z in zps)
    if act == "s8":
        assert all(not z.any() for z in zps)
