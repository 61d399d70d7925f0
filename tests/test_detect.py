"""RetinaFace detection on the real example photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fusionrt.errors import InputError
from fusionrt.pipeline.host.detect import Detector, priors

# Checked by eye on box + landmark overlays (one box around each face, landmarks on the eyes,
# nose tip and mouth corners); tolerance 4 px.
EXPECTED = {
    "astronaut": dict(box=[177.8, 58.7, 272.6, 178.4],
                      lmk=[[202.9, 101.3], [247.1, 103.3], [223.3, 129.8],
                           [200.6, 139.0], [245.5, 140.8]]),
    "grace": dict(box=[176.8, 114.2, 351.0, 333.6],
                  lmk=[[223.4, 188.9], [305.7, 187.8], [266.3, 247.9],
                       [235.8, 278.4], [298.7, 277.0]]),
}


@pytest.mark.parametrize("name", ["astronaut", "grace"])
def test_one_face_at_the_checked_place(detector, request, name):
    faces = detector.detect(request.getfixturevalue(name))
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.99
    np.testing.assert_allclose(f.box, EXPECTED[name]["box"], atol=4)
    np.testing.assert_allclose(f.landmarks, EXPECTED[name]["lmk"], atol=4)
    assert f.box.dtype == np.float32 and f.landmarks.shape == (5, 2)


def test_priors_match_pytorch_retinaface_count():
    # 640²: (80² + 40² + 20²) cells × 2 sizes = 16800 anchors, the model's output length
    p = priors(640)
    assert p.shape == (16800, 4)
    np.testing.assert_allclose(p[0], [4 / 640, 4 / 640, 16 / 640, 16 / 640])
    np.testing.assert_allclose(p[1, 2:], [32 / 640, 32 / 640])


def test_batch_equals_single(detector, astronaut, grace):
    batch = detector.detect_batch([astronaut, grace])
    for img, faces in zip([astronaut, grace], batch):
        single = detector.detect(img)
        assert len(faces) == len(single) == 1
        np.testing.assert_allclose(faces[0].box, single[0].box, atol=1e-3)


def test_letterbox_maps_back_to_frame_pixels(detector, grace):
    # a 2x larger, non-square frame: the box must scale with it
    big = cv2.resize(grace, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    f = detector.detect(big)
    assert len(f) == 1
    np.testing.assert_allclose(f[0].box, np.array(EXPECTED["grace"]["box"]) * 2, atol=8)


def test_flat_image_has_no_face(detector):
    assert detector.detect(np.full((300, 400, 3), 128, np.uint8)) == []


def test_threshold_is_applied(detector, astronaut):
    strict = Detector(detector.engine, score_threshold=0.99999)
    assert strict.detect(astronaut) == []


def test_bad_image_shape(detector):
    with pytest.raises(InputError, match=r"image \| got shape \(10, 10\)"):
        detector.detect(np.zeros((10, 10), np.uint8))
