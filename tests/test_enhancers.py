"""FaceFusion's face enhancers through fusionrt against a cited re-implementation of FaceFusion
3.8.1's ``enhance_face`` (``tests/facefusion_oracle_enhance.py``), through probe ONNX models
with the real I/O contracts (known per-channel linear maps; CodeFormer's output also depends
on its float64 'weight'): the model sees FaceFusion's tensor, the final frame is FaceFusion's
(<= 1 level on the host, host vs device <= 2), nothing outside the pasted support changes.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import facefusion_oracle as ffo  # tests/facefusion_oracle.py
import facefusion_oracle_enhance as ff  # tests/facefusion_oracle_enhance.py
from fusionrt.engines.registry import get_engine
from fusionrt.errors import InputError, ModelError
from fusionrt.models.spec import Artifact
from fusionrt.models.zoo import ZOO, get_spec
from fusionrt.pipeline.host.align import invert, warp_face
from fusionrt.pipeline.host.enhance import FaceEnhancer
from fusionrt.pipeline.host.masks import box_mask
from fusionrt.pipeline.types import Face

ENHANCERS = ("gfpgan_1.4", "gpen_bfr_256", "gpen_bfr_512", "codeformer",
             "restoreformer_plus_plus")
# per-channel gains/offsets in the model's (RGB) order: a BGR/RGB mix-up changes the result
GAIN = np.array([0.9, 0.75, 0.6], np.float32)
OFFSET = np.array([0.05, -0.1, 0.15], np.float32)
WEIGHT_GAIN = np.array([0.3, -0.2, 0.1], np.float32)
# a face well inside the frame (FaceFusion replicates the crop border, fusionrt leaves it black)
LANDMARKS = np.array([[497.0, 494.0], [567.0, 496.0], [531.0, 541.0], [503.0, 583.0],
                      [561.0, 585.0]], np.float32)


def probe(spec, path):
    """output = GAIN * input + OFFSET (+ WEIGHT_GAIN * float(weight) for CodeFormer)."""
    s = spec.preprocess.size[0]
    inits = {"gain": GAIN.reshape(1, 3, 1, 1), "offset": OFFSET.reshape(1, 3, 1, 1)}
    nodes = [helper.make_node("Mul", ["input", "gain"], ["scaled"])]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, s, s])]
    if any(t.name == "weight" for t in spec.inputs):
        inputs.append(helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1]))
        inits["wgain"] = WEIGHT_GAIN.reshape(1, 3, 1, 1)
        nodes += [helper.make_node("Cast", ["weight"], ["w32"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["w32", "wgain"], ["wterm"]),
                  helper.make_node("Add", ["scaled", "wterm"], ["scaled_w"]),
                  helper.make_node("Add", ["scaled_w", "offset"], ["output"])]
    else:
        nodes.append(helper.make_node("Add", ["scaled", "offset"], ["output"]))
    graph = helper.make_graph(
        nodes, "enhancer_probe", inputs,
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, s, s])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


class Counting:
    """An engine wrapper that records every ``run``'s feeds."""

    def __init__(self, engine):
        self._engine, self.calls = engine, []

    def run(self, feeds):
        self.calls.append({k: v.detach().cpu().numpy().copy() if hasattr(v, "detach")
                           else np.array(v) for k, v in feeds.items()})
        return self._engine.run(feeds)

    def __getattr__(self, name):
        return getattr(self._engine, name)


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    d = tmp_path_factory.mktemp("enhancer_probes")
    out = {n: get_engine("ort-cpu")(Artifact(get_spec(n), probe(get_spec(n), d / f"{n}.onnx")))
           .load() for n in ENHANCERS}
    yield out
    for e in out.values():
        e.close()


@pytest.fixture(scope="module")
def frame(grace):
    return np.pad(grace, ((300, 300), (300, 300), (0, 0)), mode="reflect")


def _face(lm):
    lm = np.asarray(lm, np.float32)
    return Face(np.r_[lm.min(0) - 40, lm.max(0) + 40].astype(np.float32), 0.99, lm)


def _oracle_run(engine):
    return lambda feeds: [engine.run(feeds)["output"]]


def _input_names(engine):
    return [i.name for i in engine.session.get_inputs()]


def test_specs_follow_facefusions_model_set():
    for name in ENHANCERS:
        spec, opts = get_spec(name), ff.MODEL_OPTIONS[name]
        assert ZOO[name] is spec and spec.task == "enhance"
        assert spec.template == opts["template"] and spec.preprocess.size == opts["size"]
        assert spec.preprocess.mean == (127.5,) * 3 and spec.preprocess.std == (127.5,) * 3
        assert spec.preprocess.channel_order == "RGB" and spec.inputs[0].name == "input"
        assert spec.url.endswith(f"models-3.0.0/{name}.onnx") and not spec.sha256_verified
        assert "stand-in" in spec.extra["standin"] and "GFLOP" in spec.notes
        assert spec.extra["default_blend"] == ff.FACE_ENHANCER_BLEND / 100
        assert spec.extra["default_weight"] == ff.FACE_ENHANCER_WEIGHT
        assert [t.name for t in spec.inputs] == (["input", "weight"] if name == "codeformer"
                                                 else ["input"])
    weight = get_spec("codeformer").input("weight")
    assert weight.dtype == "float64" and weight.shape == (1,)
    assert get_spec("codeformer").license.startswith("S-Lab-1.0")
    assert get_spec("gpen_bfr_256").license.startswith("Non-Commercial")
    assert get_spec("gfpgan_1.4").license.startswith("Apache-2.0")


def test_box_mask_is_facefusions():
    for size, blur, pad in ((512, 0.3, (0, 0, 0, 0)), (256, 0.0, (10, 5, 0, 20)),
                            (256, 0.7, (0, 0, 0, 0))):
        want = ff.create_box_mask(np.zeros((size, size, 3), np.uint8), blur, pad)
        np.testing.assert_array_equal(box_mask(size, blur, pad), want)
    box = box_mask(512, 0.3)
    assert box[0].max() < 0.05 and box[256, 256] > 0.999  # faint at the crop's edge, 1 inside


@pytest.mark.parametrize("name", ENHANCERS)
def test_model_sees_facefusions_tensor(probes, frame, name):
    engine, opts = Counting(probes[name]), ff.MODEL_OPTIONS[name]
    crop_ff, _ = ffo.warp_face_by_face_landmark_5(frame, LANDMARKS, opts["template"],
                                                  opts["size"])
    got = FaceEnhancer(engine).enhance_crops([crop_ff])[0]
    (feeds,) = engine.calls
    np.testing.assert_allclose(feeds["input"], ff.prepare_crop_frame(crop_ff), atol=1e-5)
    if name == "codeformer":  # forward: numpy.array([0.5]).astype(numpy.double)
        assert feeds["weight"].dtype == np.float64 and feeds["weight"].tolist() == [0.5]
    else:
        assert set(feeds) == {"input"}
    y = ff.forward(_oracle_run(probes[name]), _input_names(probes[name]),
                   ff.prepare_crop_frame(crop_ff), np.array([0.5]).astype(np.double))
    want = ff.normalize_crop_frame(y)
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.abs(got.astype(int) - want).max() <= 1
    assert np.abs(got.astype(int) - crop_ff).max() > 20  # the probe changed the crop


def test_codeformer_weight_reaches_the_model(probes, frame):
    crop, _ = ffo.warp_face_by_face_landmark_5(frame, LANDMARKS, "ffhq_512", (512, 512))
    lo, hi = (FaceEnhancer(probes["codeformer"], weight=w).enhance_crops([crop])[0]
              for w in (0.0, 1.0))
    # RGB channel 0 gains 0.3 * w in [-1, 1] units: ~38 levels in BGR channel 2
    d = hi.astype(int) - lo.astype(int)
    assert 30 <= np.median(d[..., 2]) <= 45 and np.median(d[..., 1]) < -20


def assert_facefusions_frame(got, want):
    """<= 1 level but for a few pixels at 2: fusionrt's paste_back rounds where FaceFusion's
    truncates, so the paste alone (same crop, same matrix) differs by 1 level on ~4 % of the
    pasted values and, with warpAffine's 1/32 px coordinates at another ROI origin, by 2 on a
    handful (measured: 9-24 of 4 M values for one face)."""
    d = np.abs(got.astype(int) - want)
    assert d.max() <= 2 and (d > 1).sum() <= 1e-4 * d.size


def _support(shape, mask, m):
    h, w = shape[:2]
    return cv2.warpAffine(mask, invert(m), (w, h)) > 0


@pytest.mark.parametrize("name", ENHANCERS)
def test_frame_matches_facefusion_and_nothing_outside_changes(probes, frame, name):
    got = FaceEnhancer(probes[name]).enhance(frame, [_face(LANDMARKS)])
    want = ff.enhance_face(name, _oracle_run(probes[name]), _input_names(probes[name]),
                           LANDMARKS, frame)
    assert got.shape == frame.shape and got.dtype == np.uint8
    assert_facefusions_frame(got, want)
    assert np.abs(got.astype(int) - frame).max() > 20
    opts = ff.MODEL_OPTIONS[name]
    _, m = ffo.warp_face_by_face_landmark_5(frame, LANDMARKS, opts["template"], opts["size"])
    outside = ~_support(frame.shape, box_mask(opts["size"][0], 0.3), m)
    np.testing.assert_array_equal(got[outside], frame[outside])


def left_half(crop):
    """An occlusion-like mask: the right half of the crop is covered."""
    m = np.ones(crop.shape[:2], np.float32)
    m[:, crop.shape[1] // 2:] = 0
    return m


def test_blend_and_extra_mask_follow_facefusion(probes, frame):
    engine = probes["gpen_bfr_256"]

    got = FaceEnhancer(engine, blend=0.35, mask_blur=0.5).enhance(
        frame, [_face(LANDMARKS)], extra_mask=lambda crops: np.stack([left_half(c) for c in crops]))
    want = ff.enhance_face("gpen_bfr_256", _oracle_run(engine), _input_names(engine), LANDMARKS,
                           frame, blend=35, face_mask_blur=0.5, extra_masks=left_half)
    assert_facefusions_frame(got, want)
    plain = FaceEnhancer(engine, blend=0.35, mask_blur=0.5).enhance(frame, [_face(LANDMARKS)])
    assert (got != plain).any() and (got == frame).sum() > (plain == frame).sum()
    np.testing.assert_array_equal(FaceEnhancer(engine, blend=0.0).enhance(
        frame, [_face(LANDMARKS)]), frame)


def _three_faces(frame):
    """A 600 x 600 tile around the test face three times side by side, a face in each."""
    tile = frame[240:840, 230:830]
    wide = np.ascontiguousarray(np.concatenate([tile] * 3, axis=1))
    return wide, [LANDMARKS - [230, 240] + [600 * i, 0] for i in range(3)]


def test_one_engine_call_for_all_faces_of_a_frame(probes, frame):
    wide, lms = _three_faces(frame)
    engine = Counting(probes["gfpgan_1.4"])
    got = FaceEnhancer(engine).enhance(wide, [_face(lm) for lm in lms])
    assert len(engine.calls) == 1 and engine.calls[0]["input"].shape == (3, 3, 512, 512)
    want = wide
    for lm in lms:  # FaceFusion: one face after the other
        want = ff.enhance_face("gfpgan_1.4", _oracle_run(probes["gfpgan_1.4"]), ["input"], lm,
                               want)
    assert_facefusions_frame(got, want)
    np.testing.assert_array_equal(FaceEnhancer(engine).enhance(wide, []), wide)
    assert len(engine.calls) == 1  # no faces, no call


def test_host_and_device_agree(probes, frame):
    torch = pytest.importorskip("torch")
    from fusionrt.pipeline.device.enhance import DeviceEnhancer
    wide, lms = _three_faces(frame)
    small = np.ascontiguousarray(wide[:, :1200])
    for name in ("codeformer", "gpen_bfr_256"):
        engine = Counting(probes[name])
        host = FaceEnhancer(probes[name], blend=0.7, weight=0.25)
        dev = DeviceEnhancer(engine, "cpu", blend=0.7, weight=0.25, mask_blur=0.3, max_batch=2)
        frames = torch.from_numpy(np.stack([small, small])).permute(0, 3, 1, 2).float()
        frames = frames.contiguous()
        idx = [0, 0, 1]  # two faces in frame 0, one in frame 1
        lm = torch.from_numpy(np.stack([lms[0], lms[1], lms[0]]))
        host_mask = dev_mask = None
        if name == "gpen_bfr_256":  # an extra mask: uint8 crops on the host, tensors here
            def host_mask(crops):
                return np.stack([left_half(c) for c in crops])

            def dev_mask(crops):
                return torch.from_numpy(host_mask(list(crops.permute(0, 2, 3, 1).numpy())))
        union = dev.enhance(frames, lm, idx, extra_mask=dev_mask)
        assert [c["input"].shape[0] for c in engine.calls] == [2, 1]  # chunks of max_batch
        if name == "codeformer":
            assert all(c["weight"].dtype == np.float64 and c["weight"].tolist() == [0.25]
                       for c in engine.calls)
        out = frames.permute(0, 2, 3, 1).numpy()
        want = [host.enhance(small, [_face(lms[0]), _face(lms[1])], host_mask),
                host.enhance(small, [_face(lms[0])], host_mask)]
        for i in range(2):
            assert np.abs(out[i] - want[i]).max() <= 2
            untouched = union[i, 0].numpy() == 0
            np.testing.assert_array_equal(out[i][untouched], small[untouched])
        assert float(union.max()) == pytest.approx(0.7, abs=1e-3)  # mask x blend
        assert (union[1, 0].numpy()[:, 600:] == 0).all()  # frame 1 had one face


def test_standin_flops_are_the_stated_ones():
    torch = pytest.importorskip("torch")
    from fusionrt.models.arch import build_arch, profile
    for name in ENHANCERS:
        spec = get_spec(name)
        module = build_arch(spec.arch, 1.0).eval()
        s = spec.preprocess.size[0]
        # fully convolutional, every size a multiple of 16: FLOPs scale with the area exactly
        args = [torch.zeros(1, 3, 64, 64)] + ([torch.tensor([0.5], dtype=torch.float64)]
                                             if name == "codeformer" else [])
        _, flops = profile(module, *args)
        gflop = spec.extra["gflop"]
        assert flops * (s / 64) ** 2 / 1e9 == pytest.approx(gflop["standin"], abs=0.05)
        assert gflop["standin"] == pytest.approx(gflop["real"], rel=0.05)


def test_synthetic_standins_enhance_a_real_photo(astronaut, detector, fusionrt_home, capsys):
    pytest.importorskip("torch")
    from fusionrt.cli import main
    from fusionrt.models.store import ModelStore
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    store = ModelStore(fusionrt_home)
    for name, engine_name in (("gpen_bfr_256", "ort-cpu"), ("codeformer", "torch")):
        assert main(["models", "synth", name, "--width", "0.05", "--seed", "1"]) == 0
        art = store.resolve(name, allow_synthetic=True)
        assert art.synthetic and str(art.onnx_path) in capsys.readouterr().out
        if name == "codeformer":  # the weight is a fixed (1,) graph input, not "N"
            (w,) = [i for i in onnx.load(str(art.onnx_path)).graph.input if i.name == "weight"]
            assert [d.dim_value for d in w.type.tensor_type.shape.dim] == [1]
        with get_engine(engine_name)(art) as engine:
            enh = FaceEnhancer(engine)
            out = enh.enhance(astronaut, faces)
            crop, m = warp_face(astronaut, faces[0].landmarks, enh.template, enh.size)
            if name == "codeformer":  # the float64 weight reaches the torch module
                lo, hi = (FaceEnhancer(engine, weight=w).enhance_crops([crop])[0]
                          for w in (0.0, 1.0))
                assert np.abs(lo.astype(int) - hi).mean() > 0.5
        assert out.shape == astronaut.shape and out.dtype == np.uint8
        x0, y0, x1, y1 = faces[0].box.astype(int)
        assert np.abs(out[y0:y1, x0:x1].astype(int) - astronaut[y0:y1, x0:x1]).mean() > 2
        outside = ~_support(astronaut.shape, enh.box, m)
        assert outside.any()
        np.testing.assert_array_equal(out[outside], astronaut[outside])


@pytest.mark.parametrize("kwargs", [{"blend": 1.5}, {"blend": -0.1}, {"weight": 2.0},
                                    {"mask_blur": -1.0}])
def test_settings_out_of_range_are_refused(probes, kwargs):
    key = next(iter(kwargs))
    with pytest.raises(InputError, match=f"{key.replace('_', ' ')}.*expected 0 <="):
        FaceEnhancer(probes["gfpgan_1.4"], **kwargs)


def test_a_model_of_another_task_is_refused(tmp_path):
    spec = get_spec("hyperswap_1a_256")  # a swapper: never loaded, refused on its contract
    engine = get_engine("ort-cpu")(Artifact(spec, tmp_path / "never_read.onnx"))
    with pytest.raises(ModelError, match="task 'swap'.*expected an enhance model"):
        FaceEnhancer(engine)
    pytest.importorskip("torch")
    from fusionrt.pipeline.device.enhance import DeviceEnhancer
    with pytest.raises(ModelError, match="task 'swap'.*expected an enhance model"):
        DeviceEnhancer(engine, "cpu")


def test_bad_crops_frames_and_masks_are_refused(probes, frame):
    enh = FaceEnhancer(probes["gpen_bfr_256"])
    with pytest.raises(InputError, match=r"crop \| got uint8 \(128, 128, 3\)"):
        enh.enhance_crops([np.zeros((128, 128, 3), np.uint8)])
    with pytest.raises(InputError, match=r"frame \\| got float32"):
        enh.enhance(frame.astype(np.float32), [_face(LANDMARKS)])
    with pytest.raises(InputError, match=r"extra mask \| got shape \(1, 64, 64\)"):
        enh.enhance(frame, [_face(LANDMARKS)], extra_mask=lambda c: np.ones((1, 64, 64)))


def test_device_bad_inputs_are_refused(probes):
    torch = pytest.importorskip("torch")
    from fusionrt.pipeline.device.enhance import DeviceEnhancer
    with pytest.raises(InputError, match=r"blend 1.2 \\| out of range"):
        DeviceEnhancer(probes["gpen_bfr_256"], "cpu", blend=1.2)
    dev = DeviceEnhancer(probes["gpen_bfr_256"], "cpu")
    frames = torch.zeros((1, 3, 300, 300))
    with pytest.raises(InputError, match=r"landmarks \| got shape \(1, 4, 2\)"):
        dev.enhance(frames, torch.zeros((1, 4, 2)), [0])
    with pytest.raises(InputError, match=r"frame_idx \| got \[3\]"):
        dev.enhance(frames, torch.from_numpy(LANDMARKS[None] - 300), [3])
    assert float(dev.enhance(frames, torch.zeros((0, 5, 2)), []).abs().sum()) == 0
