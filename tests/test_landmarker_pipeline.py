"""The landmark stage in the pipeline: settings and plan, ``fusionrt swap --landmarker``, and
``FaceSwapper`` on a real photo with a synthesized reduced-width ``2dfan4`` stand-in (made with
``fusionrt models synth``), on the host kernels and the device kernels (CPU torch)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import facefusion_oracle_landmark as ff  # tests/facefusion_oracle_landmark.py
from fusionrt.cli import build_parser, main
from fusionrt.errors import ModelError
from fusionrt.pipeline.commands import settings_from_args
from fusionrt.pipeline.host.landmark import face_angle, landmarks_68_to_5
from fusionrt.pipeline.plan import parse_engine_spec, plan_stages
from fusionrt.pipeline.settings import PipelineConfig
from fusionrt.pipeline.track import LandmarkTracker
from fusionrt.pipeline.types import Face

WIDTH = "0.0625"  # 0.105 M parameters, 0.30 GFLOP: same contract, a second to run


@pytest.fixture(scope="module")
def lm_store(tmp_path_factory):
    """A store holding only a synthetic 2dfan4, made through the CLI (needs torch). Without
    onnxslim's pass (as on an install without onnxslim): it takes 9 of the 14 s here."""
    pytest.importorskip("torch")
    from fusionrt.builders import export
    home = tmp_path_factory.mktemp("lm_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONRT_HOME", str(home))
        mp.setattr(export, "_simplify", lambda model, spec: (model, False))
        assert main(["models", "synth", "2dfan4", "--width", WIDTH]) == 0
    assert (home / "synthetic" / "2dfan4.onnx").is_file()
    return home


@pytest.fixture
def lm_home(lm_store, monkeypatch):
    monkeypatch.setenv("FUSIONRT_HOME", str(lm_store))
    return lm_store


def _forward(engine):
    """FaceFusion's forward_with_2dfan4 over a fusionrt engine: the outputs in order."""
    return lambda x: [engine.run({"input": x})[t.name] for t in engine.spec.outputs]


def _check_against_facefusion(img, detected, got, engine) -> str:
    """Which of FaceFusion's two outcomes fusionrt's face ``got`` shows (checked against the
    oracle on the detector's face ``detected``): 'replaced' or 'kept'."""
    five, sixty_eight, score = ff.landmark_5_68(img, detected.box, detected.landmarks,
                                                face_angle(detected.landmarks), _forward(engine))
    if score > ff.FACE_LANDMARKER_SCORE:
        assert got.landmarks68.shape == (68, 2) and got.landmarks68.dtype == np.float32
        assert np.abs(got.landmarks68 - sixty_eight).max() <= 0.5
        assert np.abs(got.landmarks - five).max() <= 0.5
        return "replaced"
    assert got.landmarks68 is None and np.array_equal(got.landmarks, detected.landmarks)
    return "kept"


def test_landmark_stage_is_planned_only_when_asked(lm_home):
    plan = plan_stages(PipelineConfig(swapper="classic", landmarker="2dfan4",
                                      allow_synthetic=True))
    assert list(plan.stages) == ["detect", "landmark"]
    st = plan.stages["landmark"]
    assert (st.model, st.engine, st.synthetic) == ("2dfan4", "ort-cpu", True)
    assert "2dfan4 (SYNTHETIC weights) on ort-cpu" in plan.explain()["landmark"]
    assert "landmark" not in plan_stages(PipelineConfig(swapper="classic")).stages
    with pytest.raises(ModelError, match="'2dfan4' | not installed"):
        plan_stages(PipelineConfig(swapper="classic", landmarker="2dfan4"))
    from fusionrt.pipeline.plan import STAGES
    want = {st: "default" for st in STAGES}
    want["landmark"] = "ort-cpu"
    assert parse_engine_spec("landmark=ort-cpu") == want


@pytest.mark.parametrize("name, match", [("nope", "'nope' | unknown"),
                                         ("inswapper_128", "'inswapper_128' | a 'swap' model")])
def test_unknown_landmarker_is_refused(name, match):
    with pytest.raises(ModelError, match=match + "; expected one of: none, 2dfan4"):
        PipelineConfig(landmarker=name).check()


def test_swap_flag_reaches_the_settings(capsys):
    base = ["swap", "-s", "a.png", "-t", "b.png", "-o", "c.png"]
    p = build_parser()
    assert settings_from_args(p.parse_args(base)).landmarker == "none"
    assert settings_from_args(p.parse_args(base + ["--landmarker", "2dfan4"])).landmarker \
        == "2dfan4"
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--landmarker", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_faceswapper_on_a_photo_with_synthetic_2dfan4(lm_home, astronaut, grace):
    from fusionrt.pipeline.swapper import FaceSwapper
    cfg = PipelineConfig(landmarker="2dfan4", allow_synthetic=True, swapper="classic")
    with FaceSwapper.open(cfg) as pipe:
        k = pipe.kernels
        detected = max(k.detector.detect(astronaut), key=lambda f: f.area)
        got = pipe.detect([astronaut])[0]
        assert len(got) == 1 and np.array_equal(got[0].box, detected.box)
        outcome = _check_against_facefusion(astronaut, detected, got[0], k.landmarker.engine)
        # random weights: on a photo the heatmap maxima are far above the seeded calibration
        # noise's, so the score saturates and the 68's 5 points replace the detector's
        assert outcome == "replaced"
        np.testing.assert_allclose(got[0].landmarks, landmarks_68_to_5(got[0].landmarks68),
                                   atol=1e-5)
        # the whole frame runs; its pixels are not judged (random points: the classic swapper
        # may find the source face turned too far and leave the target unchanged)
        pipe.set_source(grace)
        out, n = pipe.process_frame(astronaut)
        assert n == 1 and out.shape == astronaut.shape and pipe.stage_ms()["landmark"] > 0


def test_swap_cli_with_landmarker(lm_home, astronaut_path, grace_path, tmp_path, capsys):
    out = tmp_path / "o.png"
    assert main(["swap", "-s", str(grace_path), "-t", str(astronaut_path), "-o", str(out),
                 "--swapper", "classic", "--landmarker", "2dfan4", "--allow-synthetic",
                 "--explain"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "landmark     2dfan4 (SYNTHETIC weights) on ort-cpu" in text


@pytest.mark.slow
def test_device_kernels_carry_landmarks68(synthetic_store, lm_store, tmp_path, monkeypatch,
                                          astronaut, grace):
    """The device kernel set (CPU torch) with a neural swapper: faces come out of detection
    with the landmark stage's result, as FaceFusion decides it."""
    pytest.importorskip("torch")
    from fusionrt.pipeline.swapper import FaceSwapper
    home = tmp_path / "home"
    shutil.copytree(synthetic_store, home)
    for suffix in (".onnx", ".pt"):
        shutil.copy(lm_store / "synthetic" / f"2dfan4{suffix}", home / "synthetic")
    monkeypatch.setenv("FUSIONRT_HOME", str(home))
    cfg = PipelineConfig(swapper="inswapper_128", kernels="device", device="cpu",
                         landmarker="2dfan4", allow_synthetic=True)
    with FaceSwapper.open(cfg) as pipe:
        assert pipe.kernels.name == "device" and "landmark" in pipe.plan.stages
        faces = pipe.detect([astronaut])[0]
        assert len(faces) == 1 and faces[0].landmarks68 is not None
        assert faces[0].landmarks68.shape == (68, 2)
        np.testing.assert_allclose(faces[0].landmarks, landmarks_68_to_5(faces[0].landmarks68),
                                   atol=1e-5)
        pipe.set_source(grace)
        out, n = pipe.process_frame(astronaut)
        assert n == 1 and not np.array_equal(out, astronaut)


def test_tracker_smooths_landmarks68():
    def face(shift, with68=True):
        lm68 = np.full((68, 2), 100 + shift, np.float32) if with68 else None
        return Face(np.float32([0, 0, 50, 50]) + shift, 0.9, np.zeros((5, 2), np.float32) + shift,
                    landmarks68=lm68)
    t = LandmarkTracker(0.5)
    t.update([face(0)])
    assert t.update([face(2)])[0].landmarks68[0, 0] == pytest.approx(101.0)
    assert t.update([face(4, with68=False)])[0].landmarks68 is None  # nothing to smooth with
    assert t.update([face(4)])[0].landmarks68[0, 0] == pytest.approx(104.0)
