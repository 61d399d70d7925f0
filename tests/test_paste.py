"""Paste-back: the crop goes back where it came from, nothing outside the mask changes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fusionrt.pipeline.host.align import invert, warp_face
from fusionrt.pipeline.host.paste import box_mask, color_transfer_lab, feather_mask, paste_back


def _frame_alpha(frame, mask, m):
    """The mask as it lands in the frame, computed independently of paste_back."""
    h, w = frame.shape[:2]
    return cv2.warpAffine(mask, invert(m), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@pytest.fixture
def grace_crop(detector, grace):
    lm = detector.detect(grace)[0].landmarks
    return warp_face(grace, lm, "arcface_128", 128)


@pytest.mark.parametrize("opts", [{}, {"color_transfer": True}, {"poisson": True},
                                  {"feather": 0.25}])
def test_outside_the_mask_is_bit_identical(grace, grace_crop, opts):
    _, m = grace_crop
    rng = np.random.default_rng(0)
    fake = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # maximally different crop
    out = paste_back(grace, fake, m, **opts)
    mask = box_mask(128, opts.get("feather", 0.1))
    outside = _frame_alpha(grace, mask, m) == 0
    assert outside.mean() > 0.6  # the crop covers about a quarter of this frame
    assert np.array_equal(out[outside], grace[outside])
    inside = _frame_alpha(grace, mask, m) > 0.9
    assert np.abs(out[inside].astype(int) - grace[inside].astype(int)).mean() > 30
    assert out.dtype == np.uint8 and out.shape == grace.shape


def test_own_crop_pastes_back_invisibly(grace, grace_crop):
    crop, m = grace_crop
    out = paste_back(grace, crop, m)
    diff = np.abs(out.astype(int) - grace.astype(int))
    inside = _frame_alpha(grace, box_mask(128), m) > 0
    # only the blur of resampling the ~175 px face to 128 px and back (random crop: > 30)
    assert diff[inside].mean() < 6, diff[inside].mean()
    assert not diff[~inside].any()


def test_custom_mask_and_input_untouched(grace, grace_crop):
    crop, m = grace_crop
    before = grace.copy()
    mask = np.zeros((128, 128), np.float32)
    mask[40:90, 30:100] = 1
    out = paste_back(grace, np.zeros_like(crop), m, mask=feather_mask(mask, 0.05))
    assert np.array_equal(grace, before)
    outside = _frame_alpha(grace, feather_mask(mask, 0.05), m) == 0
    assert np.array_equal(out[outside], grace[outside])
    assert (out != grace).any()


def test_crop_outside_the_frame_changes_nothing(grace):
    m = np.array([[1.0, 0, 5000], [0, 1.0, 5000]])  # the crop maps far off-frame
    out = paste_back(grace, np.zeros((64, 64, 3), np.uint8), m)
    assert np.array_equal(out, grace)


def test_color_transfer_matches_statistics():
    rng = np.random.default_rng(1)
    src = rng.integers(0, 120, (64, 64, 3), dtype=np.uint8)
    ref = rng.integers(100, 256, (64, 64, 3), dtype=np.uint8)
    out = color_transfer_lab(src, ref)
    lab = lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(float)  # noqa
    np.testing.assert_allclose(lab(out).mean(0), lab(ref).mean(0), atol=3)


def test_mask_shape_checked(grace, grace_crop):
    crop, m = grace_crop
    with pytest.raises(ValueError, match=r"mask \| got shape \(10, 10\); expected \(128, 128\)"):
        paste_back(grace, crop, m, mask=np.ones((10, 10), np.float32))
