"""The stage plan: one meaning of --swapper auto, --engine default/auto/NAME and --device on every
path. The host (CPU) and device (GPU) kernel sets get the same plan for the same flags; the only
difference a kernel set may make is to refuse what it cannot run (classic, Poisson)."""

from __future__ import annotations

import pytest

from fusionrt.errors import EngineError, InputError, ModelError
from fusionrt.pipeline import plan as planmod
from fusionrt.pipeline.plan import plan_stages
from fusionrt.pipeline.settings import PipelineConfig

SYN = dict(swapper="inswapper_128", allow_synthetic=True, det_size=320)


def _reason(text: str) -> str:
    return text.removeprefix("cached auto choice: ")  # a measured choice, read back


def _same(a, b) -> None:
    assert a.swapper == b.swapper and a.device == b.device and list(a.stages) == list(b.stages)
    for name in a.stages:
        x, y = a.stages[name], b.stages[name]
        assert (x.model, x.engine, x.device, x.precision, dict(x.options), _reason(x.reason),
                x.artifact.onnx_path) == \
               (y.model, y.engine, y.device, y.precision, dict(y.options), _reason(y.reason),
                y.artifact.onnx_path), name


@pytest.mark.parametrize("engine", ["default", "ort-cpu", "detect=torch", "auto"])
def test_same_flags_same_plan_on_both_kernel_sets(synthetic_home, engine):
    if engine != "ort-cpu":
        pytest.importorskip("torch")
    host = plan_stages(PipelineConfig(**SYN, engine=engine, kernels="host"))
    device = plan_stages(PipelineConfig(**SYN, engine=engine, kernels="device"))
    assert (host.kernels, device.kernels) == ("host", "device")
    _same(host, device)
    assert set(host.stages) == {"detect", "embed", "swap"}
    if engine == "auto":
        assert all("fastest passing engine" in s.reason or "cached auto choice" in s.reason
                   for s in host.stages.values())


def test_engine_auto_is_measured_once_and_cached(synthetic_home):
    pytest.importorskip("torch")
    from fusionrt.runtime.cache import cache_root
    (cache_root() / "auto-engines.json").unlink(missing_ok=True)  # the store is shared
    first = plan_stages(PipelineConfig(**SYN, engine="auto"))
    again = plan_stages(PipelineConfig(**SYN, engine="auto", kernels="device"))
    assert all(s.reason.startswith("fastest passing engine") for s in first.stages.values())
    assert all(s.reason.startswith("cached auto choice") for s in again.stages.values())
    assert {k: s.engine for k, s in first.stages.items()} == \
           {k: s.engine for k, s in again.stages.items()}


def test_corrupt_auto_cache_is_discarded(synthetic_home, caplog):
    pytest.importorskip("torch")
    from fusionrt.runtime.cache import cache_root
    path = cache_root() / "auto-engines.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"abc": {"detect": ')  # truncated, as after a crash
    plan = plan_stages(PipelineConfig(**SYN, engine="auto"))
    assert all(s.reason.startswith("fastest passing engine") for s in plan.stages.values())
    assert "unreadable" in caplog.text


def test_swapper_auto_needs_real_swapper_and_embedder_everywhere(synthetic_home, monkeypatch):
    from fusionrt.models.store import ModelStore
    real = {"retinaface_mnet025"}
    monkeypatch.setattr(ModelStore, "installed",
                        lambda self, name: "real" if name in real else None)
    assert plan_stages(PipelineConfig(det_size=320, kernels="host")).swapper == "classic"
    with pytest.raises(ModelError, match=r"swapper 'auto' \| no neural swapper with real"):
        plan_stages(PipelineConfig(det_size=320, kernels="device"))
    real.add("inswapper_128")  # the swapper alone is not enough: its embedder must be real too
    assert plan_stages(PipelineConfig(det_size=320, kernels="host")).swapper == "classic"
    with pytest.raises(ModelError, match="swapper 'auto'"):
        plan_stages(PipelineConfig(det_size=320, kernels="device"))


def test_classic_and_poisson_are_host_only(synthetic_home):
    assert plan_stages(PipelineConfig(swapper="classic", kernels="host")).swapper == "classic"
    with pytest.raises(ModelError, match=r"swapper 'classic' \| not available on the GPU path"):
        plan_stages(PipelineConfig(swapper="classic", kernels="device"))
    with pytest.raises(InputError, match=r"--poisson \| runs on the CPU path only"):
        plan_stages(PipelineConfig(**SYN, poisson=True, kernels="device"))


def test_cuda_without_a_gpu_is_one_clear_error(synthetic_home, monkeypatch):
    monkeypatch.setattr(planmod, "_cuda_devices", lambda: (0, "torch sees 0 CUDA GPU(s)"))
    for kernels in ("auto", "host", "device"):
        with pytest.raises(EngineError, match=r"device 'cuda' \| no such CUDA GPU here"):
            plan_stages(PipelineConfig(**SYN, device="cuda", kernels=kernels))
    with pytest.raises(InputError, match=r"device 'gpu' \| unknown"):
        plan_stages(PipelineConfig(**SYN, device="gpu"))


@pytest.mark.parametrize("target", ["grace_hopper.jpg", "clip.mp4"])
def test_cuda_without_a_gpu_from_the_cli(synthetic_home, monkeypatch, tmp_path, capsys,
                                         astronaut_path, grace_path, target):
    """Image and video targets fail the same way, before any output exists."""
    from fusionrt.cli import main
    monkeypatch.setattr(planmod, "_cuda_devices", lambda: (0, "torch sees 0 CUDA GPU(s)"))
    tgt = grace_path if target.endswith(".jpg") else tmp_path / target
    if not tgt.exists():  # a real clip: its header is checked (pixel budget) before the plan
        from videos import make_test_video  # tests/videos.py
        make_test_video(tgt, 0.2, 10, (64, 48), audio=False)
    out = tmp_path / ("o" + tgt.suffix)
    rc = main(["swap", "-s", str(astronaut_path), "-t", str(tgt), "-o", str(out),
               "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc != 0 and "no such CUDA GPU here" in err and "Traceback" not in err
    assert not out.exists()


def test_device_mapping_refuses_an_engine_that_cannot_run_there(synthetic_home, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setattr(planmod, "_cuda_devices", lambda: (1, "pretend"))
    for kernels in ("host", "device"):
        with pytest.raises(EngineError, match=r"engine 'ort-cpu' \| runs on cpu; --device cuda "
                                              r"needs one of: .*torch"):
            plan_stages(PipelineConfig(**SYN, engine="ort-cpu", device="cuda", kernels=kernels))
    # the per-device default: on CUDA the torch engine for the detector (native module) and for
    # models with torch weights; the CUDA options come from the engines' capabilities
    plan = plan_stages(PipelineConfig(**SYN, device="cuda", kernels="host"))
    det = plan.stages["detect"]
    assert det.engine == "torch" and det.device == "cuda" and det.options["cuda_graph"] is True
    assert det.options["channels_last"] is True and plan.stages["embed"].options["cuda_graph"] \
        is False
    _same(plan, plan_stages(PipelineConfig(**SYN, device="cuda", kernels="device")))


def test_unknown_settings_are_refused():
    with pytest.raises(InputError, match=r"selection 'nearest' \| unknown"):
        plan_stages(PipelineConfig(select="nearest"))
    with pytest.raises(ModelError, match=r"swapper 'nope' \| unknown"):
        plan_stages(PipelineConfig(swapper="nope"))
    with pytest.raises(EngineError, match=r"engine 'warp9' \| unknown"):
        plan_stages(PipelineConfig(engine="warp9"))
    with pytest.raises(EngineError, match=r"unknown stage 'paste'"):
        plan_stages(PipelineConfig(engine="paste=ort-cpu"))
    with pytest.raises(InputError, match=r"kernels 'gpu' \| unknown"):
        plan_stages(PipelineConfig(kernels="gpu"))


def test_explain_says_what_runs_where_and_why(synthetic_home):
    plan = plan_stages(PipelineConfig(**SYN))
    text = plan.explain()
    assert text["detect"].startswith("retinaface_mnet025 (real weights) on ort-cpu [cpu] fp32")
    assert text["swap"].startswith("inswapper_128 (SYNTHETIC weights) on ort-cpu")
    assert "default for cpu" in text["embed"] and text["paste"].startswith("numpy/OpenCV")
    assert plan.synthetic
