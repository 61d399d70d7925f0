"""fusionrt bench on the CPU with tiny synthetic models: files, schema, ratio math (stub clock),
unavailable backends, --compare. No assertion depends on measured speed."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from fusionrt.bench import report
from fusionrt.bench.markdown import to_markdown
from fusionrt.bench.config import CPU_DEFAULTS, CUDA_DEFAULTS, BenchConfig, with_defaults
from fusionrt.bench.runner import BenchRunner
from fusionrt.bench.timers import FixedTimer, PerfCounterTimer, RowKey, summarize
from fusionrt.cli import main
from fusionrt.engines.onnxruntime import OrtCpuEngine
from fusionrt.engines.registry import get_engine
from fusionrt.errors import InputError

pytest.importorskip("torch")


class FakeOrtCuda(OrtCpuEngine):
    """Stands in for the ort-cuda baseline on a CPU machine (runs on the CPU provider)."""

    name = "ort-cuda"
    devices = ("cpu",)


def _lookup(name):
    return FakeOrtCuda if name == "ort-cuda" else get_engine(name)


def _stub_run(durations, engines=("torch", "ort-cuda", "ort-cpu"), **kw) -> dict:
    cfg = BenchConfig(engines=engines, precisions=("fp32",), batches=(1, 2), stages=("embed",),
                      runs=2, warmup=1, allow_synthetic=True, **kw)
    return BenchRunner(cfg, timer_factory=lambda device: FixedTimer(durations),
                       engine_lookup=_lookup, progress=False).run()


DURATIONS = {("torch", "fp32"): 10.0, ("ort-cuda", "fp32"): 5.0, ("ort-cpu", "fp32"): 20.0}


@pytest.fixture(scope="module")
def stub_doc(synthetic_store):
    """One run on the fixed clock, shared by the tests that only read it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONRT_HOME", str(synthetic_store))
        return _stub_run(DURATIONS)


def _rows(doc, **match):
    return [r for r in doc["rows"] if all(r[k] == v for k, v in match.items())]


@pytest.mark.slow
def test_bench_cli_writes_valid_json_md_png(synthetic_home, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["bench", "--allow-synthetic", "--engines", "ort-cpu,torch", "--batch", "1,2",
                 "--runs", "2", "--detect-size", "160", "--out", str(out), "--no-progress"])
    assert code == 0
    doc = json.loads((out / "bench.json").read_text())
    assert report.validate(doc) == []
    assert doc["machine"]["command"]  # sys.argv of this process (pytest's, here)
    assert doc["synthetic"] is True
    # every stage x engine x batch is a row; pipeline rows are batch 1 only
    assert len(doc["rows"]) == 4 * 2 * 2 + 2
    for stage in ("embed", "swap128", "swap256"):
        for engine in ("ort-cpu", "torch"):
            rows = _rows(doc, stage=stage, engine=engine)
            assert [r["batch"] for r in rows] == [1, 2]
            for r in rows:
                assert r["status"] == "ok", r["reason"]
                assert r["runs"] == 2 and r["latency_ms"]["p99"] >= r["latency_ms"]["p50"] > 0
                assert r["weights_note"].startswith("synthetic random weights: speed only")
                assert r["parity"]["reference"] == "ort-cpu/fp32"
                assert r["parity"]["passed"] is True  # FP32 on both sides
                assert r["load"]["cold_load_ms"] > 0 and r["load"]["warm_load_ms"] > 0
    assert _rows(doc, stage="detect", engine="ort-cpu", batch=2)[0]["synthetic"] is False
    for r in doc["rows"]:  # torch on the detector needs onnx2torch: ok or listed with a reason
        assert r["status"] == "ok" or r["reason"]
    md = (out / "bench.md").read_text()
    assert "synthetic random weights: speed only; quality figures are for random weights" in md
    assert "| engine / precision | batch | latency mean (ms) | p50 | p95 | p99 | GPU mem (MB) " \
           "| FPS | speedup vs PyTorch FP32 eager | speedup vs ORT CUDA FP32 |" in md
    assert "the seed's published figures (not measured by fusionrt)" in md
    assert "| TensorRT FP16 | 1 | 26.8 |" in md
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import cv2
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape[2] == 3
    assert str(out / "bench.json") in capsys.readouterr().out


def test_speedups_from_fixed_durations(stub_doc):
    doc = stub_doc
    assert report.validate(doc) == []
    for batch in (1, 2):
        cuda = _rows(doc, engine="ort-cuda", batch=batch)[0]
        torch_row = _rows(doc, engine="torch", batch=batch)[0]
        cpu = _rows(doc, engine="ort-cpu", batch=batch)[0]
        assert cuda["speedup_vs_torch_fp32"] == 2.0
        assert cuda["speedup_vs_ort_cuda_fp32"] == 1.0
        assert torch_row["speedup_vs_ort_cuda_fp32"] == 0.5
        assert cpu["speedup_vs_torch_fp32"] == 0.5
        assert cpu["speedup_vs_ort_cuda_fp32"] == 0.25
        assert torch_row["latency_ms"]["p95"] == 10.0
        # FPS = batch x runs / total time = batch x 2 / 0.020 s
        assert torch_row["fps"] == pytest.approx(batch * 100.0)
        assert cuda["fps"] == pytest.approx(batch * 200.0)
    md = to_markdown(doc)
    assert "| ort-cuda / fp32 (plain) † ★ | 2 | 5.00 | 5.00 | 5.00 | 5.00 | — | 400.0 | 2.00× | 1.00× |" in md


def test_speedup_missing_or_failed_baseline_is_none():
    def row(engine, prec, ms, status="ok"):
        return {"stage": "swap256", "batch": 1, "engine": engine, "precision": prec,
                "status": status, "latency_ms": {"mean": ms} if status == "ok" else None}
    rows = report.compute_speedups([row("torch", "fp32", 0, "error"), row("ort-cuda", "fp16", 4)])
    assert rows[1]["speedup_vs_torch_fp32"] is None
    assert rows[1]["speedup_vs_ort_cuda_fp32"] is None
    rows = report.compute_speedups([row("torch", "fp32", 9.0), row("trt", "fp16", 3.0)])
    assert rows[1]["speedup_vs_torch_fp32"] == 3.0


def test_unavailable_backends_are_rows_with_reasons(synthetic_home):
    cfg = BenchConfig(engines=("ort-cpu", "ort-cuda", "trt", "torch"),
                      precisions=("fp32", "int8"), batches=(1,), stages=("embed",), runs=1,
                      warmup=1, allow_synthetic=True)
    doc = BenchRunner(cfg, timer_factory=lambda d: FixedTimer(lambda key: 1.0),
                      progress=False).run()
    assert report.validate(doc) == []
    assert len(doc["rows"]) == 4 * 2
    cuda = _rows(doc, engine="ort-cuda", precision="fp32")[0]
    assert cuda["status"] == "unavailable"
    assert "CUDAExecutionProvider" in cuda["reason"]
    trt = _rows(doc, engine="trt", precision="fp32")[0]
    assert trt["status"] == "unavailable" and "not available on this machine" in trt["reason"]
    t8 = _rows(doc, engine="torch", precision="int8")[0]
    assert t8["status"] == "unavailable" and "no INT8 path" in t8["reason"]
    assert _rows(doc, engine="ort-cpu", precision="fp32")[0]["status"] == "ok"
    md = to_markdown(doc)
    assert "- trt / fp32 (batch 1): **unavailable** — not available on this machine" in md
    assert "- torch / int8 (batch 1): **unavailable** — torch engines have no INT8 path" in md


def test_missing_model_without_allow_synthetic_is_listed(synthetic_home):
    cfg = BenchConfig(engines=("ort-cpu",), stages=("swap256",), runs=1, warmup=1)
    doc = BenchRunner(cfg, timer_factory=lambda d: PerfCounterTimer(), progress=False).run()
    (row,) = doc["rows"]
    assert row["status"] == "unavailable"
    assert "fusionrt models pull simswap_256" in row["reason"]


def test_budget_skips_rows_with_reason(synthetic_home):
    doc = _stub_run({("torch", "fp32"): 1.0, ("ort-cuda", "fp32"): 1.0,
                     ("ort-cpu", "fp32"): 1.0}, budget_s=0.0)
    assert {r["status"] for r in doc["rows"]} == {"skipped"}
    assert all("time budget of 0 s" in r["reason"] for r in doc["rows"])
    assert report.validate(doc) == []


def test_partial_results_are_written_after_each_row(synthetic_home):
    snapshots = []
    cfg = BenchConfig(engines=("ort-cpu", "torch"), batches=(1, 2), stages=("embed",), runs=1,
                      warmup=1, allow_synthetic=True)
    BenchRunner(cfg, timer_factory=lambda d: FixedTimer(lambda k: 2.0),
                on_row=lambda doc: snapshots.append(copy.deepcopy(doc)), progress=False).run()
    assert len(snapshots) == 4 + 1  # one per row, one final
    first = snapshots[0]
    assert [r["status"] for r in first["rows"]].count("pending") == 3
    assert report.validate(first) == []
    md = to_markdown(first)
    assert "**pending** — the run ended before this row" in md
    assert "Partial results" in md


def _slower(doc: dict, engine: str, factor: float, drop: str) -> dict:
    """A second result file: ``engine`` ``factor`` times slower, ``drop``'s rows absent."""
    out = copy.deepcopy(doc)
    out["rows"] = [r for r in out["rows"] if r["engine"] != drop]
    for r in out["rows"]:
        if r["engine"] == engine:
            r["latency_ms"] = {k: v * factor for k, v in r["latency_ms"].items()}
            r["fps"] /= factor
    return out


def test_compare_prints_per_row_deltas(stub_doc, tmp_path, capsys):
    a, b = stub_doc, _slower(stub_doc, "torch", 2.0, drop="ort-cpu")
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(report.to_json(a))
    pb.write_text(report.to_json(b))
    assert main(["bench", "--compare", str(pa), str(pb)]) == 0
    text = capsys.readouterr().out
    lines = {tuple(ln.split()[:5]): ln for ln in text.splitlines() if ln.startswith("embed")}
    torch1 = lines[("embed", "torch", "/", "fp32", "1")]
    assert "10.00" in torch1 and "20.00" in torch1 and "+10.00" in torch1 and "+100.0%" in torch1
    assert "0.50" in torch1  # FPS ratio b / a
    assert "+0.00" in lines[("embed", "ort-cuda", "/", "fp32", "2")]
    assert "b: absent" in lines[("embed", "ort-cpu", "/", "fp32", "1")]


def test_compare_rejects_a_non_bench_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": []}))
    assert main(["bench", "--compare", str(bad), str(bad)]) == 2
    assert "not a fusionrt bench file: document | missing key 'schema'" in capsys.readouterr().err


def test_schema_validation_names_missing_keys(stub_doc):
    broken = copy.deepcopy(stub_doc)
    del broken["machine"]["gpu_driver"]
    del broken["rows"][0]["fps"]
    broken["rows"][1]["latency_ms"].pop("p99")
    broken["rows"][2].update(status="error", reason=None)
    errors = report.validate(broken)
    assert "machine | missing key 'gpu_driver'" in errors
    assert "row 0 | missing key 'fps'" in errors
    assert any(e.startswith("row 1 | 'latency_ms' lacks") for e in errors)
    assert "row 2 | status error without a reason" in errors


def test_bad_stage_is_refused():
    with pytest.raises(InputError, match=r"--stages \| unknown \['swap512'\]"):
        BenchConfig(stages=("swap512",)).validate()


def test_bad_precision_is_refused():
    with pytest.raises(InputError, match=r"--precisions \| unknown \['int4'\]"):
        BenchConfig(precisions=("int4",)).validate()


def test_zero_warmup_is_refused():
    with pytest.raises(InputError, match=r"--runs/--warmup \| got 5/0; expected >= 1"):
        BenchConfig(warmup=0).validate()


def test_bad_batch_is_refused():
    with pytest.raises(InputError, match=r"--batch \| got \[0\]; expected sizes >= 1"):
        BenchConfig(batches=(0,)).validate()


def test_bad_device_is_refused(capsys):
    assert main(["bench", "--device", "tpu"]) == 2
    assert "--device | got 'tpu'; expected cpu, cuda or cuda:N" in capsys.readouterr().err


def test_device_defaults_keep_the_cpu_run_small():
    cpu = with_defaults(BenchConfig(), device="cpu", engines=None, precisions=None,
                        batches=None, stages=None, runs=None, warmup=None)
    assert (cpu.engines, cpu.precisions, cpu.batches, cpu.runs, cpu.warmup) == (
        CPU_DEFAULTS["engines"], ("fp32",), (1,), 5, 1)
    gpu = with_defaults(BenchConfig(), device="cuda", engines=None, precisions=None,
                        batches=(1, 8), stages=None, runs=None, warmup=None)
    assert gpu.batches == (1, 8) and gpu.engines == CUDA_DEFAULTS["engines"]
    assert gpu.precisions == ("fp32", "fp16", "int8") and gpu.runs == CUDA_DEFAULTS["runs"]


def test_timers_and_summary():
    calls = []
    timing, out = PerfCounterTimer().measure(lambda: calls.append(1) or len(calls), 3,
                                             RowKey("embed", "ort-cpu", "fp32", 1))
    assert out == 3 and timing.runs == 3 and timing.latency_ms == timing.wall_ms
    timing, out = FixedTimer({("torch", "fp16"): 4.0}).measure(
        lambda: "y", 5, RowKey("embed", "torch", "fp16", 2))
    assert out == "y" and timing.latency_ms == (4.0,) * 5 and timing.total_wall_s == 0.02
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s["mean"], s["p50"], s["min"], s["max"]) == (22.0, 3.0, 1.0, 100.0)
    assert s["p95"] == pytest.approx(80.8) and s["p99"] == pytest.approx(96.16)
    assert summarize([]) is None


@pytest.mark.slow
def test_fp16_rows_load_converted_and_gated_graphs(synthetic_home):
    cfg = BenchConfig(engines=("ort-cpu",), precisions=("fp16",), batches=(1,),
                      stages=("detect", "embed"), runs=1, warmup=1, allow_synthetic=True,
                      detect_size=160)
    run = lambda: BenchRunner(cfg, timer_factory=lambda d: FixedTimer(lambda k: 1.0),  # noqa
                              progress=False).run()
    doc = run()
    embed = _rows(doc, stage="embed")[0]
    assert embed["status"] == "ok", embed["reason"]
    assert embed["artifact"].endswith("arcface_w600k_r50.fp16.onnx")
    assert embed["gate"]["passed"] is True and "embed_cosine" in embed["gate"]["summary"]
    assert embed["load"]["artifact_build_ms"] > 0
    assert "FP16 graph built and gated by this run" in embed["notes"][0]
    detect = _rows(doc, stage="detect")[0]
    assert detect["status"] == "ok", detect["reason"]
    assert detect["artifact"].endswith(".fp16.onnx")
    assert detect["gate"] is not None or "WITHOUT the quality gate" in detect["notes"][0]
    again = _rows(run(), stage="embed")[0]  # the second run reuses the gated file
    assert again["load"]["artifact_build_ms"] is None
    assert again["notes"][0] == "FP16 graph from fusionrt build: arcface_w600k_r50.fp16.onnx"
    assert again["gate"]["passed"] is True


class FallsBackTrt(OrtCpuEngine):
    """Like ort-trt on a machine without TensorRT libraries: loads, but on another provider."""

    name = "ort-trt"
    devices = ("cpu",)
    loads = 0

    def _load(self):
        type(self).loads += 1
        super()._load()
        self.fell_back = True


def test_trt_ep_fallback_is_listed_not_timed(synthetic_home):
    cfg = BenchConfig(engines=("ort-trt",), batches=(1, 2), stages=("embed", "swap128"),
                      runs=1, warmup=1, allow_synthetic=True)
    lookup = lambda n: FallsBackTrt if n == "ort-trt" else get_engine(n)  # noqa: E731
    doc = BenchRunner(cfg, timer_factory=lambda d: FixedTimer(lambda k: 1.0),
                      engine_lookup=lookup, progress=False).run()
    assert {r["status"] for r in doc["rows"]} == {"unavailable"}
    assert all("fell back to the CUDA EP" in r["reason"] for r in doc["rows"])
    assert FallsBackTrt.loads == 1  # the second stage was not loaded again
