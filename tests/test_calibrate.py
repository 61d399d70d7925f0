"""Calibration sets: deterministic for a seed, made the way the model sees faces, clear errors."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from fusionrt.builders.calibrate import CalibrationSet, augment, load_calibration
from fusionrt.pipeline.artifacts import build_calibration_set
from fusionrt.errors import InputError, NoFaceError


@pytest.fixture
def photos(tmp_path, astronaut_path, grace_path):
    d = tmp_path / "faces"
    d.mkdir()
    shutil.copy(astronaut_path, d)
    shutil.copy(grace_path, d)
    return d


def test_arcface_set_is_deterministic_for_a_seed(photos, detector):
    a = build_calibration_set("arcface_w600k_r50", photos, 6, seed=3, do_augment=True,
                              detector=detector)
    b = build_calibration_set("arcface_w600k_r50", photos, 6, seed=3, do_augment=True,
                              detector=detector)
    c = build_calibration_set("arcface_w600k_r50", photos, 6, seed=4, do_augment=True,
                              detector=detector)
    assert a.crops.shape == (6, 112, 112, 3) and a.crops.dtype == np.uint8
    assert np.array_equal(a.crops, b.crops) and a.meta["items"] == b.meta["items"]
    assert not np.array_equal(a.crops, c.crops)
    assert a.meta["faces_found"] == 2 and a.meta["augmented"] == 4
    # an aligned ArcFace crop: the eyes sit where the template puts them (darker than the
    # cheeks in both photos) — a crude but real check that detect -> align ran
    gray = a.crops[:2].astype(np.float32).mean(-1)
    assert (gray[:, 48:56, 30:46].mean() < gray[:, 64:72, 30:46].mean())


def test_generator_set_has_latents_from_other_faces(photos, detector, synthetic_home, tmp_path):
    cal = build_calibration_set("inswapper_128", photos, 4, seed=0, do_augment=True,
                                detector=detector, allow_synthetic=True)
    assert cal.crops.shape == (4, 128, 128, 3) and cal.latents.shape == (4, 512)
    np.testing.assert_allclose(np.linalg.norm(cal.latents, axis=1), 1.0, rtol=1e-5)
    path = cal.save(tmp_path / "set.npz")
    back = load_calibration(path)
    assert np.array_equal(back.crops, cal.crops) and np.array_equal(back.latents, cal.latents)
    from fusionrt.models.zoo import get_spec
    feeds = list(back.feeds(get_spec("inswapper_128")))
    assert feeds[0]["target"].shape == (1, 3, 128, 128) and feeds[0]["target"].max() <= 1.0
    with pytest.raises(InputError, match="expects 256x256"):
        back.check(get_spec("simswap_256"))


def test_split_is_disjoint_and_seeded():
    cal = CalibrationSet("arcface_w600k_r50",
                         np.arange(10, dtype=np.uint8)[:, None, None, None].repeat(3, 3)
                         * np.ones((1, 2, 2, 3), np.uint8), meta={"template": "arcface_112"})
    fit, held = cal.split(3)
    assert len(fit) == 7 and len(held) == 3
    assert not set(fit.crops[:, 0, 0, 0]) & set(held.crops[:, 0, 0, 0])
    assert np.array_equal(cal.split(3)[1].crops, held.crops)


def test_augment_changes_the_image_deterministically(astronaut):
    a = augment(astronaut, np.random.default_rng(1))
    b = augment(astronaut, np.random.default_rng(1))
    assert a.shape == astronaut.shape and np.array_equal(a, b)
    assert not np.array_equal(a, astronaut)


def test_empty_folder(tmp_path, detector):
    with pytest.raises(InputError, match="no images"):
        build_calibration_set("arcface_w600k_r50", tmp_path, 4, detector=detector)


def test_images_without_faces(tmp_path, detector):
    img = np.zeros((240, 320, 3), np.uint8)
    img[:, :, 1] = np.linspace(0, 255, 320, dtype=np.uint8)  # a gradient, no face
    cv2.imwrite(str(tmp_path / "wall.png"), img)
    with pytest.raises(NoFaceError, match="no face found in 1 image"):
        build_calibration_set("arcface_w600k_r50", tmp_path, 4, detector=detector)


def test_unreadable_video(tmp_path, detector):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(InputError, match="clip.mp4"):
        build_calibration_set("arcface_w600k_r50", bad, 4, detector=detector)


def test_missing_source(tmp_path, detector):
    with pytest.raises(InputError, match="not found"):
        build_calibration_set("arcface_w600k_r50", tmp_path / "nope", 4, detector=detector)


def test_unreadable_set(tmp_path):
    bad = tmp_path / "set.npz"
    bad.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(InputError, match="unreadable"):
        load_calibration(bad)
    with pytest.raises(InputError, match="file not found"):
        load_calibration(tmp_path / "none.npz")


def test_calibrate_cli(photos, synthetic_home, tmp_path, capsys):
    from fusionrt.cli import main
    out = tmp_path / "cal.npz"
    rc = main(["calibrate", "arcface_w600k_r50", "--images", str(photos), "--count", "3",
               "--augment", "--out", str(out)])
    assert rc == 0 and load_calibration(out).crops.shape[0] == 3
    assert "not a diverse set" in capsys.readouterr().out
    rc = main(["calibrate", "arcface_w600k_r50", "--images", str(tmp_path / "none")])
    assert rc == InputError.exit_code
