"""``fusionrt bench --preset seed|full``: the preset's matrix, rows that run exactly the engine
settings ``fusionrt swap`` uses (the consistency proof's CPU half; its GPU half is
tests/test_gpu_bench_consistency.py), the summary object, the table picture, and resuming.
"""

from __future__ import annotations

import json

import pytest

from fusionrt.bench import report
from fusionrt.bench.config import SEED_CELLS, BenchConfig, with_defaults
from fusionrt.bench.runner import AS_SWAP, PLAIN, BenchRunner
from fusionrt.cli import main
from fusionrt.engines.registry import get_engine
from fusionrt.errors import InputError
from fusionrt.models.store import ModelStore
from fusionrt.pipeline import plan as plan_mod
from fusionrt.pipeline.settings import PipelineConfig

pytest.importorskip("torch")

NONE = dict(engines=None, precisions=None, batches=None, stages=None, runs=None, warmup=None,
            budget_s=None, max_row_s=None)


def test_seed_preset_is_the_seed_table():
    c = with_defaults(BenchConfig(allow_synthetic=True), preset="seed", device="cuda", **NONE)
    assert c.preset == "seed" and c.cells == SEED_CELLS
    assert c.stages == ("swap256", "swap128", "video") and c.batches == (1, 16)
    assert ("torch", "fp32") in c.cells and ("ort-cuda", "fp32") in c.cells
    assert {("trt", p) for p in ("fp32", "fp16", "int8")} <= set(c.cells)
    assert ("torch-compile", "fp16") in c.cells
    # the user's own flags narrow the preset
    c2 = with_defaults(BenchConfig(), preset="seed", device="cuda",
                       **{**NONE, "engines": ("torch",), "batches": (1,)})
    assert c2.cells == (("torch", "fp32"), ("torch", "fp16")) and c2.batches == (1,)
    with pytest.raises(InputError, match="--preset"):
        with_defaults(BenchConfig(), preset="fast", device="cuda", **NONE)


@pytest.mark.parametrize("engine,precision,batch", [
    ("torch", "fp16", 1), ("torch", "fp16", 16), ("torch-compile", "fp16", 1),
    ("torch-compile", "fp16", 16), ("ort-cuda", "fp32", 16), ("ort-cuda", "fp16", 1)])
def test_bench_rows_run_what_swap_runs(synthetic_home, monkeypatch, engine, precision, batch):
    """A bench row's engine settings equal the ones ``plan_stages`` gives the generator of
    ``fusionrt swap --device cuda`` with ``gen_batch`` = the row's batch (CUDA faked: the
    settings are decided before anything loads)."""
    monkeypatch.setattr(plan_mod, "_cuda_devices", lambda: (1, "faked for the test"))
    cfg = BenchConfig(engines=(engine,), precisions=(precision,), batches=(batch,),
                      stages=("swap256",), device="cuda", allow_synthetic=True,
                      plain_baselines=False)
    runner = BenchRunner(cfg, progress=False)
    (group,) = runner.groups
    cls = get_engine(engine)
    got, tuning = runner.engine_config(group, cls, "cuda", batch)
    assert tuning == AS_SWAP
    plan = plan_mod.plan_stages(PipelineConfig(
        swapper="simswap_256", engine=f"swap={engine}", device="cuda", kernels="device",
        gen_batch=batch, precision=precision if precision in cls.precisions else "fp32",
        allow_synthetic=True), ModelStore())
    want = plan.stages["swap"].engine_config()
    assert got.options == want.options and got.batch == want.batch
    if precision in cls.precisions:  # the torch engines cast; graph engines run the graph's
        assert got.precision == want.precision
    assert got.options.get("cuda_graph") is True  # the measured best: a CUDA graph per shape
    if cls.channels_last:
        assert got.options.get("channels_last") is True


def test_seed_baselines_run_plain(synthetic_home):
    cfg = BenchConfig(engines=("torch", "ort-cuda"), precisions=("fp32",), batches=(4,),
                      stages=("swap256",), device="cuda", allow_synthetic=True)
    runner = BenchRunner(cfg, progress=False)
    for g in runner.groups:
        config, tuning = runner.engine_config(g, get_engine(g.engine), "cuda", 4)
        assert tuning == PLAIN and dict(config.options) == {}
        assert str(config.batch) == "4:4:4"


def test_seed_preset_on_the_cpu_writes_summary_and_table(synthetic_home, tmp_path, capsys):
    out = tmp_path / "seed"
    code = main(["bench", "--preset", "seed", "--allow-synthetic", "--engines",
                 "torch,ort-cuda,trt", "--stages", "swap128,video", "--batch", "1,2",
                 "--runs", "2", "--warmup", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rows to run, estimated ~" in printed
    doc = json.loads((out / "bench.json").read_text())
    assert report.validate(doc) == []
    s = doc["summary"]
    assert s["preset"] == "seed" and s["wall_s"] == doc["elapsed_s"] and "gpu" in s
    ok = [r for r in doc["rows"] if r["status"] == "ok"]
    assert ok and len(s["rows"]) == len(ok)
    assert set(s["rows"][0]) >= {"model", "engine", "precision", "batch", "p50_ms", "fps",
                                 "mem_mb"}
    torch32 = [r for r in doc["rows"] if (r["engine"], r["precision"]) == ("torch", "fp32")]
    assert torch32 and all(r["engine_config"]["tuning"] == PLAIN for r in torch32)
    # one best row per measured batch, and it is the fastest one there
    for b in (1, 2):
        here = [r for r in ok if r["stage"] == "swap128" and r["batch"] == b]
        best = [r for r in here if r["best"]]
        assert len(best) == 1 and best[0]["fps"] == max(r["fps"] for r in here)
    trt = [r for r in doc["rows"] if r["engine"] == "trt"]
    assert {r["precision"] for r in trt} == {"fp32", "fp16", "int8"}
    assert all(r["status"] == "unavailable" and r["reason"] for r in trt)
    video = [r for r in doc["rows"] if r["stage"] == "video"]
    assert {r["engine"] for r in video} == {"gpu-path", "facefusion-loop"}
    assert all(r["status"] == "unavailable" and "--device cuda" in r["reason"] for r in video)
    md = (out / "bench.md").read_text()
    assert "Preset **seed**" in md and "★" in md and "torch / fp32 (plain)" in md
    png = (out / "bench_table.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_full_preset_resumes_finished_rows(synthetic_home, tmp_path, capsys, caplog):
    out = tmp_path / "full"
    args = ["bench", "--preset", "full", "--allow-synthetic", "--engines", "ort-cpu",
            "--stages", "embed",
            "--batch", "1,2", "--runs", "2", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    first = json.loads((out / "bench.json").read_text())
    assert [r["status"] for r in first["rows"]] == ["ok", "ok"]
    capsys.readouterr()
    assert main(args) == 0
    assert "0 rows to run (2 kept from" in capsys.readouterr().out
    again = json.loads((out / "bench.json").read_text())
    assert [r["latency_ms"] for r in again["rows"]] == [r["latency_ms"] for r in first["rows"]]
    assert all("kept from the earlier run" in " ".join(r["notes"]) for r in again["rows"])
    # a cut-off result file is not trusted: the run starts afresh
    (out / "bench.json").write_text((out / "bench.json").read_text()[:200])
    assert main(args) == 0
    assert "2 rows to run," in capsys.readouterr().out
