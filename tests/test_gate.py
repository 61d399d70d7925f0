"""The quality gate refuses deliberately broken artifacts (FP16 norms, all-black INT8
calibration) with their figures, passes sound ones, and ``fusionrt build`` wires it up.

Tests that build models need torch (``loud`` and ``synthetic_home`` skip without it); the report,
threshold and not-measured tests run on any Python with the core install."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusionrt.builders.calibrate import CalibrationSet
from fusionrt.builders.gate import (ID_NOT_MEASURED, GateReport, evaluate, refusal,
                                    thresholds_for)
from fusionrt.builders.parity import Parity
from fusionrt.errors import InputError, ModelError
from fusionrt.models.zoo import get_spec


def _loud_norm():
    """inswapper's contract with large pre-norm activations (|x| ~ 10^3, as trained generators
    have them): FP16 InstanceNorm overflows on x*x there."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from torch import nn

    class LoudNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.style = nn.Linear(512, 16)
            self.c2 = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, target, source):
            y = F.instance_norm(self.c1(target) * 400.0, eps=1e-6)
            g, b = self.style(source)[:, :, None, None].chunk(2, 1)
            return (torch.tanh(self.c2(y * (g + 1) + b)) + 1) / 2

    torch.manual_seed(0)
    return LoudNorm()


@pytest.fixture(scope="module")
def loud(tmp_path_factory):
    module = _loud_norm()  # skips without torch
    from fusionrt.builders.export import export_onnx
    path = tmp_path_factory.mktemp("loud") / "loud.onnx"
    export_onnx(module, get_spec("inswapper_128"), path)
    return path


@pytest.fixture
def arcface(synthetic_home):
    from fusionrt.engines.registry import get_engine
    from fusionrt.models.store import ModelStore
    from fusionrt.pipeline.artifacts import identity_crops
    from fusionrt.pipeline.host.embed import Embedder
    art = ModelStore().resolve("arcface_w600k_r50", allow_synthetic=True)
    with get_engine("ort-cpu")(art) as eng:
        yield {"id_embed": Embedder(eng).embed_crops, "id_crops": identity_crops}


def _face_feeds(n=2, seed=0):
    """inswapper feeds from the example photos' pixels (crops of real images, not noise)."""
    import cv2
    from conftest import ASTRONAUT, GRACE_HOPPER
    rng = np.random.default_rng(seed)
    feeds = []
    for i in range(n):
        img = cv2.imread(str((ASTRONAUT, GRACE_HOPPER)[i % 2]))
        crop = cv2.resize(img[100:400, 100:400], (128, 128))[..., ::-1] / 255.0
        src = rng.standard_normal((1, 512))
        feeds.append({"target": np.ascontiguousarray(crop.transpose(2, 0, 1)[None], np.float32),
                      "source": (src / np.linalg.norm(src)).astype(np.float32)})
    return feeds


def test_fp16_with_keep_list_passes_and_fp16_norms_are_refused(loud, arcface, tmp_path):
    from fusionrt.builders.fp16 import convert_fp16
    spec = get_spec("inswapper_128")
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    convert_fp16(loud, good)
    convert_fp16(loud, bad, keep={})  # norm layers forced to FP16
    feeds = _face_feeds()
    ok = evaluate(spec, loud, good, "fp16", feeds, **arcface)
    ko = evaluate(spec, loud, bad, "fp16", feeds, **arcface)
    assert ok.engine == "reference"  # real FP16 arithmetic, not ORT CPU's FP32 fallback
    assert ok.passed, ok.summary()
    assert not ko.passed, ko.summary()
    assert ko.figures[0].metric == "psnr" and ko.figures[0].value < 40


def test_int8_from_all_black_calibration_is_refused(synthetic_home, arcface, tmp_path):
    from fusionrt.builders.int8 import quantize_int8
    from fusionrt.models.store import ModelStore
    spec = get_spec("inswapper_128")
    src = ModelStore().synthetic_path("inswapper_128")
    feeds = _face_feeds(4, seed=1)
    black = [{"target": np.zeros_like(f["target"]), "source": f["source"]} for f in feeds]
    quantize_int8(src, tmp_path / "black.onnx", black, spec=spec)
    quantize_int8(src, tmp_path / "faces.onnx", feeds[:2], spec=spec)
    held = feeds[2:]
    ko = evaluate(spec, src, tmp_path / "black.onnx", "int8", held, **arcface,
                  synthetic=True)
    fair = evaluate(spec, src, tmp_path / "faces.onnx", "int8", held, **arcface,
                    synthetic=True)
    assert not ko.passed, ko.summary()
    # the refusal is the calibration's fault: face crops give a clearly better graph
    assert fair.figures[0].value > ko.figures[0].value + 6
    assert any("random" in n for n in ko.notes)


def test_missing_arcface_is_not_measured(loud, tmp_path):
    """Issue 16 item 9: without an ArcFace the identity cosine is *not measured* (not -inf),
    the report says why and which model to pull, and PSNR/SSIM decide: a sound FP16 graph
    passes. (Name kept for history; it used to assert the refusal, which was the bug.)"""
    from fusionrt.builders.fp16 import convert_fp16
    convert_fp16(loud, tmp_path / "good.onnx")
    rep = evaluate(get_spec("inswapper_128"), loud, tmp_path / "good.onnx", "fp16",
                   _face_feeds(1))
    assert rep.passed, rep.summary()
    assert [f.metric for f in rep.figures] == ["psnr", "ssim"]
    assert any("identity cosine not measured" in n and "models pull arcface_w600k_r50" in n
               for n in rep.notes)
    assert "id_cosine not measured" in rep.summary() and "inf" not in rep.summary()
    # ... and --require-id refuses the same graph, with the same reason
    req = evaluate(get_spec("inswapper_128"), loud, tmp_path / "good.onnx", "fp16",
                   _face_feeds(1), require_id=True)
    assert not req.passed and "REQUIRED" in req.summary()
    assert "fusionrt models pull arcface_w600k_r50" in str(refusal(req))


def _fixed_runner(out):
    return lambda feeds: [out]


def test_not_measured_id_passes_on_psnr_ssim_and_reports_it(tmp_path):
    """Torch-free: a candidate within FP16 rounding of the reference, no embedder."""
    spec = get_spec("simswap_256")
    ref = np.random.default_rng(0).uniform(0.1, 0.9, (1, 3, 64, 64)).astype(np.float32)
    got = (ref + 1e-4).astype(np.float32)
    rep = evaluate(spec, tmp_path / "ref.onnx", tmp_path / "cand.onnx", "fp16", [{}],
                   reference_runner=_fixed_runner(ref), candidate_runner=_fixed_runner(got))
    assert rep.passed, rep.summary()
    assert rep.not_measured == {"id_cosine": ID_NOT_MEASURED}
    assert all(np.isfinite(f.value) for f in rep.figures)
    js, md = rep.write(tmp_path / "cand.fp16")
    d = json.loads(js.read_text())
    assert d["passed"] is True and "models pull arcface_w600k_r50" in d["not_measured"]["id_cosine"]
    assert "Infinity" not in js.read_text()  # json.dumps(-inf)
    text = md.read_text()
    assert "PASSED" in text and "| id_cosine | not measured: no FP32 ArcFace" in text
    assert "-inf" not in text
    # the figures that were measured still decide: a bad candidate is refused on PSNR
    bad = evaluate(spec, tmp_path / "ref.onnx", tmp_path / "cand.onnx", "fp16", [{}],
                   reference_runner=_fixed_runner(ref),
                   candidate_runner=_fixed_runner(np.zeros_like(ref)))
    assert not bad.passed and "psnr" in bad.summary() and "FAIL" in bad.summary()


def test_require_id_refuses_when_the_id_figure_is_not_measured(tmp_path):
    spec = get_spec("simswap_256")
    ref = np.full((1, 3, 64, 64), 0.5, np.float32)
    rep = evaluate(spec, tmp_path / "ref.onnx", tmp_path / "cand.onnx", "fp16", [{}],
                   reference_runner=_fixed_runner(ref), candidate_runner=_fixed_runner(ref),
                   require_id=True)
    assert all(f.passed for f in rep.figures) and not rep.passed
    err = str(refusal(rep))
    assert "fp16 refused by the quality gate" in err
    assert "id_cosine not measured (REQUIRED: no FP32 ArcFace (arcface_w600k_r50)" in err
    assert "fusionrt models pull arcface_w600k_r50" in err
    assert "FAIL (required)" in rep.to_markdown()


def test_report_files_and_refusal_message(tmp_path):
    rep = GateReport("inswapper_128", "int8", "ort-cpu", "x.int8.onnx", "x.onnx", 3,
                     [Parity("psnr", 24.5, 30.0, False), Parity("id_cosine", 0.97, 0.95, True)],
                     synthetic=True, notes=["n1"], details={"method": "entropy"})
    js, md = rep.write(tmp_path / "x.int8")
    d = json.loads(js.read_text())
    assert d["passed"] is False and d["figures"][0]["value"] == 24.5
    assert "REFUSED" in md.read_text() and "random-weight" in md.read_text()
    err = refusal(rep, ["fp16"])
    assert isinstance(err, ModelError)
    assert "psnr 24.5 (FAIL: >= 30)" in str(err) and "fp16 passed" in str(err)


def test_thresholds_are_configurable():
    assert thresholds_for("fp16").psnr == 40 and thresholds_for("int8").id_cosine == 0.95
    assert thresholds_for("int8", psnr=35.0).psnr == 35.0
    with pytest.raises(ModelError, match="precision 'fp8'"):
        thresholds_for("fp8")


@pytest.mark.slow
def test_build_cli_fp16_report_and_int8_refusal(synthetic_home, tmp_path, capsys):
    from fusionrt.cli import main
    from fusionrt.models.store import ModelStore
    syn = ModelStore().synthetic_path("inswapper_128")
    rc = main(["build", "inswapper_128", "--precision", "fp16", "--allow-synthetic", "--report"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert syn.with_name("inswapper_128.fp16.onnx").is_file()
    assert json.loads(syn.with_name("inswapper_128.fp16.gate.json").read_text())["passed"]
    assert "random-weight" in out.out
    # an all-black calibration set: refused, artifact removed, FP16 named as the way out
    black = CalibrationSet("inswapper_128", np.zeros((12, 128, 128, 3), np.uint8),
                           np.tile(np.eye(1, 512, dtype=np.float32), (12, 1)),
                           {"template": "arcface_128"}).save(tmp_path / "black.npz")
    rc = main(["build", "inswapper_128", "--precision", "int8", "--calibration", str(black),
               "--allow-synthetic", "--report"])
    err = capsys.readouterr().err
    assert rc == ModelError.exit_code
    assert "int8 refused by the quality gate" in err and "fp16 passed" in err
    assert not syn.with_name("inswapper_128.int8.onnx").exists()
    assert syn.with_name("inswapper_128.int8.gate.md").is_file()


@pytest.mark.slow
def test_build_cli_without_arcface_passes_unless_require_id(synthetic_home, monkeypatch, capsys):
    """``fusionrt build ... --precision fp16`` with no ArcFace: built and reported as "not
    measured"; with ``--require-id``: refused before converting, naming the model to pull."""
    from fusionrt.cli import main
    from fusionrt.models.store import ModelStore
    from fusionrt.pipeline import artifacts
    monkeypatch.setattr(artifacts, "id_embedder", lambda allow_synthetic: None)
    syn = ModelStore().synthetic_path("inswapper_128")
    for p in syn.parent.glob("inswapper_128.fp16.*"):
        p.unlink()
    rc = main(["build", "inswapper_128", "--precision", "fp16", "--allow-synthetic",
               "--require-id"])
    err = capsys.readouterr().err
    assert rc == ModelError.exit_code
    assert "--require-id" in err and "fusionrt models pull arcface_w600k_r50" in err
    assert not syn.with_name("inswapper_128.fp16.onnx").exists()
    rc = main(["build", "inswapper_128", "--precision", "fp16", "--allow-synthetic", "--report"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "passed the quality gate" in out.out and "id_cosine not measured" in out.out
    d = json.loads(syn.with_name("inswapper_128.fp16.gate.json").read_text())
    assert d["passed"] and "id_cosine" in d["not_measured"]
    assert "id_cosine" not in [f["metric"] for f in d["figures"]]


def test_build_int8_needs_calibration(synthetic_home):
    from fusionrt.pipeline.artifacts import build_artifact
    with pytest.raises(InputError, match="needs --calibration"):
        build_artifact("arcface_w600k_r50", "int8", allow_synthetic=True)


def test_build_trt_prints_trtexec_and_names_the_install(synthetic_home, capsys):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT installed: this checks the message when it is absent")
    except ImportError:
        pass
    from fusionrt.cli import main
    rc = main(["build", "arcface_w600k_r50", "--engine", "trt", "--batch", "1:4:8",
               "--allow-synthetic"])
    out = capsys.readouterr()
    assert rc != 0 and "trtexec --onnx=" in out.out and "--stronglyTyped" in out.out
    assert "tensorrt" in out.err.lower()


def test_build_rejects_a_bad_batch_profile(synthetic_home):
    from fusionrt.cli import main
    assert main(["build", "arcface_w600k_r50", "--batch", "8:1:4",
                 "--allow-synthetic"]) == InputError.exit_code


# -- issue 19: the post-swap models are gated too; models without figures are refused -------------

def test_models_without_gate_figures_are_refused_before_converting():
    from fusionrt.builders.gate import check_gated
    from fusionrt.models.zoo import get_spec
    for name, what in (("2dfan4", "(landmark)"), ("scrfd_2.5g", "insightface_anchors outputs")):
        with pytest.raises(ModelError, match=f"no figures for '{name}' .*{what}.*--precision fp32"):
            check_gated(get_spec(name))
    for name in ("gfpgan_1.4", "xseg_1", "bisenet_resnet_34", "retinaface_mnet025",
                 "inswapper_128"):
        check_gated(get_spec(name))


@pytest.mark.parametrize("model, noise, metric, passes", [
    ("gfpgan_1.4", 1e-4, "psnr", True), ("gfpgan_1.4", 0.3, "psnr", False),
    ("xseg_1", 1e-4, "psnr", True), ("xseg_1", 0.3, "psnr", False),
    ("bisenet_resnet_34", 1e-6, "label_agree", True), ("bisenet_resnet_34", 5.0, "label_agree", False),
])
def test_post_swap_figures(model, noise, metric, passes):
    """Fake runners (the gate's override points): a tiny perturbation passes, a large one fails."""
    from fusionrt.builders.gate import evaluate
    from fusionrt.models.zoo import get_spec
    spec = get_spec(model)
    rng = np.random.default_rng(0)
    shape = [2 if d == "N" else d for d in spec.outputs[0].shape]
    base = rng.standard_normal(shape).astype(np.float32)
    pert = rng.standard_normal(shape).astype(np.float32) * noise
    rep = evaluate(spec, Path("ref.onnx"), Path("cand.onnx"), "fp16", [{}],
                   reference_runner=lambda f: [base], candidate_runner=lambda f: [base + pert])
    fig = {f.metric: f for f in rep.figures}[metric]
    assert rep.passed is passes and fig.passed is passes
