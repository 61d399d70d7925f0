"""FaceFusion's ``2dfan4`` landmarker through fusionrt against a cited re-implementation of
FaceFusion 3.8.1's pre/post-processing (``tests/facefusion_oracle_landmark.py``), through probe
ONNX models with the real I/O contract (planted heatmap peaks and points whose strength follows
the mean of the input): same model input, same 68 and 5 points, same keep/replace decision, on
a real photo upright, turned by 90/180/270 degrees and darkened (CLAHE). No real weights are
reachable here; this is the evidence in their place. Then the stage in the pipeline, with a
synthesized reduced-width 2dfan4 stand-in.
"""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import facefusion_oracle_landmark as ff  # tests/facefusion_oracle_landmark.py
from fusionrt.engines.registry import get_engine
from fusionrt.errors import InputError, ModelError
from fusionrt.models.spec import Artifact
from fusionrt.models.zoo import get_spec
from fusionrt.pipeline.host.landmark import (Landmarker, face_angle, landmarks_68_to_5,
                                             translation_matrix)
from fusionrt.pipeline.types import Face

SPEC = get_spec("2dfan4")
RNG = np.random.default_rng(68)
POINTS = np.column_stack([RNG.uniform(8, 56, 68), RNG.uniform(8, 56, 68)]).astype(np.float32)


def probe(path, gain: float):
    """input (N, 3, 256, 256) → landmarks = (POINTS, g) and heatmaps = g * unit Gaussians at the
    points' cells, g = gain * mean(input): the score is interp(g, [0, 0.9]), so a crop fed
    without / 255 (or a wrong crop) gives another score."""
    ys, xs = np.mgrid[:64, :64]
    cells = np.floor(POINTS).astype(int)
    heat = np.exp(-((xs - cells[:, :1, None]) ** 2 + (ys - cells[:, 1:, None]) ** 2) / 4.0)
    pts = np.concatenate([POINTS, np.zeros((68, 1), np.float32)], 1)[None]
    unit_z = np.zeros((1, 68, 3), np.float32)
    unit_z[..., 2] = 1
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2, 3], keepdims=1),
             helper.make_node("Mul", ["m", "gain"], ["g"]),
             helper.make_node("Mul", ["g", "heat"], ["heatmaps"]),
             helper.make_node("Reshape", ["g", "shape"], ["g3"]),
             helper.make_node("Mul", ["g3", "unit_z"], ["z"]),
             helper.make_node("Add", ["pts", "z"], ["landmarks"])]
    inits = {"gain": np.array(gain, np.float32), "heat": heat[None].astype(np.float32),
             "pts": pts, "unit_z": unit_z, "shape": np.array([-1, 1, 1], np.int64)}
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    graph = helper.make_graph(nodes, "probe", [vi("input", ["N", 3, 256, 256])],
                              [vi("landmarks", ["N", 68, 3]), vi("heatmaps", ["N", 68, 64, 64])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm_probes")
    out = {}
    for name, gain in (("high", 8.0), ("low", 0.5)):
        path = probe(d / f"{name}.onnx", gain)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        # FaceFusion's forward_with_2dfan4: run(None, {'input': ...}), outputs by position
        out[name] = (get_engine("ort-cpu")(Artifact(SPEC, path)).load(),
                     lambda x, s=sess: s.run(None, {"input": x}))
    yield out
    for engine, _ in out.values():
        engine.close()


def _turn(img, face, turns):
    """The image turned clockwise by 90° ``turns`` times, with the face's box and points."""
    for _ in range(turns):
        h = img.shape[0]
        img = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
        move = lambda p: np.column_stack([h - 1 - p[:, 1], p[:, 0]])  # noqa: E731
        corners = move(face.box.reshape(2, 2))
        box = np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32)
        face = Face(box, face.score, move(face.landmarks).astype(np.float32))
    return img, face


CASES = {"upright": (0, 1.0, 0), "turned90": (1, 1.0, 90), "turned180": (2, 1.0, 180),
         "turned270": (3, 1.0, 270), "dark": (0, 0.07, 0)}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, detector, astronaut):
    turns, light, angle = CASES[request.param]
    face = detector.detect(astronaut)[0]
    img = np.clip(astronaut * light, 0, 255).astype(np.uint8) if light != 1.0 else astronaut
    img, face = _turn(np.ascontiguousarray(img), face, turns)
    assert face_angle(face.landmarks) == angle  # the turn is really exercised
    return request.param, img, face, angle


def test_input_tensor_matches_facefusion(probes, case):
    name, img, face, angle = case
    x, _ = Landmarker(probes["high"][0]).prepare(img, [face])
    want, _, _ = ff.prepare_2dfan4(img, face.box, angle)
    assert x.shape == want.shape == (1, 3, 256, 256) and x.dtype == np.float32
    np.testing.assert_allclose(x, want, atol=1e-5, rtol=0)
    if name == "dark":  # FaceFusion's CLAHE branch ran, and it changed the crop
        crop = cv2.warpAffine(img, translation_matrix(face.box, 256), (256, 256))
        assert cv2.cvtColor(crop, cv2.COLOR_RGB2Lab)[..., 0].mean() < 30
        assert np.abs(x[0].transpose(1, 2, 0) * 255 - crop).max() > 10


@pytest.mark.parametrize("strength", ["high", "low"])
def test_points_and_decision_match_facefusion(probes, case, strength):
    _, img, face, angle = case
    engine, forward = probes[strength]
    got = Landmarker(engine).refine(img, [face])[0]
    five, sixty_eight, score = ff.landmark_5_68(img, face.box, face.landmarks, angle, forward)
    if score > ff.FACE_LANDMARKER_SCORE:
        assert strength == "high" and got.landmarks68.shape == (68, 2)
        assert np.abs(got.landmarks68 - sixty_eight).max() <= 0.5
        assert np.abs(got.landmarks - five).max() <= 0.5
        np.testing.assert_allclose(got.landmarks, landmarks_68_to_5(got.landmarks68), atol=1e-5)
    else:  # FaceFusion keeps the detector's 5 points: so does fusionrt, and no 68
        assert strength == "low" and got.landmarks68 is None
        assert got.landmarks is face.landmarks and np.array_equal(five, face.landmarks)
    assert got.box is face.box and got.score == face.score


def test_upright_points_are_the_planted_ones_mapped_back(probes, detector, astronaut):
    """Independent of the oracle: crop point p = POINTS * 4; frame point = (p - t) / scale."""
    face = detector.detect(astronaut)[0]
    got = Landmarker(probes["high"][0]).refine(astronaut, [face])[0]
    scale = 195 / (face.box[2:] - face.box[:2]).max()
    t = (256 - (face.box[2:] + face.box[:2]) * scale) / 2
    np.testing.assert_allclose(got.landmarks68, (POINTS * 4 - t) / scale, atol=1e-3)


def test_one_engine_call_for_every_face_of_a_batch(probes, detector, astronaut, grace):
    engine, forward = probes["high"]
    calls = []
    counting = SimpleNamespace(spec=engine.spec,
                               run=lambda feeds: calls.append(feeds["input"].shape) or
                               engine.run(feeds))
    a, g = detector.detect(astronaut)[0], detector.detect(grace)[0]
    shifted = Face(a.box + 5, a.score, a.landmarks + 5)
    out = Landmarker(counting).refine_batch([astronaut, grace], [[a, shifted], [g]])
    assert calls == [(3, 3, 256, 256)] and [len(fl) for fl in out] == [2, 1]
    for img, face, got in ((astronaut, a, out[0][0]), (astronaut, shifted, out[0][1]),
                           (grace, g, out[1][0])):
        _, want, _ = ff.landmark_5_68(img, face.box, face.landmarks, 0, forward)
        assert np.abs(got.landmarks68 - want).max() <= 0.5
    assert Landmarker(counting).refine(astronaut, []) == [] and len(calls) == 1


def _face68(tilt_deg: float) -> np.ndarray:
    """A crude upright 68-point face (jaw 0-16, brows, nose 27-35, eyes 36-47, mouth 48-67),
    tilted by ``tilt_deg``."""
    t = np.linspace(np.pi, 0, 17)
    jaw = np.column_stack([np.cos(t), 0.2 + 0.8 * np.sin(t)])
    brows = np.column_stack([np.r_[np.linspace(-.7, -.2, 5), np.linspace(.2, .7, 5)],
                             np.full(10, -.35)])
    nose = np.column_stack([np.r_[np.zeros(4), np.linspace(-.2, .2, 5)],
                            np.r_[np.linspace(-.25, .15, 4), np.full(5, .25)]])
    ring = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    eye = np.column_stack([0.12 * np.cos(ring), 0.05 * np.sin(ring)])
    ring = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    mouth = np.column_stack([0.3 * np.cos(ring + np.pi), 0.5 + 0.08 * np.sin(ring)])
    pts = np.concatenate([jaw, brows, nose, eye + (-.4, -.15), eye + (.4, -.15), mouth])
    a = np.radians(tilt_deg)
    return (pts @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])) * 80 + 200


@pytest.mark.parametrize("tilt", [0, 20, -25, 90, 110, 180, 200, 270, 300])
def test_face_angle_agrees_with_estimate_face_angle(tilt):
    pts = _face68(tilt)
    assert pts.shape == (68, 2)
    np.testing.assert_allclose(landmarks_68_to_5(pts), ff.convert_to_face_landmark_5(pts))
    assert face_angle(landmarks_68_to_5(pts)) == ff.estimate_face_angle(pts) == (
        round(tilt / 90) * 90) % 360


# -- bad input ---------------------------------------------------------------------------------

@pytest.fixture
def landmarker(probes):
    return Landmarker(probes["high"][0])


def _face():
    return Face(np.float32([100, 100, 200, 220]), 0.9,
                np.float32([[130, 150], [170, 150], [150, 175], [135, 195], [165, 195]]))


@pytest.mark.parametrize("frame, match", [
    (np.zeros((300, 300, 3), np.float32), "uint8"), (np.zeros((300, 300), np.uint8), "uint8"),
    ("frame.png", "got str")])
def test_bad_frame_is_refused(landmarker, frame, match):
    with pytest.raises(InputError, match=rf"image \| .*{match}"):
        landmarker.refine(frame, [_face()])


@pytest.mark.parametrize("face, match", [
    (Face(np.float32([100, 100, 200]), 0.9, _face().landmarks), r"box shape \(3,\)"),
    (Face(_face().box, 0.9, np.zeros((68, 2), np.float32)), r"landmarks shape \(68, 2\)"),
    (Face(np.float32([np.nan, 100, 200, 220]), 0.9, _face().landmarks), "NaN or inf")])
def test_bad_face_is_refused(landmarker, face, match):
    with pytest.raises(InputError, match=match):
        landmarker.refine(np.zeros((300, 300, 3), np.uint8), [face])


def test_frames_and_face_lists_must_pair(landmarker):
    with pytest.raises(InputError, match="one list per frame"):
        landmarker.refine_batch([np.zeros((9, 9, 3), np.uint8)], [[], []])


def test_a_model_without_the_landmark_contract_is_refused():
    with pytest.raises(ModelError, match="arcface_w600k_r50' .* expected a landmark model"):
        Landmarker(SimpleNamespace(spec=get_spec("arcface_w600k_r50")))


@pytest.mark.parametrize("bad, match", [
    ({"landmarks": np.zeros((1, 68, 1), np.float32)}, r"output 'landmarks' \| got shape"),
    ({"heatmaps": np.zeros((1, 68, 32, 32), np.float32)}, r"output 'heatmaps' \| got shape")])
def test_wrong_model_output_is_one_clear_error(bad, match):
    outs = {"landmarks": np.zeros((1, 68, 3), np.float32),
            "heatmaps": np.zeros((1, 68, 64, 64), np.float32), **bad}
    fake = SimpleNamespace(spec=SPEC, run=lambda feeds: outs)
    with pytest.raises(ModelError, match=match):
        Landmarker(fake).refine(np.zeros((300, 300, 3), np.uint8), [_face()])


# -- device kernels (CPU torch) -----------------------------------------------------------------

def test_device_landmarker_matches_facefusion(probes, case):
    torch = pytest.importorskip("torch")
    from fusionrt.pipeline.device.frames import Device, hwc_to_nchw
    from fusionrt.pipeline.device.landmark import GpuLandmarker
    name, img, face, angle = case
    engine, forward = probes["high"]
    gpu = GpuLandmarker(engine, Device("cpu"))
    frames = hwc_to_nchw(torch.from_numpy(np.stack([img, img])))
    x, _ = gpu.prepare(frames, [1], [face])
    want, _, _ = ff.prepare_2dfan4(img, face.box, angle)
    d = np.abs(x.numpy() - want) * 255
    # grid_sample vs OpenCV's fixed-point bilinear: a level on a few crop pixels (more at the
    # frame's edge); the Lab round trip and CLAHE themselves are exact
    assert d.mean() < 0.01 and (d > 1.01).mean() < 0.002
    got = gpu.refine(frames, [1], [[face]])[0][0]
    five, sixty_eight, score = ff.landmark_5_68(img, face.box, face.landmarks, angle, forward)
    assert score > 0.5 and np.abs(got.landmarks68 - sixty_eight).max() <= 0.5
    assert np.abs(got.landmarks - five).max() <= 0.5


def test_device_contrast_is_opencvs_byte_for_byte(probes, astronaut):
    torch = pytest.importorskip("torch")
    from fusionrt.pipeline.device.frames import Device
    from fusionrt.pipeline.device.landmark import GpuLandmarker
    from fusionrt.pipeline.host.landmark import optimize_contrast
    gpu = GpuLandmarker(probes["high"][0], Device("cpu"))
    crops = np.stack([astronaut[:256, :256], astronaut[256:, 256:], astronaut[:256, 256:] // 12])
    got = gpu.contrast(torch.from_numpy(crops).permute(0, 3, 1, 2).float())
    want = np.stack([optimize_contrast(c.copy()) for c in crops])
    assert np.array_equal(got.permute(0, 2, 3, 1).numpy().astype(np.uint8), want)
    assert not np.array_equal(want[:2], crops[:2])  # the round trip does move pixels


def test_device_frames_must_be_nchw(probes):
    torch = pytest.importorskip("torch")
    from fusionrt.pipeline.device.frames import Device
    from fusionrt.pipeline.device.landmark import GpuLandmarker
    gpu = GpuLandmarker(probes["high"][0], Device("cpu"))
    with pytest.raises(InputError, match=r"frames \| got shape \(1, 300, 300, 3\)"):
        gpu.refine(torch.zeros((1, 300, 300, 3)), [0], [[_face()]])
