"""The classic (weight-free) swapper on the real photos: astronaut's face into Grace Hopper,
and its parts (blend.py) on synthetic inputs with known answers."""

from __future__ import annotations

import logging
import math
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fusionrt.pipeline.host import blend
from fusionrt.pipeline.host.align import invert, warp_face
from fusionrt.pipeline.host.classic import ClassicSwapper, face_hull, face_oval_mask, uses_68
from fusionrt.pipeline.host.paste import color_transfer_lab, paste_back
from fusionrt.pipeline.host.swap import Swapper
from fusionrt.pipeline.types import Face, Identity


@pytest.fixture(scope="module")
def faces(detector, astronaut, grace):
    return detector.detect(astronaut)[0], detector.detect(grace)[0]


@pytest.fixture
def swapped(faces, astronaut, grace):
    src = Identity(faces[0], astronaut, "astronaut.png")
    target = faces[1]
    sw = ClassicSwapper()
    res = sw.swap(grace, target, src)
    return target, res, paste_back(grace, res.crop, res.matrix, mask=res.mask)


def _blend(frame, face, src_img, src_face, **kw):
    return ClassicSwapper(**kw).blend(frame, face, Identity(src_face, src_img, "src"))


def _paste(frame, res):
    return paste_back(frame, res.crop, res.matrix, mask=res.mask)


def _lab(img):
    return blend.to_lab(img)


# -- end to end on the photos ------------------------------------------------------------------

def test_face_region_changes(swapped, grace):
    face, res, out = swapped
    assert isinstance(ClassicSwapper(), Swapper)
    x1, y1, x2, y2 = face.box.astype(int)
    inner = np.s_[y1 + 30:y2 - 30, x1 + 30:x2 - 30]  # well inside the face
    diff = np.abs(out[inner].astype(int) - grace[inner].astype(int)).mean()
    assert diff > 15, diff  # a different face, not a colour tweak (measured 24.5)


def test_rest_of_frame_identical(swapped, grace):
    _, res, out = swapped
    h, w = grace.shape[:2]
    alpha = cv2.warpAffine(res.mask, invert(res.matrix), (w, h), flags=cv2.INTER_LINEAR)
    outside = alpha == 0
    assert outside.mean() > 0.85
    assert np.array_equal(out[outside], grace[outside])


def test_paste_writes_the_blend_and_nothing_else(faces, astronaut, grace):
    # a frame that cuts the face at its left edge (the ROI is clipped): paste_back must write
    # exactly the blend's pixels where its support is, and nothing anywhere else
    frame = np.ascontiguousarray(grace[40:600, 200:512])  # the face's left side cut off
    lm = faces[1].landmarks - (200, 40)
    face = Face(faces[1].box - (200, 40, 200, 40), faces[1].score, lm)
    sw = ClassicSwapper()
    b = sw.blend(frame, face, Identity(faces[0], astronaut))
    out = _paste(frame, sw.swap(frame, face, Identity(faces[0], astronaut)))
    x0, y0, x1, y1 = b.roi
    assert x0 == 0  # the ROI was clipped at the frame's edge
    full = np.zeros(frame.shape[:2], bool)
    full[y0:y1, x0:x1] = b.support
    assert 0.05 < full.mean() < 0.5
    assert np.array_equal(out[~full], frame[~full])
    assert np.array_equal(out[y0:y1, x0:x1][b.support], b.pixels[b.support])
    assert np.abs(out[full].astype(int) - frame[full]).mean() > 10


def test_result_is_still_one_face_in_place(swapped, detector):
    face, _, out = swapped
    found = detector.detect(out)
    assert len(found) == 1 and found[0].score > 0.9
    assert np.abs(found[0].box - face.box).max() < 20


def test_colour_matched_to_target_skin(faces, astronaut, grace):
    # the swapped face's skin (LAB mean) is the target's, not the source's
    b = _blend(grace, faces[1], astronaut, faces[0])
    x0, y0, x1, y1 = b.roi
    inner = b.alpha > 0.8
    tgt, out = _lab(grace[y0:y1, x0:x1]), _lab(b.pixels)
    m_t = tgt[blend.skin(tgt, inner)].mean(0)
    m_o = out[blend.skin(out, inner)].mean(0)
    src_crop = _lab(warp_face(astronaut, faces[0].landmarks, "ffhq_512", 256)[0])
    tgt_crop = _lab(warp_face(grace, faces[1].landmarks, "ffhq_512", 256)[0])
    sel = face_oval_mask(256) > 0.8
    assert np.abs(src_crop[sel].mean(0) - tgt_crop[sel].mean(0)).max() > 5  # something to match
    assert np.abs(m_o - m_t).max() < 2.5, (m_o, m_t)  # measured (0.5, 0.5, 1.6)


def test_v1_still_reachable_and_colour_matched(faces, astronaut, grace):
    # the previous method, unchanged: aligned 256² crop, LAB-matched inside the oval
    res = ClassicSwapper(style="v1").swap(grace, faces[1], Identity(faces[0], astronaut))
    assert res.crop.shape == (256, 256, 3) and res.mask.shape == (256, 256)
    target_crop = warp_face(grace, faces[1].landmarks, "ffhq_512", 256)[0]
    sel = res.mask > 0.5
    lab = lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2LAB)[sel].mean(0)  # noqa: E731
    assert np.abs(lab(res.crop) - lab(target_crop)).max() < 3


def test_unknown_style_refused():
    with pytest.raises(ValueError, match="classic style 'v3' | unknown; expected one of: v1, v2"):
        ClassicSwapper(style="v3")


def test_deterministic(faces, astronaut, grace):
    a = _blend(grace, faces[1], astronaut, faces[0])
    b = _blend(grace, faces[1], astronaut, faces[0])
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.alpha, b.alpha)


def test_oval_mask_is_feathered():
    m = face_oval_mask(256)
    assert m.max() == pytest.approx(1.0) and m[0].max() == 0 and m[:, 0].max() == 0
    assert 0 < ((m > 0) & (m < 1)).mean() < 0.2


# -- colour: statistics inside the face only ---------------------------------------------------

def test_coloured_background_does_not_shift_the_face(faces, astronaut, grace):
    # paint everything outside the target's face hull pure green (the falloff band too): the
    # swapped face must come out the same colour, since only skin inside the face is measured
    region = blend.fill_polygon(grace.shape[:2], face_hull(faces[1]), (0, 0)).astype(bool)
    green = grace.copy()
    green[~region] = (0, 255, 0)
    for kw, deep in (({"multiband": False}, 0.0), ({}, 0.5)):
        b0 = _blend(grace, faces[1], astronaut, faces[0], **kw)
        b1 = _blend(green, faces[1], astronaut, faces[0], **kw)
        assert b1.roi == b0.roi
        # the multi-band blend's coarse bands do see the target around the face (that is the
        # blend, not the colour statistics): compare where they are all 1, deep inside
        iod = float(np.hypot(*(faces[1].landmarks[1] - faces[1].landmarks[0])))
        dist = cv2.distanceTransform(b0.support.astype(np.uint8), cv2.DIST_L2, 5)
        inner = (b0.alpha > 0.8) & (dist > deep * iod)
        d = np.abs(_lab(b1.pixels)[inner].mean(0) - _lab(b0.pixels)[inner].mean(0))
        assert d.max() < 0.5, (kw, d)  # measured 0.0-0.2
    # the old unmasked way would have been pulled towards green: there was something to resist
    src = warp_face(astronaut, faces[0].landmarks, "ffhq_512", 256)[0]
    ref0 = warp_face(grace, faces[1].landmarks, "ffhq_512", 256)[0]
    ref1 = warp_face(green, faces[1].landmarks, "ffhq_512", 256)[0]
    naive = np.abs(_lab(color_transfer_lab(src, ref1)).mean((0, 1))
                   - _lab(color_transfer_lab(src, ref0)).mean((0, 1)))
    assert naive.max() > 10, naive


def _stress(img, face):
    """Darker, redder skin lit hard from the image left (as benchmarks/scripts/
    classic_quality.py's stress source)."""
    lab = _lab(img)
    x1, _, x2, _ = face.box
    x = np.arange(img.shape[1], dtype=np.float32)[None, :]
    lab[..., 0] *= 0.75 * (0.35 + 0.65 * np.clip((x2 - x) / (x2 - x1), 0, 1))
    lab[..., 1] = lab[..., 1] * 1.4 + 6
    lab[..., 2] = lab[..., 2] * 1.3 + 4
    return np.clip(np.rint(blend.from_lab(lab)), 0, 255).astype(np.uint8)


def test_other_skin_tone_and_side_light_do_not_carry_over(faces, astronaut, grace):
    src_img = _stress(astronaut, faces[0])
    b = _blend(grace, faces[1], src_img, faces[0])
    x0, y0, x1, y1 = b.roi
    tgt, out = _lab(grace[y0:y1, x0:x1]), _lab(b.pixels)
    inner = b.alpha > 0.8
    d = out[blend.skin(out, inner)].mean(0) - tgt[blend.skin(tgt, inner)].mean(0)
    assert np.abs(d).max() < 3, d  # the target's skin (measured |d| <= 1.6)
    # left vs right half of the inner face (the target's skin pixels, for all three images):
    # the source's side light is not carried over
    cx = int(round(faces[1].landmarks[2][0])) - x0
    cols = np.arange(inner.shape[1])[None, :]
    sk = blend.skin(tgt, inner)

    def side_gap(lab):
        return lab[sk & (cols < cx), 0].mean() - lab[sk & (cols >= cx), 0].mean()
    src_w = _lab(cv2.warpAffine(src_img, blend_matrix(faces, (x0, y0)), (x1 - x0, y1 - y0)))
    old = _lab(_paste(grace, ClassicSwapper(style="v1").swap(grace, faces[1],
                                                             Identity(faces[0], src_img))))
    assert side_gap(src_w) > 12  # the source is side-lit (measured 16.7 L)
    assert abs(side_gap(old[y0:y1, x0:x1]) - side_gap(tgt)) > 10  # v1 carried it (15.8)
    assert abs(side_gap(out) - side_gap(tgt)) < 4, (side_gap(out), side_gap(tgt))  # 2.1


def blend_matrix(faces, origin):
    from fusionrt.pipeline.host.align import estimate_similarity
    m = estimate_similarity(faces[0].landmarks, faces[1].landmarks)
    m[:, 2] -= origin
    return m


def test_skin_leaves_out_dark_frames_and_background():
    lab = np.zeros((40, 40, 3), np.float32)
    lab[...] = (65, 15, 18)
    lab[10:12, :] = (15, 2, 2)        # a glasses bar
    lab[:, 35:] = (50, -60, 50)       # green background
    inner = np.zeros((40, 40), bool)
    inner[2:38, 2:30] = True
    sk = blend.skin(lab, inner, np.ones((40, 40), bool))
    assert sk[20, 20] and not sk[11, 20] and not sk[20, 37]


# -- sharpness ---------------------------------------------------------------------------------

def test_sharpness_matching_restores_hf_energy(grace):
    g = cv2.cvtColor(grace[150:330, 180:350], cv2.COLOR_BGR2GRAY).astype(np.float32)
    w = np.ones_like(g)
    soft = cv2.GaussianBlur(g, (0, 0), 1.5)
    target = blend.hf_energy(g, w)
    assert blend.hf_energy(soft, w) < 0.5 * target
    out, info = blend.match_sharpness(soft, target, w)
    assert info.amount > 0 and info.blur == 0
    assert info.after > 1.5 * info.before and blend.hf_energy(out, w) == pytest.approx(info.after)
    # and the other way: a crisp source onto a soft target is softened, to the target's level
    out2, info2 = blend.match_sharpness(g, blend.hf_energy(soft, w), w, max_blur=3.0)
    assert info2.blur > 0 and info2.amount == 0
    assert info2.after == pytest.approx(info2.target, rel=0.05)
    again, _ = blend.match_sharpness(soft, target, w)
    assert np.array_equal(again, out)  # deterministic


def test_small_source_on_large_face_is_sharpened(faces, astronaut, grace):
    b = _blend(grace, faces[1], astronaut, faces[0])
    assert b.scale > 1.5  # the astronaut's face is ~half the size of Grace Hopper's
    assert b.sharpness.amount > 0 and b.sharpness.after > 1.5 * b.sharpness.before
    plain = _blend(grace, faces[1], astronaut, faces[0], sharpen=False)
    inner = (b.alpha > 0.8).astype(np.float32)
    gray = lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float32)  # noqa: E731
    assert blend.hf_energy(gray(b.pixels), inner) > 1.3 * blend.hf_energy(gray(plain.pixels), inner)


# -- multi-band blending -----------------------------------------------------------------------

def _disc_alpha(falloff=12.0):
    r = np.zeros((160, 180), np.uint8)
    cv2.circle(r, (90, 80), 50, 1, -1)
    return blend.region_alpha(r, falloff)


def test_multiband_equals_alpha_blend_on_flat_images():
    alpha = _disc_alpha()
    fg = np.full((160, 180, 3), (200, 90, 40), np.float32)
    bg = np.full((160, 180, 3), (30, 120, 250), np.float32)
    # no levels: the alpha blend itself
    plain = fg * alpha[..., None] + bg * (1 - alpha[..., None])
    assert np.abs(blend.multiband_blend(fg, bg, [alpha]) - plain).max() < 1e-3
    # flat images have no detail bands: only the low-pass one, blended with its own mask
    masks = blend.band_masks(alpha, 12.0, 3)
    out = blend.multiband_blend(fg, bg, masks)
    low = fg * masks[-1][..., None] + bg * (1 - masks[-1][..., None])
    assert np.abs(out - low).max() < 1e-2
    # one mask for every band: exactly the alpha blend, for any images
    rng = np.random.default_rng(0)
    f, b = rng.uniform(0, 255, (2, 160, 180, 3)).astype(np.float32)
    same = blend.multiband_blend(f, b, [alpha] * 4)
    assert np.abs(same - (f * alpha[..., None] + b * (1 - alpha[..., None]))).max() < 1e-2


def test_multiband_stays_inside_the_support_without_a_step():
    alpha = _disc_alpha()
    masks = blend.band_masks(alpha, 12.0, 4)
    support = alpha > 0
    assert masks[0] is alpha or np.array_equal(masks[0], alpha)
    assert all(np.array_equal(m > 0, support) or not (m[~support] > 0).any() for m in masks)
    rng = np.random.default_rng(0)
    bg = rng.uniform(0, 255, (160, 180, 3)).astype(np.float32)
    fg = bg + 60.0  # the same picture, brighter: the edit must fade in
    fg = np.where(support[..., None], fg, bg)
    out = blend.multiband_blend(fg, bg, masks)
    assert np.array_equal(out[~support], bg[~support])  # nothing leaks past the mask
    edit = (out - bg)[80, :, 0]
    assert np.abs(np.diff(edit)).max() < 60 / 12 * 1.6  # no step: at most ~the ramp's slope
    assert edit[90] == pytest.approx(60, abs=0.5)  # the middle gets all of it


# -- pose --------------------------------------------------------------------------------------

# A mean head (mm; x image right, y down, z towards the camera): eyes, nose tip, mouth corners.
HEAD = np.array([[-31.5, 0, 0], [31.5, 0, 0], [0, 37, 25], [-27, 66, -4], [27, 66, -4]])


def head_landmarks(yaw_deg, roll_deg=0.0, center=(266, 235), px_per_mm=1.3):
    t = math.radians(yaw_deg)
    rot = np.array([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])
    p = (HEAD @ rot.T)[:, :2] * px_per_mm
    r = math.radians(roll_deg)
    p = p @ np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]]).T
    return (p - p[:2].mean(0) + center).astype(np.float32)


@pytest.mark.parametrize("yaw", [0, 15, -30, 45, -60, 75])
@pytest.mark.parametrize("roll", [0, 25])
def test_yaw_from_5_points(yaw, roll):
    assert blend.estimate_yaw(head_landmarks(yaw, roll)) == pytest.approx(yaw, abs=5)


def test_frontal_photos_read_frontal(faces):
    for f in faces:
        assert abs(blend.estimate_yaw(f.landmarks)) < 10


def _face(lm):
    lm = np.asarray(lm, np.float32)
    x1, y1 = lm.min(0) - 40
    x2, y2 = lm.max(0) + 40
    return Face(np.float32([x1, y1, x2, y2]), 0.99, lm)


def test_profile_target_is_skipped_with_one_warning(faces, astronaut, grace, caplog):
    sw = ClassicSwapper()
    src = Identity(faces[0], astronaut)
    profile = _face(head_landmarks(60))
    with caplog.at_level(logging.WARNING, logger="fusionrt.pipeline.host.classic"):
        for _ in range(3):
            res = sw.swap(grace, profile, src)
            assert not res.mask.any()
            assert np.array_equal(_paste(grace, res), grace)  # frame unchanged
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "target face" in warnings[0].message
    assert re.search(r"turned (59|60|61)° \(limit 45°\)", warnings[0].message)
    assert sw.skipped == 3
    # a moderate turn is still swapped
    res = sw.swap(grace, _face(head_landmarks(25)), src)
    assert res.mask.any()


def test_profile_source_is_skipped(astronaut, grace, faces, caplog):
    sw = ClassicSwapper()
    src = Identity(_face(head_landmarks(-70)), astronaut)
    with caplog.at_level(logging.WARNING, logger="fusionrt.pipeline.host.classic"):
        res = sw.swap(grace, faces[1], src)
    assert not res.mask.any() and np.array_equal(_paste(grace, res), grace)
    assert "source face" in caplog.text
    assert ClassicSwapper(pose_limit=80).swap(grace, faces[1], src).mask.any()  # the knob


# -- mask shape --------------------------------------------------------------------------------

def test_mask_follows_the_5_landmarks(faces, astronaut, grace):
    b = _blend(grace, faces[1], astronaut, faces[0])
    x0, y0 = b.roi[:2]
    le, re, nose, lm, rm = faces[1].landmarks - (x0, y0)
    at = lambda p: b.alpha[int(round(p[1])), int(round(p[0]))]  # noqa: E731
    assert min(at(le), at(re), at(nose), at(lm), at(rm)) == 1.0  # all features inside
    iod = float(np.hypot(*(re - le)))
    mid = (le + re) / 2
    assert at(mid - (0, 0.3 * iod)) > 0.95  # the brows are in
    assert at(mid - (0, 1.0 * iod)) == 0.0  # the hairline / cap is not
    assert at(le - (0.9 * iod, 0)) == 0.0   # nor the ear side
    ramp = b.alpha[int(round(nose[1])), :]
    band = ((ramp > 0) & (ramp < 1)).sum() / 2
    assert 0.1 * iod < band < 0.35 * iod  # falloff sized by the inter-ocular distance (0.2)


def test_68_points_shape_the_mask_when_present(faces, astronaut, grace):
    # a narrow synthetic jaw line: the mask must follow it, not the 5-point estimate
    le, re = faces[1].landmarks[:2]
    c, iod = (le + re) / 2, float(np.hypot(*(re - le)))
    ang = np.linspace(math.pi * 1.0, 0.0, 17)
    jaw = np.stack([c[0] + 0.6 * iod * np.cos(ang), c[1] + 0.3 * iod + 1.2 * iod * np.sin(ang)], 1)
    brows = np.stack([np.linspace(c[0] - 0.6 * iod, c[0] + 0.6 * iod, 10),
                      np.full(10, c[1] - 0.3 * iod)], 1)
    rest = np.repeat(c[None], 41, 0)
    lm68 = np.concatenate([jaw, brows, rest]).astype(np.float32)
    f68 = SimpleNamespace(box=faces[1].box, score=faces[1].score,
                          landmarks=faces[1].landmarks, landmarks68=lm68)
    assert np.array_equal(face_hull(f68), blend.hull_from_68(lm68, faces[1].landmarks))
    b5 = _blend(grace, faces[1], astronaut, faces[0])
    b68 = _blend(grace, f68, astronaut, faces[0])
    x0, y0 = b68.roi[:2]
    cols = np.nonzero(b68.support.any(0))[0] + x0
    assert cols.min() >= c[0] - 0.6 * iod - 1 and cols.max() <= c[0] + 0.6 * iod + 1
    assert b68.support.sum() < 0.8 * b5.support.sum()



def test_implausible_68_points_fall_back_to_5(faces):
    rng = np.random.default_rng(0)
    f = faces[1]
    junk = SimpleNamespace(box=f.box, score=f.score, landmarks=f.landmarks,
                           landmarks68=rng.uniform(0, 20, (68, 2)).astype(np.float32))
    assert not uses_68(junk)
    assert np.array_equal(face_hull(junk), blend.hull_from_5(f.landmarks))
    assert not uses_68(SimpleNamespace(landmarks=f.landmarks, landmarks68=np.zeros((5, 2))))
