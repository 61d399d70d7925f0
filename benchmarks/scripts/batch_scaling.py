#!/usr/bin/env python3
"""Measure how a ``fusionrt batch`` job scales with the number of Ray workers: the same set of
generated clips processed with 1, 2, … workers; wall time (worker start-up included, Ray start
excluded), frames/s overall and per worker, speed-up over the first count.

CPU (this is what produced benchmarks/results/2026-11-25-cpu/batch_scaling.*):
    python benchmarks/scripts/batch_scaling.py --workers 1,2 --swapper classic --det-size 320 \\
        --out-dir benchmarks/results/2026-11-25-cpu
2-GPU machine (one warm worker per GPU; not run by the author of this script):
    python benchmarks/scripts/batch_scaling.py --workers 1,2 --gpus-per-worker 1 --engine ort-cuda \\
        --size 1280x720 --clips 16 --seconds 4 --out-dir benchmarks/results/<date>-<gpu>

Each count runs ``--repeats`` times into a fresh output folder; the table shows the best
(least disturbed by other load) run and the JSON keeps every run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _make_clips(d: Path, n: int, seconds: float, fps: int, size: str) -> None:
    spec = importlib.util.spec_from_file_location("make_test_video", ROOT / "tests" / "videos.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mod.make_test_video(d / f"clip{i:03d}.mp4", seconds, fps, size)


def _run(args: argparse.Namespace, clips: Path, out: Path, workers: int) -> dict:
    from fusionrt.batch.jobs import plan_job
    from fusionrt.batch.runner import BatchConfig, run_batch
    from fusionrt.batch.commands import path_settings
    from fusionrt.pipeline.settings import PipelineConfig
    gpu = args.gpus_per_worker > 0
    pipe = PipelineConfig(swapper=args.swapper, det_size=args.det_size,
                          engine=args.engine or "default",
                          device="cuda" if gpu else "cpu", allow_synthetic=args.allow_synthetic)
    pipe, video = path_settings(pipe, "gpu" if args.gpu_path else "cpu", args.batch,
                                args.precision, args.preset)
    cfg = BatchConfig(str(ROOT / "examples" / "grace_hopper.jpg"), pipe, address=args.address,
                      workers=workers, cpus_per_worker=args.cpus_per_worker,
                      gpus_per_worker=args.gpus_per_worker, retries=0, video=video)
    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    report = run_batch(cfg, plan_job(clips, out, args.segment_seconds))
    wall = time.perf_counter() - t0
    if report.count("done") != args.clips:
        raise SystemExit(f"run with {workers} workers | {report.count('failed')} clips failed: "
                         f"{[i.error for i in report.items if i.error]}")
    return {"workers": workers, "wall_s": round(wall, 3), "frames": report.frames,
            "fps": round(report.frames / wall, 2), "load_avg_1m_before": round(load, 2),
            "per_worker": [{"name": w.name.rsplit("-", 1)[-1], "host": w.host, "items": w.items,
                            "frames": w.frames, "busy_s": round(w.busy_s, 2), "fps": round(w.fps, 2),
                            "cpu_s": round(w.cpu_s, 2), "cores": round(w.cores, 2)}
                           for w in report.workers]}


def _markdown(result: dict) -> str:
    m, p = result["machine"], result["params"]
    lines = [f"# Batch scaling ({result['date']})", "",
             f"Machine: {m['cpu']} ({m['cpu_count']} logical CPUs), {m.get('gpu_name') or 'no GPU'}; "
             f"Python {m['python']}, Ray {result['ray']}, onnxruntime {m['onnxruntime']}, "
             f"PyAV {result['av']}.",
             f"Work: {p['clips']} clips × {p['seconds']} s at {p['fps']} fps, {p['size']}, swapper "
             f"`{p['swapper']}`, det-size {p['det_size']}, "
             + (f"GPU video path (batch {p['batch']}, {p['precision']}, x264 {p['preset']}), "
                if p.get("gpu_path") else "per-frame CPU path, ")
             + f"{p['cpus_per_worker']} CPU / "
             f"{p['gpus_per_worker']} GPU per worker; best of {p['repeats']} run(s).",
             f"Command: `{m['command']}`", "",
             "| workers | wall s | frames | frames/s | speed-up | per-worker FPS (busy) | "
             "sum of busy FPS | speed-up (busy) | CPU cores used by workers | load before |",
             "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    base = result["best"][0]["fps"]
    busy0 = sum(w["fps"] for w in result["best"][0]["per_worker"])
    for r in result["best"]:
        per = ", ".join(f"{w['name']} {w['fps']:.1f}" for w in r["per_worker"])
        busy = sum(w["fps"] for w in r["per_worker"])
        cores = sum(w["cpu_s"] for w in r["per_worker"]) / r["wall_s"]
        lines.append(f"| {r['workers']} | {r['wall_s']:.2f} | {r['frames']} | {r['fps']:.2f} | "
                     f"{r['fps'] / base:.2f}× | {per} | {busy:.1f} | {busy / busy0:.2f}× | "
                     f"{cores:.2f} | {r['load_avg_1m_before']} |")
    lines += ["", "Every run, in the order run (repeats interleave the counts):", "",
              "| run | workers | wall s | frames/s | CPU cores used | CPU ms/frame | load before |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for k, r in enumerate(result["runs"]):
        cpu = sum(w["cpu_s"] for w in r["per_worker"])
        lines.append(f"| {k + 1} | {r['workers']} | {r['wall_s']:.2f} | {r['fps']:.2f} | "
                     f"{cpu / r['wall_s']:.2f} | {1000 * cpu / r['frames']:.1f} | "
                     f"{r['load_avg_1m_before']} |")
    lines += ["", "Wall time includes starting the workers (pipeline load + source face), not "
              "starting Ray. frames/s = all frames / wall time; per-worker FPS = its frames / its "
              "busy time; sum of busy FPS = the workers' steady-state throughput together (start-up "
              "excluded); CPU cores used = the workers' CPU time (all threads: detector, swap, "
              "decoder, x264) / wall time. 'load before' is the 1-minute load average: other "
              "processes on the machine compete for the same cores.", ""]
    if result.get("notes"):
        lines += [result["notes"], ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--swapper", default="classic")
    ap.add_argument("--engine", help="as fusionrt swap --engine (default: default)")
    ap.add_argument("--det-size", type=int, default=320)
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--gpus-per-worker", type=float, default=0.0)
    ap.add_argument("--segment-seconds", type=float, default=0.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    ap.add_argument("--gpu-path", action="store_true",
                    help="workers run the device kernels (the GPU video path)")
    ap.add_argument("--batch", type=int, default=32, help="GPU path: frames per batch")
    ap.add_argument("--precision", default="fp32", help="GPU path: generator precision")
    ap.add_argument("--preset", default="veryfast", help="GPU path: x264 preset")
    ap.add_argument("--allow-synthetic", action="store_true",
                    help="random-weight models (synthesized at full size if missing): speed only")
    ap.add_argument("--notes", default="", help="a sentence added to the Markdown (context)")
    ap.add_argument("--out-dir", default="benchmarks/results/batch-scaling")
    args = ap.parse_args()

    import av
    import ray

    from fusionrt.runtime.machine import machine_info
    from fusionrt.batch.runner import BatchConfig, connect
    counts = [int(x) for x in args.workers.split(",")]
    if args.allow_synthetic and args.swapper != "classic":
        from fusionrt.models.store import ModelStore
        store = ModelStore()
        from fusionrt.builders.synth import ensure_synthetic
        ensure_synthetic(store, [n for n in (args.swapper, "arcface_w600k_r50")
                                 if store.installed(n) is None])
    work = Path(tempfile.mkdtemp(prefix="fusionrt-scaling-"))
    try:
        _make_clips(work / "in", args.clips, args.seconds, args.fps, args.size)
        connect(BatchConfig("", address=args.address,
                            ray_init={} if args.address else {"num_cpus": os.cpu_count()}))
        runs = [_run(args, work / "in", work / f"out{n}", n)
                for _ in range(args.repeats) for n in counts]
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    best = [max((r for r in runs if r["workers"] == n), key=lambda r: r["fps"]) for n in counts]
    result = {"date": time.strftime("%Y-%m-%d"), "ray": ray.__version__, "av": av.__version__,
              "machine": machine_info("cuda" if args.gpus_per_worker else "cpu"),
              "params": {k: v for k, v in vars(args).items() if k not in ("out_dir", "notes")},
              "notes": args.notes, "best": best, "runs": runs}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch_scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "batch_scaling.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
