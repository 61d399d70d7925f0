"""One conformance test over every registered engine: same stage, same inputs, outputs against the
FP32 reference (ORT CPU). CPU engines run in CI; CUDA engines run on the GPU machine through
benchmarks/scripts/gpu_check.sh (FUSIONRT_TEST_DEVICE=cuda) and skip elsewhere with the reason.

Thresholds (issue 4): embeddings cosine >= 0.9999, generator PSNR >= 50 dB at FP32,
detector boxes IoU >= 0.99.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from fusionrt.builders import parity
from fusionrt.builders.open import open_engine
from fusionrt.engines.base import EngineConfig
from fusionrt.engines.registry import engine_names, get_engine
from fusionrt.models.spec import sample_feeds

DEVICE = os.environ.get("FUSIONRT_TEST_DEVICE", "cpu")
WIDTH = float(os.environ.get("FUSIONRT_TEST_WIDTH", "0.125"))


def _engine_or_skip(name: str):
    cls = get_engine(name)
    ok, why = cls.available()
    if not ok:
        pytest.skip(f"{name} not usable here: {why}")
    if DEVICE not in cls.devices and not any(d.startswith(DEVICE) for d in cls.devices):
        pytest.skip(f"{name} runs on {cls.devices}; this run is on {DEVICE}")
    if name == "trt":
        pytest.importorskip("tensorrt", reason="TensorRT cannot be installed on this machine")
    return cls


def _config(name: str, **opts) -> EngineConfig:
    from fusionrt.engines.base import BatchProfile
    return EngineConfig(device="cpu" if name == "ort-cpu" else DEVICE,
                        batch=BatchProfile(1, 2, 4), options=opts)


def _host(outs):
    return {k: (v.detach().float().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
            for k, v in outs.items()}


@pytest.fixture(scope="session")
def synth_models(tmp_path_factory):
    pytest.importorskip("torch")
    from fusionrt.builders.synth import synthesize
    from fusionrt.models.store import ModelStore
    # FUSIONRT_TEST_STORE: reuse a store that already holds synthetic models of this width
    # (the GPU run synthesizes the full-size models once and shares them between scripts).
    shared = os.environ.get("FUSIONRT_TEST_STORE")
    store = ModelStore(shared or tmp_path_factory.mktemp("fusionrt_home"))
    for name in ("arcface_w600k_r50", "inswapper_128", "simswap_256"):
        if not shared or not store.synthetic_path(name).is_file():
            synthesize(name, store.synthetic_path(name), seed=0, width=WIDTH)
    return store


@pytest.mark.slow
@pytest.mark.parametrize("engine", engine_names())
@pytest.mark.parametrize("model", ["arcface_w600k_r50", "inswapper_128", "simswap_256"])
def test_model_stage_matches_fp32_reference(engine, model, synth_models):
    cls = _engine_or_skip(engine)
    if engine == "torch-compile" and DEVICE == "cpu" and model != "arcface_w600k_r50":
        pytest.skip("torch-compile on CPU: one model is enough for CI time (all run on the GPU)")
    art = synth_models.resolve(model, allow_synthetic=True)
    feeds = sample_feeds(art, batch=2, seed=1)
    if art.spec.task == "swap":
        feeds["target"] = np.random.default_rng(2).random(feeds["target"].shape, np.float32)
    with get_engine("ort-cpu")(art) as ref_eng:
        ref = ref_eng.run(feeds)
    with open_engine(cls, art, _config(engine)) as eng:
        out = _host(eng.run(feeds))
    (name, r), = ref.items()
    if art.spec.task == "embed":
        assert parity.cosine(r, out[name]) >= 0.9999
    else:
        assert parity.psnr(r, out[name], data_range=float(np.ptp(r))) >= 50.0


@pytest.mark.parametrize("engine", engine_names())
def test_detector_boxes_match_fp32_reference(engine, grace, tmp_path, monkeypatch):
    cls = _engine_or_skip(engine)
    monkeypatch.setenv("FUSIONRT_HOME", str(tmp_path))
    from fusionrt.models.store import ModelStore
    from fusionrt.pipeline.host.detect import Detector
    art = ModelStore().resolve("retinaface_mnet025")
    with get_engine("ort-cpu")(art) as ref_eng:
        ref = Detector(ref_eng).detect(grace)
    with open_engine(cls, art, _config(engine, dims={"H": 640, "W": 640})) as eng:
        got = Detector(eng).detect(grace)
    assert len(got) == len(ref) == 1
    iou = parity.box_iou(np.stack([f.box for f in ref]), np.stack([f.box for f in got]))
    assert np.diag(iou).min() >= 0.99
    assert np.abs(ref[0].landmarks - got[0].landmarks).max() < 1.0


def test_wrong_shape_input_is_refused(tmp_path, monkeypatch):
    from fusionrt.errors import EngineError
    from fusionrt.models.store import ModelStore
    monkeypatch.setenv("FUSIONRT_HOME", str(tmp_path))
    art = ModelStore().resolve("retinaface_mnet025")
    with get_engine("ort-cpu")(art) as eng:
        with pytest.raises(EngineError, match=r"input 'input' \| got shape \(1, 3, 64\)"):
            eng.run({"input": np.zeros((1, 3, 64), np.float32)})
        with pytest.raises(EngineError, match="got dtype float64; expected float32"):
            eng.run({"input": np.zeros((1, 3, 64, 64))})
        with pytest.raises(EngineError, match="expected \\['input'\\]"):
            eng.run({"image": np.zeros((1, 3, 64, 64), np.float32)})


def test_unknown_engine_lists_valid_names():
    from fusionrt.errors import EngineError
    with pytest.raises(EngineError, match="unknown; expected one of: ort-cpu, ort-cuda"):
        get_engine("tensorflow")
