"""FaceFusion 3.8.1's face detectors in fusionrt, against a cited re-implementation of
FaceFusion's detection (``tests/facefusion_oracle_detect.py``), through probe ONNX models with
the real I/O contracts: every output is planted constants (chosen anchors fire with known
offsets) plus a known function of the input (cell means of the input tensor), so the boxes,
landmarks and scores agree only if both feed the model the same tensor. No real weights are
reachable here; this is the evidence in their place. Then the any-angle retry on real photos
with the real built-in detector, and a classic swap of a rotated face.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import facefusion_oracle_detect as ff  # tests/facefusion_oracle_detect.py
from fusionrt.engines.registry import get_engine
from fusionrt.errors import InputError, ModelError
from fusionrt.models.spec import Artifact
from fusionrt.models.zoo import get_spec
from fusionrt.pipeline.host.decoders import DECODERS, insightface_anchors, insightface_counts
from fusionrt.pipeline.host.detect import Detector, unrotate_points
from fusionrt.pipeline.plan import with_anchor_count
from fusionrt.pipeline.settings import PipelineConfig
from onnx_probes import save_probe as _save, value_info as _vi  # tests/onnx_probes.py

# FaceFusion's model name per fusionrt file, and the detector size the probes are built for
FF_MODEL = {"scrfd_2.5g": "scrfd", "retinaface_10g": "retinaface", "yoloface_8n": "yolo_face"}
SIZE = {"scrfd_2.5g": 320, "retinaface_10g": 320, "yoloface_8n": 640}
# planted faces: (stride, row, col, anchor, score, box distances in strides, landmark offsets
# in strides); the second is a weaker duplicate of the first (NMS removes it); none at anchor
# 0 of a stride (FaceFusion skips a stride whose only kept anchor is index 0)
PLANTED = [
    (16, 6, 5, 1, 0.9, (2.0, 2.5, 2.2, 2.8),
     (-0.8, -0.6, 0.9, -0.6, 0.05, 0.3, -0.6, 1.2, 0.7, 1.2)),
    (16, 6, 5, 0, 0.7, (2.1, 2.4, 2.0, 2.9),
     (-0.7, -0.6, 0.8, -0.5, 0.0, 0.3, -0.6, 1.1, 0.7, 1.1)),
    (32, 3, 7, 0, 0.8, (1.0, 1.2, 1.0, 1.2),
     (-0.4, -0.3, 0.4, -0.3, 0.0, 0.1, -0.3, 0.6, 0.3, 0.6)),
    (8, 20, 28, 1, 0.6, (2.0, 2.0, 2.0, 2.0),
     (-0.9, -0.5, 0.9, -0.5, 0.0, 0.2, -0.6, 1.0, 0.6, 1.0)),
]
GAIN = {"score": 0.01, "offset": 0.25}  # input dependence: output += gain * cell mean






def _cell_mean(nodes, s, out):
    """input (1, 3, S, S) → (1, 1, S/s, S/s): the mean of each stride cell over channels."""
    nodes += [helper.make_node("AveragePool", ["input"], [f"pool{s}"], kernel_shape=[s, s],
                               strides=[s, s]),
              helper.make_node("ReduceMean", [f"pool{s}"], [out], axes=[1], keepdims=1)]


def insightface_probe(spec, path, size, gain=GAIN, planted=PLANTED, counts=None):
    """The 9-output contract: per stride, planted (K, c) constants + gain * the anchor's cell
    mean (rows in ``create_static_anchors`` order: row, column, anchor)."""
    counts = counts or insightface_counts(size)
    nodes, inits, outs = [], {"one_col": np.array([-1, 1], np.int64)}, []
    for j, s in enumerate((8, 16, 32)):
        n = size // s
        planted_s = {k: np.zeros((counts[j], w), np.float32)
                     for k, w in (("score", 1), ("bbox", 4), ("kps", 10))}
        for (st, r, c, a, score, dist, kps) in planted:
            if st == s:
                i = (r * n + c) * 2 + a
                planted_s["score"][i], planted_s["bbox"][i], planted_s["kps"][i] = score, dist, kps
        _cell_mean(nodes, s, f"g{s}")
        nodes += [helper.make_node("Concat", [f"g{s}", f"g{s}"], [f"gg{s}"], axis=1),
                  helper.make_node("Transpose", [f"gg{s}"], [f"gt{s}"], perm=[0, 2, 3, 1]),
                  helper.make_node("Reshape", [f"gt{s}", "one_col"], [f"ga{s}"])]
        if counts[j] != 2 * n * n:  # a broken file: its rows no longer follow the anchors
            nodes.append(helper.make_node("Slice", [f"ga{s}", f"st{s}", f"en{s}"], [f"gb{s}"]))
            inits.update({f"st{s}": np.array([0], np.int64),
                          f"en{s}": np.array([counts[j]], np.int64)})
        else:
            nodes.append(helper.make_node("Identity", [f"ga{s}"], [f"gb{s}"]))
        for kind in ("score", "bbox", "kps"):
            name = f"{kind}_{s}"
            g = gain["score" if kind == "score" else "offset"]
            inits[f"p_{name}"], inits[f"k_{name}"] = planted_s[kind], np.float32(g)
            nodes += [helper.make_node("Mul", [f"gb{s}", f"k_{name}"], [f"m_{name}"]),
                      helper.make_node("Add", [f"p_{name}", f"m_{name}"], [name])]
    order = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
    widths = {"score": 1, "bbox": 4, "kps": 10}
    outs = [_vi(o, (None, widths[o.split("_")[0]])) for o in order]
    assert [t.name for t in spec.outputs] == order
    return _save(nodes, [_vi("input", (1, 3, "H", "W"))], outs, inits, path)


def yolo_probe(spec, path, gain=GAIN, planted=PLANTED, count=8400):
    """(1, 20, 8400): planted constants (cx, cy, w, h, score, 5 x (x, y, visibility) in input
    pixels) + gain * the anchor's cell mean (in [0, 1] for yolo's input)."""
    size = 640
    base = np.zeros((1, 20, count), np.float32)
    offsets = {8: 0, 16: 80 * 80, 32: 80 * 80 + 40 * 40}
    for (s, r, c, a, score, dist, kps) in planted:
        i = offsets[s] + r * (size // s) + c + a  # a duplicate sits in the next cell
        if i >= count:
            continue
        ax, ay = c * s, r * s
        x1, y1, x2, y2 = ax - dist[0] * s, ay - dist[1] * s, ax + dist[2] * s, ay + dist[3] * s
        base[0, :5, i] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, score)
        for p in range(5):
            base[0, 5 + 3 * p:8 + 3 * p, i] = (ax + kps[2 * p] * s, ay + kps[2 * p + 1] * s, 0.9)
    coef = np.zeros((1, 20, 1), np.float32)
    coef[0, :4] = 16 * gain["offset"]
    coef[0, 4] = gain["score"]
    for p in range(5):
        coef[0, 5 + 3 * p:7 + 3 * p] = 16 * gain["offset"]
    nodes, parts = [], []
    for s in (8, 16, 32):
        _cell_mean(nodes, s, f"g{s}")
        nodes.append(helper.make_node("Reshape", [f"g{s}", "flat"], [f"f{s}"]))
        parts.append(f"f{s}")
    nodes += [helper.make_node("Concat", parts, ["gall"], axis=2)]
    if count != 8400:
        nodes.append(helper.make_node("Slice", ["gall", "st", "en", "ax"], ["gcut"]))
    nodes += [helper.make_node("Mul", ["gcut" if count != 8400 else "gall", "coef"], ["m"]),
              helper.make_node("Add", ["base", "m"], [spec.outputs[0].name])]
    inits = {"flat": np.array([1, 1, -1], np.int64), "coef": coef, "base": base,
             "st": np.array([0], np.int64), "en": np.array([count], np.int64),
             "ax": np.array([2], np.int64)}
    return _save(nodes, [_vi("input", (1, 3, size, size))],
                 [_vi(spec.outputs[0].name, (1, 20, count))], inits, path)


def make_probe(name, path, **kw):
    spec = get_spec(name)
    if FF_MODEL[name] == "yolo_face":
        return yolo_probe(spec, path, **kw)
    return insightface_probe(spec, path, SIZE[name], **kw)


class Recording:
    """An engine that remembers every tensor it was fed (what the model saw)."""

    def __init__(self, engine):
        self.engine, self.seen = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def run(self, feeds):
        self.seen.append({k: np.array(v) if isinstance(v, np.ndarray) else v.cpu().numpy()
                          for k, v in feeds.items()})
        return self.engine.run(feeds)


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    d = tmp_path_factory.mktemp("det_probes")
    return {n: make_probe(n, d / f"{n}.onnx") for n in FF_MODEL}


def _engine(name, path):
    art = with_anchor_count(Artifact(get_spec(name), path), SIZE[name])
    return Recording(get_engine("ort-cpu")(art).load())


def _oracle(name, path, frame, angles=(0,)):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    seen = []

    def forward(x):  # forward_with_*: session.run(None, {'input': ...}), outputs by index
        seen.append(np.array(x))
        return sess.run(None, {"input": x})
    faces = ff.get_many_faces(frame, FF_MODEL[name], (SIZE[name], SIZE[name]), 0.5, forward,
                              list(angles))
    return faces, seen


def _frame(astronaut, w, h):
    import cv2
    return cv2.resize(astronaut, (w, h), interpolation=cv2.INTER_AREA)


def _compare(ours, theirs, atol=0.5):
    assert len(ours) == len(theirs) > 0
    theirs = sorted(theirs, key=lambda t: -t[1])
    for f, (box, score, lmk) in zip(ours, theirs):
        np.testing.assert_allclose(f.box, box, atol=atol)
        np.testing.assert_allclose(f.landmarks, lmk, atol=atol)
        assert abs(f.score - score) < 1e-5


# frames larger than the input (FaceFusion shrinks them, int() sizes) and smaller (kept as is,
# black padding); the 900x700 one makes int(900 * 640 / 900) and its float error matter
FRAMES = {"scrfd_2.5g": [(480, 400), (260, 240)], "retinaface_10g": [(500, 350), (300, 200)],
          "yoloface_8n": [(900, 700), (600, 500)]}


@pytest.mark.parametrize("name,wh", [(n, wh) for n, whs in FRAMES.items() for wh in whs])
def test_probe_matches_facefusion(name, wh, probes, astronaut):
    frame = _frame(astronaut, *wh)
    theirs, fed = _oracle(name, probes[name], frame)
    engine = _engine(name, probes[name])
    ours = Detector(engine, 0.5, 0.4, SIZE[name]).detect(frame)
    assert len(engine.seen) == len(fed) == 1
    mine = engine.seen[0]["input"]
    assert mine.shape == fed[0].shape == (1, 3, SIZE[name], SIZE[name])
    assert np.abs(mine - fed[0]).max() <= 1e-5
    _compare(ours, theirs)
    assert len(ours) == 3  # the planted duplicate is suppressed by NMS


@pytest.mark.parametrize("name", list(FF_MODEL))
def test_probe_angles_match_facefusion(name, probes, astronaut):
    """Angles 0/90/180/270 on a non-square frame: each planted face is found in every rotated
    view and mapped back as FaceFusion's ``detect_faces_by_angle`` maps it (its warpAffine
    rotation is np.rot90 shifted by one pixel, so this probe has planted outputs only). Two
    documented differences: fusionrt clips boxes to the frame, and it drops a face covering
    more than half of a better face from another view (``cross_view_keep``); FaceFusion keeps
    those."""
    import tempfile
    from pathlib import Path

    from fusionrt.pipeline.host.detect import CROSS_VIEW_COVER, overlaps
    frame = _frame(astronaut, *FRAMES[name][0])
    h, w = frame.shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        path = make_probe(name, Path(tmp) / "p.onnx", gain={"score": 0.0, "offset": 0.0})
        theirs, _ = _oracle(name, path, frame, (0, 90, 180, 270))
        engine = _engine(name, path)
        ours = Detector(engine, 0.5, 0.4, SIZE[name], angles=(0, 90, 180, 270)).detect(frame)
    assert len(engine.seen) == 4 and len(ours) > 3  # faces from several views
    boxes = np.stack([np.clip(b, 0, [w, h, w, h]) for b, _, _ in theirs])
    matched = []
    for f in ours:
        j = int(np.abs(boxes - f.box).max(1).argmin())
        _, score, lmk = theirs[j]
        np.testing.assert_allclose(f.box, boxes[j], atol=0.5)
        np.testing.assert_allclose(f.landmarks, lmk, atol=0.5)
        assert abs(f.score - score) < 1e-6
        matched.append(j)
    assert len(set(matched)) == len(ours)
    _, cover = overlaps(boxes)
    for j in set(range(len(theirs))) - set(matched):  # each one FaceFusion alone keeps
        assert any(cover[j, m] > CROSS_VIEW_COVER and theirs[m][1] >= theirs[j][1]
                   for m in matched)


@pytest.mark.parametrize("name", list(FF_MODEL))
def test_device_detector_matches_host(name, probes, astronaut):
    torch = pytest.importorskip("torch")
    from fusionrt.pipeline.device.detect import GpuDetector
    from fusionrt.pipeline.device.frames import Device
    frame = _frame(astronaut, *FRAMES[name][0])
    engine = _engine(name, probes[name])
    for angles in ((0,), (0, 90, 180, 270)):
        host = Detector(engine, 0.5, 0.4, SIZE[name], angles).detect(frame)
        gpu = GpuDetector(engine, Device("cpu"), 0.5, 0.4, SIZE[name], angles)
        x = torch.from_numpy(np.stack([frame, frame])).permute(0, 3, 1, 2).float()
        both = gpu.detect(x).faces(2)
        for dev in both:
            assert len(dev) == len(host) > 0
            for a, b in zip(sorted(dev, key=lambda f: tuple(f.box)),
                            sorted(host, key=lambda f: tuple(f.box))):
                np.testing.assert_allclose(a.box, b.box, atol=0.5)
                np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.5)


def test_insightface_anchors_are_facefusions():
    for size in (160, 320, 640):
        ours = insightface_anchors(size)
        start = 0
        for s in (8, 16, 32):
            n = size // s
            theirs = ff.create_static_anchors(s, 2, n, n)
            np.testing.assert_array_equal(ours[start:start + len(theirs), :2], theirs)
            assert (ours[start:start + len(theirs), 2] == s).all()
            start += len(theirs)
        assert start == len(ours) == sum(insightface_counts(size))


def test_specs_record_decoder_and_preprocess():
    assert get_spec("retinaface_mnet025").extra["decoder"] == "retinaface_priors"
    for name in ("scrfd_2.5g", "retinaface_10g"):
        spec = get_spec(name)
        assert spec.extra["decoder"] == "insightface_anchors" and spec.task == "detect"
        assert spec.preprocess.mean == (127.5,) * 3 and spec.preprocess.std == (128.0,) * 3
        assert spec.preprocess.channel_order == "BGR" and len(spec.outputs) == 9
        assert spec.url.endswith(f"models-3.0.0/{name}.onnx") and not spec.sha256_verified
    yolo = get_spec("yoloface_8n")
    assert yolo.extra["decoder"] == "yolo" and yolo.outputs[0].shape == (1, 20, 8400)
    assert yolo.preprocess.mean == (0.0,) * 3 and yolo.preprocess.std == (255.0,) * 3
    assert set(DECODERS) == {"retinaface_priors", "insightface_anchors", "yolo"}


def test_anchor_count_per_decoder():
    mnet = with_anchor_count(Artifact(get_spec("retinaface_mnet025")), 320).spec
    assert [t.shape for t in mnet.outputs] == [("N", 4200, 4), ("N", 4200, 2), ("N", 4200, 10)]
    scrfd = with_anchor_count(Artifact(get_spec("scrfd_2.5g")), 320).spec
    assert [t.shape for t in scrfd.outputs[:3]] == [(3200, 1), (800, 1), (200, 1)]
    assert scrfd.outputs[-1].shape == (200, 10)
    yolo = with_anchor_count(Artifact(get_spec("yoloface_8n")), 640).spec
    assert yolo.outputs[0].shape == (1, 20, 8400)


# -- bad input ------------------------------------------------------------------------------

def test_unknown_detector_lists_valid_ones():
    with pytest.raises(ModelError, match=r"detector 'nope' \| unknown; expected one of: "
                                         r"retinaface_mnet025, scrfd_2.5g, retinaface_10g, "
                                         r"yoloface_8n"):
        PipelineConfig(detector="nope").check()
    with pytest.raises(ModelError, match=r"detector 'inswapper_128' \| a 'swap' model"):
        PipelineConfig(detector="inswapper_128").check()


@pytest.mark.parametrize("angles", [(0, 45), (), (90, 90), ("90",)])
def test_bad_angles_refused(angles):
    with pytest.raises(InputError, match=r"detector angles .* \| expected distinct values out "
                                         r"of 0, 90, 180, 270"):
        PipelineConfig(detector_angles=angles).check()


@pytest.mark.parametrize("text", ["0,45", "x", "", "0,0"])
def test_bad_angles_flag_refused(text):
    from fusionrt.pipeline.commands import parse_angles
    with pytest.raises(InputError, match=r"--detector-angles .* \| expected distinct"):
        parse_angles(text)


def test_cli_flags_reach_the_settings(tmp_path):
    from fusionrt.cli import build_parser
    from fusionrt.pipeline.commands import settings_from_args
    args = build_parser().parse_args(["swap", "-s", "a.png", "-t", "b.png", "-o", "c.png",
                                      "--detector", "scrfd_2.5g",
                                      "--detector-angles", "0,90,180,270"])
    s = settings_from_args(args)
    assert s.detector == "scrfd_2.5g" and s.detector_angles == (0, 90, 180, 270)
    default = settings_from_args(build_parser().parse_args(
        ["swap", "-s", "a.png", "-t", "b.png", "-o", "c.png"]))
    assert default.detector == "retinaface_mnet025" and default.detector_angles == (0,)


def test_wrong_det_size_refused():
    with pytest.raises(InputError, match=r"det_size 320 \| detector 'yoloface_8n' takes a fixed "
                                         r"640x640 input; expected det_size 640"):
        with_anchor_count(Artifact(get_spec("yoloface_8n")), 320)
    with pytest.raises(InputError, match=r"det_size 300 \| detector 'scrfd_2.5g' needs a "
                                         r"multiple of 32"):
        with_anchor_count(Artifact(get_spec("scrfd_2.5g")), 300)


@pytest.mark.parametrize("name", list(FF_MODEL))
def test_wrong_output_shape_refused(name, tmp_path, astronaut):
    if FF_MODEL[name] == "yolo_face":
        path = yolo_probe(get_spec(name), tmp_path / "bad.onnx", count=8000)
        match = r"output 'output' \(index 0\) \| got shape \(1, 20, 8000\); expected " \
                r"\(1, 20, 8400\) for a 640x640 input"
    else:
        counts = list(insightface_counts(SIZE[name]))
        counts[0] -= 2
        path = insightface_probe(get_spec(name), tmp_path / "bad.onnx", SIZE[name], counts=counts)
        match = r"output 'score_8' \(index 0\) \| got shape \(3198, 1\); expected \(3200, 1\)"
    det = Detector(get_engine("ort-cpu")(Artifact(get_spec(name), path)).load(), 0.5, 0.4,
                   SIZE[name])
    with pytest.raises(ModelError, match=match):
        det.detect(_frame(astronaut, 300, 200))


def test_non_detector_spec_refused(probes):
    class Fake:
        spec = get_spec("inswapper_128")
    with pytest.raises(ModelError, match=r"model 'inswapper_128' \| decoder None \(task 'swap'\) "
                                         r"is not a detector decoder"):
        Detector(Fake())


# -- synthetic stand-ins ----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(FF_MODEL))
def test_stand_in_synthesizes_with_the_real_contract(name, tmp_path):
    pytest.importorskip("torch")
    import onnxruntime as ort
    from fusionrt.builders.synth import synthesize
    path = synthesize(name, tmp_path / f"{name}.onnx", width=0.0625)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = get_spec(name)
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == [t.name for t in spec.outputs]
    for size in ((320, 640) if name != "yoloface_8n" else (640,)):
        outs = sess.run(None, {"input": np.zeros((1, 3, size, size), np.float32)})
        want = [t.shape for t in with_anchor_count(Artifact(spec), size).spec.outputs]
        assert [o.shape for o in outs] == want
    assert "standin" in spec.extra and "stand-in" in spec.notes


def test_stand_in_cost_is_near_the_published_one():
    torch = pytest.importorskip("torch")
    from fusionrt.models.arch import build_arch, profile
    x = torch.zeros(1, 3, 640, 640)
    # published at 640x640 (SCRFD's at 640x480 x 4/3): GFLOP, M parameters
    for arch, (gflop, mparams) in {"scrfd_standin": (3.3, 0.82),
                                   "retinaface10g_standin": (13.3, 4.23),
                                   "yoloface_standin": (8.7, 3.2)}.items():
        params, flops = profile(build_arch(arch).eval(), x)
        assert abs(flops / 1e9 / gflop - 1) < 0.1 and abs(params / 1e6 / mparams - 1) < 0.1


def test_synthetic_detector_runs_through_the_plan(astronaut):
    pytest.importorskip("torch")
    from fusionrt.builders.synth import synthesize
    from fusionrt.models.store import ModelStore
    from fusionrt.pipeline.plan import plan_stages
    from fusionrt.pipeline.swapper import FaceSwapper
    store = ModelStore()
    if not store.synthetic_path("scrfd_2.5g").is_file():
        synthesize("scrfd_2.5g", store.synthetic_path("scrfd_2.5g"), width=0.0625)
    with pytest.raises(ModelError, match="scrfd_2.5g"):
        plan_stages(PipelineConfig(swapper="classic", detector="scrfd_2.5g"))
    cfg = PipelineConfig(swapper="classic", detector="scrfd_2.5g", allow_synthetic=True,
                         det_size=320)
    plan = plan_stages(cfg)
    det = plan.stages["detect"]
    assert det.model == "scrfd_2.5g" and det.synthetic
    assert det.artifact.spec.outputs[0].shape == (3200, 1)
    with FaceSwapper.open(cfg) as s:  # random weights: whatever it finds, it runs
        faces = s.kernels.detect([astronaut], [0])[0]
        assert all(f.box.shape == (4,) and f.landmarks.shape == (5, 2) for f in faces)


# -- any angle on real photos -------------------------------------------------------------------

def _rotated(p, k, w, h):
    """Points of a w x h frame → their place in np.rot90(frame, k) (pixel edges at integers)."""
    x, y = p[..., 0], p[..., 1]
    return np.stack({1: (y, w - x), 2: (w - x, h - y), 3: (h - y, x)}[k], -1)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_point_rotation_follows_np_rot90(k):
    img = np.zeros((7, 11), np.uint8)
    img[2, 8] = 1  # pixel (x=8, y=2): centre (8.5, 2.5)
    rot = np.rot90(img, k)
    y, x = np.argwhere(rot)[0]
    np.testing.assert_allclose(_rotated(np.array([8.5, 2.5]), k, 11, 7), [x + 0.5, y + 0.5])
    # and fusionrt maps the rotated point back upright
    np.testing.assert_allclose(unrotate_points(np.array([x + 0.5, y + 0.5]), 90 * k, 11, 7),
                               [8.5, 2.5])


def _canvas(img, k):
    """``img`` rotated by k·90° on a slightly larger grey canvas at offset (20, 24)."""
    rot = np.rot90(img, k)
    canvas = np.full((rot.shape[0] + 36, rot.shape[1] + 30, 3), 120, np.uint8)
    canvas[24:24 + rot.shape[0], 20:20 + rot.shape[1]] = rot
    return canvas


@pytest.mark.parametrize("name", ["astronaut", "grace"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotated_photo_landmarks_map_back(detector, request, name, k):
    img = request.getfixturevalue(name)
    h, w = img.shape[:2]
    canvas = _canvas(img, k)
    ch, cw = canvas.shape[:2]
    upright_face = detector.detect(img)[0]
    want = _rotated(upright_face.landmarks, k, w, h) + (20, 24)
    tol = 0.05 * (upright_face.box[2] - upright_face.box[0])  # 5% of the face width
    # today (angle 0 only): found or not, the landmarks are not where the face is
    plain = detector.detect(canvas)
    assert not plain or np.abs(plain[0].landmarks - want).max() > 2 * tol
    angled = Detector(detector.engine, angles=(0, 90, 180, 270)).detect(canvas)
    assert len(angled) >= 1 and angled[0].score > 0.99
    assert np.abs(angled[0].landmarks - want).max() < tol
    # exactly the upright canvas's detection, mapped: np.rot90(canvas, -k) is that frame
    back = detector.detect(np.ascontiguousarray(np.rot90(canvas, -k)))[0]
    np.testing.assert_allclose(angled[0].landmarks,
                               _rotated(back.landmarks, k, ch if k % 2 else cw,
                                        cw if k % 2 else ch), atol=0.5)


def test_rotated_swap_lands_on_the_face(astronaut, grace):
    """Classic swap, host path, angles on: only pixels around the (rotated) face change, and
    they are where the upright swap's changes land once rotated."""
    from fusionrt.pipeline.swapper import FaceSwapper
    h, w = astronaut.shape[:2]
    with FaceSwapper.open(PipelineConfig(swapper="classic",
                                         detector_angles=(0, 90, 180, 270))) as s:
        s.set_source(grace)
        upright, n = s.process_frame(astronaut)
        assert n == 1
        changed_up = np.abs(upright.astype(int) - astronaut).max(2) > 8
        face = s.kernels.detector.detect(astronaut)[0].box
        for k in (1, 2, 3):
            target = np.ascontiguousarray(np.rot90(astronaut, k))
            out, n = s.process_frame(target)
            assert n == 1
            changed = np.abs(out.astype(int) - target).max(2) > 8
            assert changed.sum() > 0.3 * changed_up.sum()
            corners = _rotated(face.reshape(2, 2), k, w, h)
            lo, hi = corners.min(0), corners.max(0)
            grow = 0.25 * (hi - lo)
            ys, xs = np.nonzero(changed)
            assert xs.min() >= lo[0] - grow[0] and xs.max() <= hi[0] + grow[0]
            assert ys.min() >= lo[1] - grow[1] and ys.max() <= hi[1] + grow[1]
            rot_up = np.rot90(changed_up, k)
            iou = (rot_up & changed).sum() / (rot_up | changed).sum()
            assert iou > 0.8
