"""FaceFusion's face masks through fusionrt against a cited copy of FaceFusion 3.8.1's mask
functions (``tests/facefusion_oracle_mask.py``): box, occlusion (xseg), area (68 landmarks) and
region (bisenet), through probe ONNX models with the real I/O contracts (xseg: a known linear
map of the channels; bisenet: logits that plant known classes per image block). Host masks equal
the oracle's (<= 1/255), device masks (CPU torch) the host's (<= 2/255); the models see
FaceFusion's tensors; one engine call serves K crops.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import facefusion_oracle_mask as ff  # tests/facefusion_oracle_mask.py
from fusionrt.engines.registry import get_engine
from fusionrt.errors import InputError, ModelError
from fusionrt.models.spec import Artifact
from fusionrt.models.zoo import ZOO, get_spec
from fusionrt.pipeline.host import masks as hm
from onnx_probes import save_probe as _save, value_info as _vi  # tests/onnx_probes.py

HOST_TOL = 1 / 255
DEVICE_TOL = 2 / 255
RNG = np.random.default_rng(38)
XSEG_MAPS = {"xseg_1": ((1.3, 1.1, 0.8), -0.9), "xseg_2": ((1.2, 0.5, 0.6), -0.6),
             "xseg_3": ((0.6, 0.6, 1.2), -0.6)}
# bisenet probe: one class per 128x128 block at 512 (64x64 on a 256 crop), in and out of regions
GROUPS = np.array([[1, 0, 10, 17], [4, 11, 7, 2], [13, 16, 5, 8], [12, 3, 18, 6]])
PLANTED = np.kron(GROUPS, np.ones((4, 4), np.int64))  # (16, 16): nearest-upsampled x32


# -- probe models -------------------------------------------------------------------------------





def xseg_probe(spec, path):
    """input (N, 256, 256, 3) NHWC -> input @ w + b, (N, 256, 256, 1): a known map of the
    channels (BGR order matters), reaching outside [0, 1] so the clip matters."""
    w, b = XSEG_MAPS[spec.name]
    out = spec.outputs[0].name
    nodes = [helper.make_node("MatMul", ["input", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], [out])]
    return _save(nodes, [_vi("input", ("N", 256, 256, 3))], [_vi(out, ("N", 256, 256, 1))],
                 {"w": np.array(w, np.float32).reshape(3, 1), "b": np.array([b], np.float32)},
                 path)


def bisenet_probe(spec, path):
    """input (N, 3, 512, 512) -> (N, 19, 512, 512): 10 on the planted class of each 32x32
    block (nearest upsampling of a 16x16 map) + 0.1 x a 1x1 conv of the input (< the margin)."""
    planted = np.zeros((1, 19, 16, 16), np.float32)
    np.put_along_axis(planted, PLANTED[None, None], 10.0, axis=1)
    out = spec.outputs[0].name
    nodes = [helper.make_node("Resize", ["planted", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Conv", ["input", "w"], ["c"]),
             helper.make_node("Add", ["up", "c"], [out])]
    w = (RNG.standard_normal((19, 3, 1, 1)) * 0.1).astype(np.float32)
    return _save(nodes, [_vi("input", ("N", 3, 512, 512))], [_vi(out, ("N", 19, 512, 512))],
                 {"planted": planted, "w": w,
                  "scales": np.array([1, 1, 32, 32], np.float32)}, path)


def _forward(engine):
    """FaceFusion's forward_*: output 0, batch item 0."""
    return lambda x, *_: np.asarray(engine.run({"input": x})[engine.outputs[0].name])[0]


def _count_calls(engine):
    calls = []
    run = engine.run

    def counted(feeds):
        calls.append({k: np.array(v.numpy() if hasattr(v, "numpy") else v)
                      for k, v in feeds.items()})
        return run(feeds)
    engine.run = counted
    return calls


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    d = tmp_path_factory.mktemp("mask_probes")
    out = {}
    for name in ("xseg_1", "xseg_2", "xseg_3", "bisenet_resnet_34"):
        spec = get_spec(name)
        make = xseg_probe if spec.task == "occlude" else bisenet_probe
        out[name] = get_engine("ort-cpu")(Artifact(spec, make(spec, d / f"{name}.onnx"))).load()
    yield out
    for e in out.values():
        e.close()


def crops_of(image, size, k=3):
    """K real-photo crops (BGR uint8, size x size), from different places of the image."""
    h, w = image.shape[:2]
    side = min(h, w) // 2
    return [cv2.resize(np.ascontiguousarray(image[y:y + side, x:x + side]), (size, size),
                       interpolation=cv2.INTER_AREA)
            for x, y in [(0, 0), (w - side, h - side), ((w - side) // 2, (h - side) // 3)][:k]]


def face68(size, shift=(0.0, 0.0), scale=1.0):
    """A plausible 68-point layout (iBUG order) in a size x size crop, fractional coordinates."""
    t = np.linspace(np.pi * 0.05, np.pi * 0.95, 17)
    jaw = np.stack([0.5 - 0.38 * np.cos(t), 0.45 + 0.45 * np.sin(t)], 1)
    arch = np.sin(np.linspace(0, 2 * np.pi, 10)) ** 2
    brows = np.stack([np.linspace(0.2, 0.8, 10), 0.33 - 0.04 * arch], 1)
    nose = np.concatenate([np.stack([np.full(4, 0.5), np.linspace(0.42, 0.6, 4)], 1),
                           np.stack([np.linspace(0.42, 0.58, 5), np.full(5, 0.64)], 1)])
    a = np.linspace(0, 2 * np.pi, 7)[:6]
    eyes = np.concatenate([np.stack([c + 0.06 * np.cos(a), 0.42 + 0.025 * np.sin(a)], 1)
                           for c in (0.35, 0.65)])
    b = np.linspace(0, 2 * np.pi, 13)[:12]
    outer = np.stack([0.5 + 0.13 * np.cos(b), 0.77 + 0.06 * np.sin(b)], 1)
    c = np.linspace(0, 2 * np.pi, 9)[:8]
    inner = np.stack([0.5 + 0.09 * np.cos(c), 0.77 + 0.025 * np.sin(c)], 1)
    pts = np.concatenate([jaw, brows, nose, eyes, outer, inner])
    assert pts.shape == (68, 2)
    return ((pts - 0.5) * scale + 0.5) * size + np.asarray(shift) + 0.37


# -- zoo ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["xseg_1", "xseg_2", "xseg_3", "bisenet_resnet_18",
                                  "bisenet_resnet_34"])
def test_specs_carry_facefusions_contracts(name):
    spec = ZOO[name]
    assert spec.inputs[0].name == "input" and not spec.sha256_verified and spec.sha256 is None
    assert "stand-in" in spec.extra["standin"] and "stand-in" in spec.notes
    release = {"xseg_3": "models-3.2.0", "bisenet_resnet_34": "models-3.0.0"}.get(name,
                                                                                "models-3.1.0")
    assert spec.url.endswith(f"/{release}/{name}.onnx")
    if name.startswith("xseg"):
        assert spec.task == "occlude" and spec.inputs[0].shape == ("N", 256, 256, 3)
        assert spec.outputs[0].shape == ("N", 256, 256, 1) and spec.preprocess.layout == "NHWC"
        assert spec.preprocess.channel_order == "BGR" and spec.license.startswith("GPL-3.0")
    else:
        assert spec.task == "parse" and spec.inputs[0].shape == ("N", 3, 512, 512)
        assert spec.outputs[0].shape == ("N", 19, 512, 512) and spec.license.startswith("MIT")
        assert spec.preprocess.channel_order == "RGB"
        np.testing.assert_allclose(np.array(spec.preprocess.mean) / 255, [0.485, 0.456, 0.406])
        np.testing.assert_allclose(np.array(spec.preprocess.std) / 255, [0.229, 0.224, 0.225])


def test_choices_are_facefusions():
    assert hm.REGIONS == ff.face_mask_region_set
    assert {k: list(v) for k, v in hm.AREAS.items()} == ff.face_mask_area_set
    assert hm.MASK_TYPES == ("box", "occlusion", "area", "region")
    assert hm.occluder_models("many") == ("xseg_1", "xseg_2", "xseg_3")
    assert hm.occluder_models("xseg_2") == ("xseg_2",)
    assert hm.normalize_padding(10) == (10, 10, 10, 10)
    assert hm.normalize_padding([1, 2]) == (1, 2, 1, 2)
    assert hm.normalize_padding([1, 2, 3]) == (1, 2, 3, 2)


# -- box ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [128, 256, 512])
@pytest.mark.parametrize("blur,padding", [(0.3, (0, 0, 0, 0)), (0.0, (0, 0, 0, 0)),
                                          (1.0, (0, 0, 0, 0)), (0.3, (10, 20, 30, 40))])
def test_box_mask_matches_facefusion(size, blur, padding):
    want = ff.create_box_mask(np.zeros((size, size, 3), np.uint8), blur, padding)
    got = hm.box_mask(size, blur, padding)
    assert got.shape == (size, size) and got.dtype == np.float32
    assert np.abs(got - want).max() <= HOST_TOL


def test_box_padding_cuts_each_side():
    m = hm.box_mask(200, 0.0, (10, 20, 30, 40))  # no blur: a hard box
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max() + 1) == (20, 200 - 60)     # top 10 %, bottom 30 %
    assert (cols.min(), cols.max() + 1) == (80, 200 - 40)     # left 40 %, right 20 %
    assert m[100, 120] == 1.0


# -- occlusion ----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["xseg_1", "many"])
@pytest.mark.parametrize("size", [128, 256])
def test_occlusion_matches_facefusion(probes, astronaut, model, size):
    names = hm.occluder_models(model)
    crops = crops_of(astronaut, size)
    fwd = {n: _forward(probes[n]) for n in names}
    want = np.stack([ff.create_occlusion_mask(c, names, lambda x, n: fwd[n](x)) for c in crops])
    got = hm.Occluder([probes[n] for n in names]).masks(crops)
    assert got.shape == (3, size, size) and got.dtype == np.float32
    assert np.abs(got - want).max() <= HOST_TOL
    assert (want > 0.9).mean() > 0.05 and (want < 0.1).mean() > 0.05  # a real mask, not flat


def test_occluder_one_call_for_k_crops_and_facefusions_tensor(probes, astronaut):
    crops = crops_of(astronaut, 128)
    calls = _count_calls(probes["xseg_2"])
    try:
        hm.Occluder(probes["xseg_2"]).masks(crops)
    finally:
        del probes["xseg_2"].run
    assert len(calls) == 1 and calls[0]["input"].shape == (3, 256, 256, 3)
    for k, c in enumerate(crops):  # create_occlusion_mask's prepare_vision_frame
        want = np.expand_dims(cv2.resize(c, (256, 256)), 0).astype(np.float32) / 255.0
        assert np.array_equal(calls[0]["input"][k:k + 1], want)


# -- region -------------------------------------------------------------------------------------

@pytest.mark.parametrize("regions", [tuple(hm.REGIONS), ("skin", "nose", "lower-lip")])
def test_region_matches_facefusion(probes, astronaut, regions):
    crops = crops_of(astronaut, 256)
    fwd = _forward(probes["bisenet_resnet_34"])
    want = np.stack([ff.create_region_mask(c, regions, "bisenet_resnet_34", fwd) for c in crops])
    got = hm.FaceParser(probes["bisenet_resnet_34"], regions).masks(crops)
    assert got.shape == (3, 256, 256) and np.abs(got - want).max() <= HOST_TOL
    assert (want > 0.9).mean() > 0.05 and (want < 0.1).mean() > 0.05
    # the planted classes decide: each block's middle is 1 for a chosen class, else 0
    ids = [hm.REGIONS[r] for r in regions]
    centres = got[:, 32::64, 32::64]
    np.testing.assert_allclose(centres, np.broadcast_to(np.isin(GROUPS, ids), centres.shape),
                               atol=1e-3)


def test_parser_one_call_and_facefusions_tensor(probes, astronaut):
    crops = crops_of(astronaut, 128)
    engine = probes["bisenet_resnet_34"]
    seen = []
    calls = _count_calls(engine)
    try:
        hm.FaceParser(engine).masks(crops)
    finally:
        del engine.run
    ff.create_region_mask(crops[1], ["skin"], "bisenet_resnet_34", lambda x: seen.append(x)
                          or np.zeros((19, 512, 512), np.float32))
    assert len(calls) == 1 and calls[0]["input"].shape == (3, 3, 512, 512)
    np.testing.assert_allclose(calls[0]["input"][1:2], seen[0], rtol=0, atol=1e-6)


# -- area ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("areas", [("upper-face",), ("lower-face",), ("mouth",),
                                   tuple(hm.AREAS)])
@pytest.mark.parametrize("size", [128, 256])
def test_area_mask_matches_facefusion(areas, size):
    lm = face68(size)
    want = ff.create_area_mask(np.zeros((size, size, 3), np.uint8), lm, areas)
    got = hm.area_mask(size, lm, areas)
    assert got.shape == (size, size) and np.abs(got - want).max() <= HOST_TOL


def test_area_mask_covers_its_area_only():
    lm = face68(256)
    mouth = hm.area_mask(256, lm, "mouth")
    mx, my = lm[48:60].mean(0).astype(int)
    assert mouth[my, mx] > 0.95
    assert mouth[int(lm[37, 1]), int(lm[37, 0])] == 0.0  # an eye is outside the mouth
    upper = hm.area_mask(256, lm, "upper-face")
    assert upper[int(lm[37, 1]), int(lm[37, 0])] > 0.95
    assert upper[my, mx] == 0.0


def test_combine_is_the_minimum():
    a, b = RNG.random((2, 8, 8)).astype(np.float32)
    got = hm.combine([a, b * 1.5, a + 0.2])
    assert np.array_equal(got, ff.combine_masks([a, b * 1.5, a + 0.2]))
    assert np.array_equal(got, np.minimum(a, np.minimum(b * 1.5, 1.0)).clip(0, 1))


# -- bad inputs: one line each -------------------------------------------------------------------

def _one_line(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


def test_unknown_region_lists_the_valid_ones(probes):
    with pytest.raises(InputError) as e:
        hm.FaceParser(probes["bisenet_resnet_34"], ["skin", "hair"])
    _one_line(e, "'hair' is unknown", "lower-lip")


def test_unknown_area_lists_the_valid_ones():
    with pytest.raises(InputError) as e:
        hm.area_mask(256, face68(256), ["forehead"])
    _one_line(e, "'forehead' is unknown", "upper-face, lower-face, mouth")


def test_unknown_mask_type_lists_the_valid_ones():
    with pytest.raises(InputError) as e:
        hm.check_mask_types(["box", "hair"])
    _one_line(e, "'hair' is unknown", "box, occlusion, area, region")
    assert hm.check_mask_types("box") == ("box",)


def test_unknown_occluder_model():
    with pytest.raises(InputError) as e:
        hm.occluder_models("xseg_9")
    _one_line(e, "many, xseg_1, xseg_2, xseg_3")


@pytest.mark.parametrize("bad", [np.zeros((5, 2)), np.zeros((68, 3)), np.full((68, 2), np.nan)])
def test_bad_landmarks(bad):
    with pytest.raises(InputError) as e:
        hm.area_mask(256, bad)
    _one_line(e, "landmarks68", "(68, 2)")


@pytest.mark.parametrize("padding", [(0, 0, 0, 101), (1, 2, 3, 4, 5), (-1,)])
def test_bad_padding(padding):
    with pytest.raises(InputError) as e:
        hm.box_mask(128, 0.3, padding)
    _one_line(e, "mask padding", "0..100")


def test_bad_blur():
    with pytest.raises(InputError) as e:
        hm.box_mask(128, 1.5)
    _one_line(e, "mask blur", "0 <= blur <= 1")


def test_wrong_model_for_the_stage(probes):
    with pytest.raises(ModelError) as e:
        hm.Occluder(probes["bisenet_resnet_34"])
    _one_line(e, "bisenet_resnet_34", "task 'occlude'")


def test_crops_of_different_sizes(probes, astronaut):
    with pytest.raises(InputError) as e:
        hm.Occluder(probes["xseg_1"]).masks(crops_of(astronaut, 128, 1)
                                            + crops_of(astronaut, 64, 1))
    _one_line(e, "mask crops", "equal square")


def test_empty_regions_or_masks():
    with pytest.raises(InputError) as e:
        hm.check_regions([])
    _one_line(e, "none given")
    with pytest.raises(InputError) as e:
        hm.combine([])
    _one_line(e, "none to combine")


# -- device (CPU torch) ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dm():
    pytest.importorskip("torch")
    from fusionrt.pipeline.device import masks
    return masks


def _tensor(crops):
    import torch
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("size,blur,padding", [(128, 0.3, (0, 0, 0, 0)), (256, 1.0, (0, 0, 0, 0)),
                                               (256, 0.3, (10, 20, 30, 40)), (64, 0.0, (5,))])
def test_device_box_mask(dm, size, blur, padding):
    got = dm.box_mask_tensor(size, blur, padding).numpy()
    assert np.abs(got - hm.box_mask(size, blur, padding)).max() <= 1e-5


@pytest.mark.parametrize("shape,sigma", [((3, 64, 64), 5), ((2, 20, 31), 5), ((1, 128, 128), 9.5),
                                         ((1, 256, 256), 19.0)])
def test_device_blur_is_opencvs(dm, shape, sigma):
    import torch
    x = RNG.random(shape).astype(np.float32)
    got = dm.gaussian_blur(torch.from_numpy(x), sigma).numpy()
    want = np.stack([cv2.GaussianBlur(m, (0, 0), sigma) for m in x])
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("src,dst", [(128, 256), (256, 512), (512, 256), (384, 256), (100, 128)])
def test_device_resize_is_opencvs(dm, src, dst):
    import torch
    x = (RNG.random((src, src, 3)) * 255).astype(np.float32)
    got = dm.resize(torch.from_numpy(x).permute(2, 0, 1)[None], (dst, dst))[0].permute(1, 2, 0)
    assert np.abs(got.numpy() - cv2.resize(x, (dst, dst))).max() <= 1e-3


def test_device_fill_is_opencvs_fill(dm):
    """Random hulls inside the crop, across its border, and degenerate ones: pixel-exact."""
    import torch
    rng = np.random.default_rng(5)
    sets = []
    for i in range(40):
        c, r = rng.uniform(-10, 74, 2), rng.uniform(3, 50)
        q = (c + rng.normal(size=(21, 2)) * r * rng.uniform(0.3, 1, 2)).astype(np.int32)
        q[:i % 4] = q[-1]  # repeated points
        sets.append(q)
    sets += [np.full((21, 2), 9, np.int32),  # one point; two points (a line)
             np.repeat([[3, 3], [40, 20]], [11, 10], 0).astype(np.int32)]
    pts = np.stack(sets)
    got = dm.fill_convex_hulls(torch.from_numpy(pts), 64).numpy()
    for k, q in enumerate(pts):
        want = np.zeros((64, 64), np.float32)
        cv2.fillConvexPoly(want, cv2.convexHull(q), 1.0)
        assert np.array_equal(got[k], want), k


def test_device_area_masks(dm):
    import torch
    lms = np.stack([face68(128), face68(128, shift=(30, -20), scale=1.3)])  # 2nd leaves the crop
    for areas in [("mouth",), tuple(hm.AREAS)]:
        got = dm.area_masks(128, torch.from_numpy(lms), areas).numpy()
        want = np.stack([hm.area_mask(128, lm, areas) for lm in lms])
        assert got.shape == (2, 128, 128) and np.abs(got - want).max() <= 1e-5


def test_device_occluder_matches_host(dm, probes, astronaut):
    crops = crops_of(astronaut, 128)
    engines = [probes[n] for n in hm.occluder_models("many")]
    calls = _count_calls(engines[0])
    try:
        got = dm.DeviceOccluder(engines).masks(_tensor(crops)).numpy()
    finally:
        del engines[0].run
    assert len(calls) == 1 and calls[0]["input"].shape == (3, 256, 256, 3)
    assert np.abs(got - hm.Occluder(engines).masks(crops)).max() <= DEVICE_TOL


def test_device_parser_matches_host(dm, probes, astronaut):
    crops = crops_of(astronaut, 256)
    engine = probes["bisenet_resnet_34"]
    regions = ("skin", "mouth", "nose", "glasses")
    host = hm.FaceParser(engine, regions)
    dev = dm.DeviceFaceParser(engine, regions)
    # float crops (FaceFusion's swapped crop is float): the same resize, the same tensor
    np.testing.assert_allclose(dev.prepare(_tensor(crops)).numpy(),
                               host.prepare([c.astype(np.float32) for c in crops]),
                               rtol=0, atol=1e-4)
    assert np.abs(dev.masks(_tensor(crops)).numpy() - host.masks(crops)).max() <= DEVICE_TOL


def test_device_combine_and_bad_inputs(dm):
    import torch
    a, b = torch.rand(3, 8, 8), torch.rand(8, 8)
    assert torch.equal(dm.combine([a, b]), torch.minimum(a, b).clamp(0, 1))
    with pytest.raises(InputError) as e:
        dm.area_masks(64, torch.zeros(2, 5, 2))
    _one_line(e, "landmarks68", "(K, 68, 2)")
    with pytest.raises(InputError) as e:
        dm.area_masks(64, torch.zeros(1, 68, 2), ["chin"])
    _one_line(e, "'chin' is unknown")
    with pytest.raises(InputError) as e:
        dm.combine([torch.rand(3, 8, 8), torch.rand(2, 8, 8)])
    _one_line(e, "masks", "one shape")


def test_device_to_crop_is_cv2_transform(dm):
    import torch
    pts, m = RNG.random((2, 68, 2)) * 300, RNG.random((2, 2, 3))
    got = dm.to_crop(torch.from_numpy(pts), torch.from_numpy(m)).numpy()
    assert np.allclose(got, np.stack([hm.to_crop(p, mm) for p, mm in zip(pts, m)]))


def test_paste_takes_a_mask_per_face(dm):
    import torch
    from fusionrt.pipeline.device.paste import paste_faces
    frames = torch.from_numpy(RNG.integers(0, 256, (2, 3, 48, 48)).astype(np.float32))
    crops = torch.from_numpy(RNG.integers(0, 256, (3, 3, 16, 16)).astype(np.float32))
    mats = torch.tensor([[[1.0, 0, -4], [0, 1.0, -6]], [[1.0, 0, -26], [0, 1.0, -20]],
                         [[0.8, 0, -5], [0, 0.8, -9]]], dtype=torch.float64)
    mask = dm.box_mask_tensor(16, 0.3)
    shared, each = frames.clone(), frames.clone()
    paste_faces(shared, crops, mats, [0, 0, 1], mask)
    paste_faces(each, crops, mats, [0, 0, 1], mask.expand(3, 16, 16))
    assert torch.equal(shared, each) and not torch.equal(shared, frames)
    per_face = torch.stack([mask, torch.zeros(16, 16), mask])  # face 1 masked out
    got, want = frames.clone(), frames.clone()
    paste_faces(got, crops, mats, [0, 0, 1], per_face)
    paste_faces(want, crops[[0, 2]], mats[[0, 2]], [0, 1], mask)
    assert torch.equal(got, want)


# -- stand-ins ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,width", [("xseg_1", 0.0625), ("bisenet_resnet_18", 0.0625)])
def test_standins_synthesize_and_run(name, width, tmp_path, astronaut):
    pytest.importorskip("torch")
    from fusionrt.builders.synth import synthesize
    spec = get_spec(name)
    path = synthesize(name, tmp_path / f"{name}.onnx", seed=0, width=width)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert "stand-in" in meta["fusionrt.standin"]
    with get_engine("ort-cpu")(Artifact(spec, path, synthetic=True)) as engine:
        crops = crops_of(astronaut, 128, 2)
        stage = hm.Occluder(engine) if spec.task == "occlude" else hm.FaceParser(engine)
        m = stage.masks(crops)
    assert m.shape == (2, 128, 128) and m.dtype == np.float32
    assert 0.0 <= m.min() and m.max() <= 1.0 and np.isfinite(m).all()
