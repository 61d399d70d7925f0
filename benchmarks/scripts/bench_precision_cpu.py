#!/usr/bin/env python3
"""CPU benchmark of INT8 (Q/DQ, ORT CPU) against FP32 for the generators and ArcFace.

For each model: full-size synthetic (random-weight) FP32 ONNX → calibration set of augmented
crops of the repo's two example photos → INT8 Q/DQ graph → quality gate on held-out crops →
latency of FP32 and INT8 on ORT CPU (batch 1). Writes ``results.json`` and ``results.md`` into
``--out`` with the machine facts and the exact command.

    python3 benchmarks/scripts/bench_precision_cpu.py --out benchmarks/results/2026-11-25-cpu

The calibration set is 2 photos augmented (flips, scale, brightness, small rotations): not a
diverse set. The models have random weights: the quality figures are for random weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_precision_cpu")
MODELS = ("inswapper_128", "simswap_256", "arcface_w600k_r50")


def session(path: Path, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def interleaved_latency(paths: dict[str, Path], spec, feed: dict, threads: int, warmup: int,
                        iters: int) -> dict[str, dict]:
    """Time every variant in turn (fp32, int8, fp32, int8, ...): the 2 shared cores' load then
    hits all variants alike, and the speed-up is taken on medians and on minima."""
    names = [t.name for t in spec.outputs]
    sessions = {k: session(p, threads) for k, p in paths.items()}
    for _ in range(warmup):
        for s in sessions.values():
            s.run(names, feed)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(iters):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(names, feed)
            times[k].append((time.perf_counter() - t) * 1000.0)
    out = {}
    for k, ts in times.items():
        a = np.asarray(ts)
        out[k] = {"median_ms": float(np.median(a)), "mean_ms": float(a.mean()),
                  "p90_ms": float(np.percentile(a, 90)), "min_ms": float(a.min()),
                  "iters": iters, "warmup": warmup, "file_mb": paths[k].stat().st_size / 2**20}
    return out


def bench_model(name: str, args, store, embedder) -> dict:
    from fusionrt.builders.calibrate import load_calibration
    from fusionrt.pipeline.artifacts import build_calibration_set, identity_crops
    from fusionrt.builders.gate import evaluate
    from fusionrt.builders.int8 import Int8Options, qdq_summary, quantize_int8
    from fusionrt.builders.synth import synthesize
    from fusionrt.models.zoo import get_spec
    import onnx
    spec = get_spec(name)
    fp32 = store.synthetic_path(name)
    if not fp32.is_file():
        t = time.perf_counter()
        synthesize(name, fp32, seed=0, width=1.0)
        log.info("synthesized %s in %.0f s", name, time.perf_counter() - t)
    cal_path = Path(args.work) / f"{name}-cal-{args.count}.npz"
    if not cal_path.is_file():
        build_calibration_set(name, ROOT / "examples", args.count, seed=0, do_augment=True,
                              embedder=embedder, model_path=fp32).save(cal_path)
    cal = load_calibration(cal_path)
    fit, held = cal.split(args.holdout)
    row: dict = {"model": name, "calibration": {"crops": len(cal), "fit": len(fit),
                                                "held_out": len(held), "augmented":
                                                cal.meta.get("augmented"), "seed": 0}}
    feed = next(held.feeds(spec))
    paths = {"fp32": fp32}
    variants = [(m, a) for m in args.methods for a in args.activations]
    for method, act in variants:
        key = f"int8_{method}" + ("" if act == "s8" else f"_{act}")
        out = Path(args.work) / f"{name}.{key}.onnx"
        t = time.perf_counter()
        rep = quantize_int8(fp32, out, fit.feeds(spec), spec=spec,
                            options=Int8Options(method=method, activations=act))
        build_s = time.perf_counter() - t
        gate = evaluate(spec, fp32, out, "int8", list(held.feeds(spec)),
                        id_embed=embedder.embed_crops if spec.task == "swap" else None,
                        id_crops=identity_crops if spec.task == "swap" else None,
                        synthetic=True)
        paths[key] = out
        row[key] = {
            "activations": act, "build_s": build_s, "gate_passed": gate.passed,
            "figures": {f.metric: f.value for f in gate.figures},
            "thresholds": {f.metric: f.threshold for f in gate.figures},
            "qdq": qdq_summary(onnx.load(str(out), load_external_data=False)),
            "float_nodes": len(rep.excluded)}
        log.info("%s %s gate %s: %s", name, key, "pass" if gate.passed else "FAIL",
                 gate.summary())
    lat = interleaved_latency(paths, spec, feed, args.threads, args.warmup, args.iters)
    row["fp32"] = lat["fp32"]
    for k in [k for k in paths if k != "fp32"]:
        row[k].update(lat[k])
        row[k]["speedup_median"] = lat["fp32"]["median_ms"] / lat[k]["median_ms"]
        row[k]["speedup_min"] = lat["fp32"]["min_ms"] / lat[k]["min_ms"]
        log.info("%s %s: median %.0f ms vs fp32 %.0f ms (x%.2f; on minima x%.2f)", name, k,
                 lat[k]["median_ms"], lat["fp32"]["median_ms"], row[k]["speedup_median"],
                 row[k]["speedup_min"])
    return row


def to_markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = ["# INT8 vs FP32 on ONNX Runtime CPU", "",
             f"- date: {m['date']}", f"- CPU: {m['cpu']} ({m['cpu_count']} cores visible, "
             f"{doc['settings']['threads']} ORT threads)", f"- onnxruntime {m['onnxruntime']}, "
             f"torch {m['torch']}, numpy {m['numpy']}, python {m['python']}, fusionrt "
             f"{m['fusionrt']}", f"- platform: {m['platform']}", f"- command: `{m['command']}`",
             f"- settings: `{json.dumps(doc['settings'])}`", "",
             "**Random weights**: every model is a full-size synthetic (random-weight) model with "
             "the real I/O contract; the quality figures are for random weights, not for the real "
             "models. **Calibration**: augmented crops (flips, scale, brightness, small rotations) "
             "of the repo's two example photos; not a diverse set.", "",
             "| model | FP32 median (min) ms | INT8 method | INT8 median (min) ms | speed-up "
             "median (min) | gate | figures (held-out crops) |",
             "|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        for k, v in r.items():
            if not k.startswith("int8_"):
                continue
            figs = ", ".join(f"{a} {b:.4g}" for a, b in v["figures"].items())
            f32 = r["fp32"]
            lines.append(f"| {r['model']} | {f32['median_ms']:.0f} ({f32['min_ms']:.0f}) | "
                         f"{k[5:]} | {v['median_ms']:.0f} ({v['min_ms']:.0f}) | "
                         f"{v['speedup_median']:.2f}x ({v['speedup_min']:.2f}x) | "
                         f"{'pass' if v['gate_passed'] else 'FAIL'} | {figs} |")
    lines += ["", "Latency: batch 1, ORT CPU, FP32 and INT8 sessions timed in turn (interleaved) "
              "after warm-up; median and minimum of the timed iterations (mean/p90 in "
              "results.json). The machine's 2 cores were shared with other processes during "
              "the run (load average in results.json), so the minima are the cleaner figures.",
              ""]
    lines += [f"- {n}" for n in doc.get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/2026-11-25-cpu")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fusionrt-bench-cpu"),
                    help="FUSIONRT_HOME and scratch for the big synthetic models")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=["entropy"])
    ap.add_argument("--activations", nargs="+", default=["s8"], choices=["s8", "u8"],
                    help="s8: symmetric signed (TensorRT-compatible); u8: asymmetric unsigned "
                    "(ORT CPU's U8S8 kernels)")
    ap.add_argument("--name", default="results", help="result file stem in --out")
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--holdout", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--append", action="store_true",
                    help="keep the rows already in --out/results.json (models measured earlier)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["FUSIONRT_HOME"] = str(args.work)
    from fusionrt.runtime.machine import command_line, machine_info
    from fusionrt.builders.synth import synthesize
    from fusionrt.engines.registry import get_engine
    from fusionrt.models.store import ModelStore
    from fusionrt.pipeline.host.embed import Embedder
    store = ModelStore()
    arc = store.synthetic_path("arcface_w600k_r50")
    if not arc.is_file():
        synthesize("arcface_w600k_r50", arc, seed=0, width=1.0)
    embedder = Embedder(get_engine("ort-cpu")(store.resolve("arcface_w600k_r50",
                                                            allow_synthetic=True)).load())
    doc = {"machine": dict(machine_info("cpu", command_line()),
                           load_average_at_start=os.getloadavg()),
           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "rows": [], "notes": [
               "synthetic full-size models (width 1.0), random weights: quality figures are for "
               "random weights",
               "INT8: onnxruntime.quantization static QDQ, per-channel symmetric INT8 weights; "
               "activations s8 = signed symmetric (TensorRT-compatible; ORT CPU on x86 fuses only "
               "part of an S8S8 graph into integer kernels), u8 = unsigned asymmetric (ORT "
               "CPU's native U8S8/VNNI path, not loadable by TensorRT); norms, keep-list ops, "
               "AdaIN style Gemms and the last conv left float",
               "the ID-cosine judge is the synthetic (random-weight) ArcFace"]}
    old = args.out / f"{args.name}.json"
    if args.append and old.is_file():
        prev = json.loads(old.read_text())
        doc["rows"] = [r for r in prev["rows"] if r["model"] not in args.models]
        doc["earlier_runs"] = prev.get("earlier_runs", []) + [
            {"machine": prev["machine"], "settings": prev["settings"],
             "models": [r["model"] for r in doc["rows"]]}]
    for name in args.models:
        doc["rows"].append(bench_model(name, args, store, embedder))
        doc["machine"]["load_average_at_end"] = os.getloadavg()
        args.out.mkdir(parents=True, exist_ok=True)  # write after each model: partial runs count
        (args.out / f"{args.name}.json").write_text(json.dumps(doc, indent=2))
        (args.out / f"{args.name}.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
