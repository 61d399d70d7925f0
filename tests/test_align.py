"""Alignment: templates, the similarity fit and the crop/inverse round trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fusionrt.errors import InputError
from fusionrt.pipeline.host.align import (ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_128, TEMPLATES,
                                     estimate_matrix, estimate_similarity, get_template, invert,
                                     transform_points, warp_face)


def _similarity(angle_deg, scale, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                     [scale * np.sin(a), scale * np.cos(a), ty]])


def test_templates_follow_insightface():
    # estimate_norm(lmk, 128): ratio 1, x shifted by 8
    np.testing.assert_allclose(ARCFACE_TEMPLATE_128.points,
                               ARCFACE_TEMPLATE_112.points + [8, 0], atol=1e-4)
    np.testing.assert_allclose(TEMPLATES["ffhq_512"].at(256)[0], [96.491, 119.974], atol=1e-2)
    np.testing.assert_allclose(TEMPLATES["arcface_112_v1"].points[0], [39.73, 51.138], atol=1e-4)
    with pytest.raises(ValueError, match="template 'nope' | unknown"):
        get_template("nope")


def test_exact_similarity_is_recovered():
    m_true = _similarity(17.0, 2.3, 40.0, -12.0)
    src = ARCFACE_TEMPLATE_112.points
    dst = transform_points(src, m_true)
    np.testing.assert_allclose(estimate_similarity(src, dst), m_true, atol=1e-9)


def test_matches_skimage_umeyama(grace, detector):
    skt = pytest.importorskip("skimage.transform")
    lm = detector.detect(grace)[0].landmarks
    src, dst = lm.astype(np.float64), ARCFACE_TEMPLATE_112.points.astype(np.float64)
    if hasattr(skt.SimilarityTransform, "from_estimate"):  # skimage >= 0.26
        t = skt.SimilarityTransform.from_estimate(src, dst)
    else:
        t = skt.SimilarityTransform()
        t.estimate(src, dst)
    np.testing.assert_allclose(estimate_matrix(lm, "arcface_112", 112), t.params[:2], atol=1e-9)


@pytest.mark.parametrize("name", ["astronaut", "grace"])
@pytest.mark.parametrize("template,size", [("arcface_112", 112), ("arcface_128", 128),
                                           ("ffhq_512", 256)])
def test_round_trip(detector, request, name, template, size):
    img = request.getfixturevalue(name)
    lm = detector.detect(img)[0].landmarks
    crop, m = warp_face(img, lm, template, size)
    assert crop.shape == (size, size, 3) and m.shape == (2, 3)
    # the five points land on the template (least squares: the residual is expression and pose;
    # the astronaut's broad smile puts her mouth corners ~7 px off at 112)
    on_crop = transform_points(lm, m)
    resid = np.linalg.norm(on_crop - get_template(template).at(size), axis=1)
    assert resid.max() < 0.08 * size and resid.mean() < 0.05 * size, resid
    # and come back within 1 px
    back = transform_points(on_crop, invert(m))
    assert np.abs(back - lm).max() < 1.0
    # pixels too: the crop warped back matches the frame around the face (interpolation only)
    h, w = img.shape[:2]
    back_img = cv2.warpAffine(crop, invert(m), (w, h), flags=cv2.INTER_LINEAR)
    x1, y1, x2, y2 = detector.detect(img)[0].box.astype(int)
    cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
    patch = np.s_[cy - 20:cy + 20, cx - 20:cx + 20]
    diff = np.abs(back_img[patch].astype(int) - img[patch].astype(int)).mean()
    assert diff < 12, diff


def test_bad_landmarks():
    with pytest.raises(InputError, match=r"landmarks \| got shape \(4, 2\)"):
        warp_face(np.zeros((50, 50, 3), np.uint8), np.zeros((4, 2)), "arcface_112", 112)
    with pytest.raises(ValueError, match="all points coincide"):
        estimate_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE_112.points)
