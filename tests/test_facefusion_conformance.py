"""FaceFusion's models through fusionrt against a cited re-implementation of FaceFusion 3.8.1's
pre- and post-processing (``tests/facefusion_oracle.py``), through probe ONNX models with the
real I/O contracts (known linear maps): the converter and the generator see the same tensors,
and paste-back gets the same pixels (<= 1 level). No real weights are reachable here; this is
the evidence in their place.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import facefusion_oracle as ff  # tests/facefusion_oracle.py
from fusionrt.engines.registry import get_engine
from fusionrt.models.spec import Artifact
from fusionrt.models.zoo import get_spec
from fusionrt.pipeline.host.align import warp_face
from fusionrt.pipeline.host.embed import embedding_scales, l2norm, to_tensor
from fusionrt.pipeline.host.swap import NeuralSwapper
from onnx_probes import save_probe as _save, value_info as _vi  # tests/onnx_probes.py

RNG = np.random.default_rng(18)






def converter_probe(spec, path):
    """input (N, 512) -> input @ W + b: a bias makes the result depend on the raw vector's
    scale, so feeding the unit vector instead of the raw one would fail the test."""
    w = (RNG.standard_normal((512, 512)) / 512 ** 0.5).astype(np.float32)
    b = RNG.standard_normal(512).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], [spec.outputs[0].name])]
    return _save(nodes, [_vi("input", ("N", 512))], [_vi(spec.outputs[0].name, ("N", 512))],
                 {"w": w, "b": b}, path)


def swapper_probe(spec, path, alpha=0.8):
    """target (N, 3, S, S), source (N, 512) -> alpha * target + (source @ V) per channel."""
    s = spec.preprocess.size[0]
    v = (RNG.standard_normal((512, 3)) * 0.2).astype(np.float32)
    out = spec.outputs[0].name
    nodes = [helper.make_node("MatMul", ["source", "v"], ["sv"]),
             helper.make_node("Reshape", ["sv", "shape"], ["bias"]),
             helper.make_node("Mul", ["target", "alpha"], ["scaled"]),
             helper.make_node("Add", ["scaled", "bias"], [out])]
    return _save(nodes, [_vi("target", ("N", 3, s, s)), _vi("source", ("N", 512))],
                 [_vi(out, ("N", 3, s, s))],
                 {"v": v, "shape": np.array([-1, 3, 1, 1], np.int64),
                  "alpha": np.array(alpha, np.float32)}, path)


def _engine(spec, path):
    return get_engine("ort-cpu")(Artifact(spec, path)).load()


def _run(engine, feeds):
    return np.asarray(engine.run(feeds)[engine.outputs[0].name], np.float32)


SWAPPERS = ("simswap_256", "hyperswap_1a_256", "hyperswap_1b_256", "hyperswap_1c_256",
            "ghost_1_256", "ghost_2_256", "ghost_3_256", "hififace_unofficial_256",
            "simswap_unofficial_512")
CONVERTERS = ("crossface_simswap", "crossface_ghost", "crossface_hififace")


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    d = tmp_path_factory.mktemp("probes")
    out = {}
    for name in CONVERTERS:
        conv = get_spec(name)
        out[name] = _engine(conv, converter_probe(conv, d / f"{name}.onnx"))
    for name in SWAPPERS:
        spec = get_spec(name)
        out[name] = _engine(spec, swapper_probe(spec, d / f"{name}.onnx"))
    yield out
    for e in out.values():
        e.close()


def _raw_embedding():
    return (RNG.standard_normal(512) * 1.1).astype(np.float32)  # |raw| ~ 25, as w600k gives


@pytest.mark.parametrize("name", SWAPPERS)
def test_source_embedding_matches_facefusion(probes, name):
    spec, options, engine = get_spec(name), ff.MODEL_OPTIONS[name], probes[name]
    conv = probes.get(spec.extra.get("converter"))
    raw = _raw_embedding()
    target_raw = _raw_embedding()
    forward = lambda e: _run(conv, {"input": np.asarray(e, np.float32)})  # noqa: E731
    want = ff.prepare_source_embedding(options, raw, raw / np.linalg.norm(raw), forward)
    want = ff.balance_source_embedding(options, want, target_raw)  # FaceFusion's default 0.5
    uses_converter = spec.extra["source_transform"].startswith("converter")
    sw = NeuralSwapper(engine, spec, converter=conv if uses_converter else None)
    got = sw.latent(l2norm(raw), embedding_scales(raw[None])[0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if uses_converter:  # the raw vector matters: the unit one gives another identity
        assert not np.allclose(sw.latent(l2norm(raw)), want, atol=1e-3)


def test_embedding_scale_restores_the_raw_vector():
    raw = RNG.standard_normal((3, 512)).astype(np.float32) * 20
    np.testing.assert_allclose(l2norm(raw) * np.array(embedding_scales(raw))[:, None], raw,
                               rtol=1e-5)


@pytest.mark.parametrize("name", SWAPPERS)
def test_generator_sees_facefusions_tensor_and_paste_gets_its_pixels(probes, grace, name):
    spec, options, engine = get_spec(name), ff.MODEL_OPTIONS[name], probes[name]
    # a face well inside the frame: FaceFusion replicates the border, fusionrt leaves it black
    frame = np.pad(grace, ((300, 300), (300, 300), (0, 0)), mode="reflect")
    lm = np.array([[497.0, 494.0], [567.0, 496.0], [531.0, 541.0], [503.0, 583.0],
                   [561.0, 585.0]], np.float32)
    size = spec.preprocess.size[0]
    crop_ff, m_ff = ff.warp_face_by_face_landmark_5(frame, lm, options["template"], (size, size))
    crop, m = warp_face(frame, lm, spec.template, size)
    np.testing.assert_allclose(m, m_ff, atol=1e-3)  # same template, same similarity fit
    assert np.abs(crop.astype(int) - crop_ff).max() <= 1
    # the model's input tensor, from the same crop
    p = spec.preprocess
    x = to_tensor([crop_ff], p.channel_order, p.mean, p.std)
    np.testing.assert_allclose(x, ff.prepare_crop_frame(options, crop_ff), atol=1e-5)
    # the model's output, de-normalised: what paste_back receives
    src = l2norm(_raw_embedding())[None]
    y = _run(engine, {"target": ff.prepare_crop_frame(options, crop_ff), "source": src})
    want = ff.normalize_crop_frame(options, y[0])
    got = NeuralSwapper(engine, spec).swap_crops([crop_ff], src)[0]
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.abs(got.astype(np.float64) - want).max() <= 1.0
