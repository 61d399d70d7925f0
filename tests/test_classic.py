"""The classic (weight-free) swapper on the real photos: astronaut's face into Grace Hopper."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fusionrt.pipeline.host.align import invert
from fusionrt.pipeline.host.classic import ClassicSwapper, face_oval_mask
from fusionrt.pipeline.host.paste import paste_back
from fusionrt.pipeline.host.swap import Swapper
from fusionrt.pipeline.types import Identity


@pytest.fixture
def swapped(detector, astronaut, grace):
    src = Identity(detector.detect(astronaut)[0], astronaut, "astronaut.png")
    target = detector.detect(grace)[0]
    sw = ClassicSwapper()
    res = sw.swap(grace, target, src)
    return target, res, paste_back(grace, res.crop, res.matrix, mask=res.mask)


def test_face_region_changes(swapped, grace):
    face, res, out = swapped
    assert isinstance(ClassicSwapper(), Swapper)
    x1, y1, x2, y2 = face.box.astype(int)
    inner = np.s_[y1 + 30:y2 - 30, x1 + 30:x2 - 30]  # well inside the face oval
    diff = np.abs(out[inner].astype(int) - grace[inner].astype(int)).mean()
    assert diff > 15, diff  # a different face, not a colour tweak (measured 27.6)


def test_rest_of_frame_identical(swapped, grace):
    _, res, out = swapped
    h, w = grace.shape[:2]
    alpha = cv2.warpAffine(res.mask, invert(res.matrix), (w, h), flags=cv2.INTER_LINEAR)
    outside = alpha == 0
    assert outside.mean() > 0.85
    assert np.array_equal(out[outside], grace[outside])


def test_result_is_still_one_face_in_place(swapped, detector):
    face, _, out = swapped
    found = detector.detect(out)
    assert len(found) == 1 and found[0].score > 0.9
    assert np.abs(found[0].box - face.box).max() < 20


def test_colour_matched_to_target(swapped, grace, detector, astronaut):
    # LAB mean inside the oval follows the target's skin, not the source's
    _, res, _ = swapped
    from fusionrt.pipeline.host.align import warp_face
    target_crop = warp_face(grace, detector.detect(grace)[0].landmarks, "ffhq_512", 256)[0]
    src_crop = warp_face(astronaut, detector.detect(astronaut)[0].landmarks, "ffhq_512", 256)[0]
    sel = res.mask > 0.5
    lab = lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2LAB)[sel].mean(0)  # noqa: E731
    assert np.abs(lab(res.crop) - lab(target_crop)).max() < 3
    assert np.abs(lab(src_crop) - lab(target_crop)).max() > 5  # there was something to match


def test_oval_mask_is_feathered():
    m = face_oval_mask(256)
    assert m.max() == pytest.approx(1.0) and m[0].max() == 0 and m[:, 0].max() == 0
    assert 0 < ((m > 0) & (m < 1)).mean() < 0.2
