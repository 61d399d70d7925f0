"""The GPU video path on one GPU (issue 7): 1080p, one face per frame, real RetinaFace, synthetic
full-size inswapper_128 (random weights: speed only), against a FaceFusion-style loop in the
same run.

Rows: compute only (device-resident batches), GPU only (pre-decoded frames in memory, upload +
GPU + download, no encode), I/O only (decode + transfers + encode, no GPU work), end to end
(decode → GPU → encode, one per encoder setting), and the baseline: ``FaceSwapper`` on the host
kernels with ``engine="ort-cuda"`` (per-frame ORT CUDA sessions, CPU pre/post-processing, numpy
in/out) on ``process_video``. Per-stage GPU time (CUDA events), queue waits, GPU utilisation (NVML) and a
parity check against the baseline's frames are recorded.

Usage (on a GPU): python3 benchmarks/scripts/gpu_video_bench.py --out DIR [--seconds 20] [--budget-s 330]
Writes DIR/gpu_video.json and DIR/gpu_video.md after every row (partial results survive).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # videos.py, the test clip
sys.path.insert(0, str(ROOT))

from videos import make_test_video  # noqa: E402

from fusionrt.runtime.machine import machine_info  # noqa: E402
from fusionrt.pipeline.video.loop import VideoConfig, run_batches, transcode  # noqa: E402
from fusionrt.pipeline.device.stage import DeviceFrameStage  # noqa: E402
from fusionrt.pipeline.settings import PipelineConfig  # noqa: E402
from fusionrt.pipeline.swapper import FaceSwapper  # noqa: E402
from fusionrt.pipeline.device.timing import GpuUtilSampler, Waits  # noqa: E402
from fusionrt.pipeline.image_io import read_image  # noqa: E402

T0 = time.perf_counter()
RESULT: dict = {"rows": [], "notes": []}


def elapsed() -> float:
    return time.perf_counter() - T0


def save(out_dirs: list[Path]) -> None:
    md = markdown(RESULT)
    for d in out_dirs:
        d.mkdir(parents=True, exist_ok=True)
        (d / "gpu_video.json").write_text(json.dumps(RESULT, indent=1, default=str))
        (d / "gpu_video.md").write_text(md)


def row(name: str, what: str, frames: int, seconds: float, util: GpuUtilSampler | None,
        **extra) -> dict:
    r = {"name": name, "what": what, "frames": frames, "seconds": round(seconds, 3),
         "fps": round(frames / seconds, 1) if seconds else None,
         **(util.mean() if util else {}), **extra}
    RESULT["rows"].append(r)
    if util is not None and util.error:
        RESULT["notes"].append(f"{name}: {util.error}")
    print(f"[{elapsed():6.1f}s] {name:<34} {r['fps']:>8} fps  gpu {r.get('gpu_util_pct')}%",
          flush=True)
    return r


class NullSwapper:
    """Same device, streams and transfers as the swapper; no GPU work (the I/O-only row)."""

    def __init__(self, dev, compute):
        self.dev, self.compute = dev, compute

    def process(self, batch, fmt, height, width):
        return [0] * batch.shape[0]


def setup(args) -> tuple[Path, Path]:
    os.environ.setdefault("FUSIONRT_HOME", str(Path(args.work) / "home"))
    from fusionrt.builders.synth import synthesize
    from fusionrt.models.store import ModelStore
    store = ModelStore()
    for name in ("inswapper_128", "arcface_w600k_r50"):
        if not store.synthetic_path(name).is_file():
            t = time.perf_counter()
            synthesize(name, store.synthetic_path(name), seed=0, width=args.model_width)
            RESULT["notes"].append(f"synthesized {name} (width {args.model_width}) in "
                                   f"{time.perf_counter() - t:.0f} s")
    work = Path(args.work)
    clip, short = work / f"clip_{args.size}.mp4", work / f"clip_{args.size}_short.mp4"
    if not clip.is_file():
        make_test_video(clip, args.seconds, args.fps, args.size)
    if not short.is_file():
        make_test_video(short, args.baseline_seconds, args.fps, args.size)
    return clip, short


def decode_all(clip: Path) -> list[tuple[np.ndarray, int]]:
    import av
    from fusionrt.pipeline.device.frames import copy_video_frame
    out = []
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_type = "AUTO"
        for f in c.decode(s):
            a = np.empty((f.height * 3 // 2, f.width), np.uint8)
            copy_video_frame(f, a)
            out.append((a, f.pts))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    ap.add_argument("--results-dir", default=str(ROOT / "benchmarks/results/2026-11-25-h100"))
    ap.add_argument("--work", default="/tmp/fusionrt_gpu_video")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--baseline-seconds", type=float, default=6.0)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", default="tf32", choices=("fp32", "tf32", "fp16", "bf16"))
    ap.add_argument("--engine", default="default", help="as fusionrt swap --engine")
    ap.add_argument("--encoders", default="1,4", help="encoder counts for the e2e rows")
    ap.add_argument("--presets", default="veryfast,superfast")
    ap.add_argument("--e2e", default="",
                    help="end-to-end rows as N:preset[:gil-interval|none],... (overrides "
                         "--encoders/--presets)")
    ap.add_argument("--extra-engine", default="",
                    help="';'-separated engine maps, each a GPU-only + e2e variant row "
                         "(e.g. 'detect=ort-cuda')")
    ap.add_argument("--budget-s", type=float, default=330.0)
    ap.add_argument("--extra-precision", default="fp16",
                    help="also time the GPU-only and first e2e rows with this generator "
                         "precision, if time is left after the baseline ('' to skip)")
    ap.add_argument("--size", default="1920x1080", help="WxH of the generated clip")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script (tests)")
    ap.add_argument("--model-width", type=float, default=1.0,
                    help="synthetic model width (1.0 = full size; smaller only for dry runs)")
    args = ap.parse_args()
    outs = [Path(args.out), Path(args.results_dir)]
    Path(args.work).mkdir(parents=True, exist_ok=True)
    import torch
    RESULT["machine"] = machine_info(args.device)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    w, h = (int(v) for v in args.size.split("x"))
    RESULT["settings"] = vars(args)
    clip, short = setup(args)
    RESULT["notes"].append(f"setup (clips, synthetic models) done at {elapsed():.0f} s")
    save(outs)
    source = read_image(ROOT / "examples" / "astronaut.png", role="source")
    cfg = PipelineConfig(swapper="inswapper_128", engine=args.engine, device=args.device,
                         kernels="device", precision=args.precision, allow_synthetic=True,
                         gen_batch=args.batch)
    sw = FaceSwapper.open(cfg)
    sw.set_source(source)
    t = time.perf_counter()
    sw.warmup(args.batch, h, w)
    RESULT["engines"] = sw.describe()
    RESULT["notes"].append(f"warm-up (graphs, autotune) {time.perf_counter() - t:.1f} s")
    frames = decode_all(clip)

    # compute only: device-resident batches, no transfers
    dev_batch = torch.from_numpy(np.stack([f for f, _ in frames[:args.batch]])).to(args.device)
    sw.timer.reset()
    iters = max(4, len(frames) // args.batch)
    with GpuUtilSampler() as u:
        sync()
        t = time.perf_counter()
        faces = 0
        for _ in range(iters):
            faces += sum(sw.process(dev_batch.clone(), "yuv420p", h, w))
        sync()
        sec = time.perf_counter() - t
    n = iters * args.batch
    stage = {k: round(v / n, 3) for k, v in sw.timer.summary().items()}
    row("compute only", "device-resident yuv420p batches", n, sec, u, faces=faces,
        stage_ms_per_frame=stage)
    del dev_batch
    save(outs)

    # GPU only: frames in host memory, upload + GPU + download, nothing encoded
    gpu_only_row("GPU only", "pre-decoded frames in memory → upload → GPU → download; no encode",
                 frames, sw, args, h, w)
    del frames
    save(outs)

    for n_enc, preset, interval in e2e_settings(args):
        if elapsed() > args.budget_s - 60:
            RESULT["notes"].append(f"skipped e2e {n_enc}x {preset}: time budget")
            continue
        rc = VideoConfig(batch=args.batch, encoders=n_enc, preset=preset,
                         switch_interval_s=interval)
        tag = "" if interval == VideoConfig.switch_interval_s else f", GIL interval {interval}"
        for label, swapper in (("I/O only", NullSwapper(sw.dev, sw.compute)),
                               ("end to end", sw)):
            if label == "I/O only" and tag:
                continue  # the GIL setting is about the compute thread
            e2e_row(f"{label} x264 {preset} x{n_enc}{tag}", "decode → upload → " +
                    ("GPU → " if swapper is sw else "") + f"download → {n_enc} encoder(s)",
                    clip, args, swapper, rc, sw)

    # parity with the baseline's per-frame CPU path, then the baseline's own speed
    from fusionrt.pipeline.video.io import iter_frames, process_video
    base = FaceSwapper.open(PipelineConfig(swapper="inswapper_128", kernels="host",
                                           engine="ort-cuda" if cuda else "ort-cpu",
                                           device=args.device, allow_synthetic=True))
    base.set_source(source)
    bgr = [f for i, f in enumerate(iter_frames(short)) if i % 20 == 0][:8]
    batch = torch.from_numpy(np.stack(bgr)).to(args.device)
    sw.process(batch, "bgr", h, w)
    got = batch.cpu().numpy()
    psnrs, maxd = [], []
    for g, f in zip(got, bgr):
        want = base.process_frame(f)[0].astype(np.float64)
        mse = np.mean((g - want) ** 2)
        psnrs.append(round(float(10 * np.log10(255 ** 2 / max(mse, 1e-10))), 2))
        maxd.append(int(np.abs(g - want).max()))
    RESULT["parity"] = {"frames": len(bgr), "psnr_db": psnrs, "max_abs_diff": maxd,
                        "what": "GPU path (bgr batch) vs host kernels on ort-cuda frame by "
                                f"frame; generators differ: torch {args.precision} vs ORT CUDA"}
    save(outs)
    base.reset_timing()  # its stage times: the video's frames only
    with GpuUtilSampler() as u:
        vs = process_video(short, Path(args.work) / "base.mp4", base.process_frame,
                           progress=False)
    b = row("baseline FaceFusion-style", "per-frame ORT CUDA sessions, CPU pre/post "
            "(FaceSwapper host kernels, engine=ort-cuda) on process_video, 1 x264 veryfast",
            vs.frames,
            vs.seconds, u, faces=vs.faces_total,
            stage_ms_per_frame={k: round(v, 3) for k, v in base.stage_ms().items()},
            stage_clock="wall ms/frame by stage (host timers around each call)")
    base.close()
    e2e = [r for r in RESULT["rows"] if r["name"].startswith("end to end")]
    if e2e and b["fps"]:
        best = max(e2e, key=lambda r: r["fps"])
        RESULT["summary"] = {"best_e2e": best["name"], "best_e2e_fps": best["fps"],
                             "baseline_fps": b["fps"], "speedup": round(best["fps"] / b["fps"], 2),
                             "limit": limiter(RESULT["rows"], best)}
    sw.close()
    for label, change in extra_variants(args):
        if elapsed() > args.budget_s - 60:
            RESULT["notes"].append(f"skipped variant '{label}': time budget")
            continue
        try:
            extra_variant(args, source, clip, h, w, label, **change)
        except Exception as e:  # a variant that cannot run is reported, not hidden
            RESULT["notes"].append(f"variant '{label}' failed: {type(e).__name__}: {e}")
        save(outs)
    RESULT["total_s"] = round(elapsed(), 1)
    save(outs)
    print(markdown(RESULT))
    return 0


def extra_variants(args) -> list[tuple[str, dict]]:
    out = []
    if args.extra_precision:
        out.append((f"generator {args.extra_precision}", {"precision": args.extra_precision}))
    for spec in filter(None, args.extra_engine.split(";")):
        out.append((f"engine {spec}", {"engine": spec}))
    return out


def e2e_settings(args) -> list[tuple[int, str, float | None]]:
    """(encoders, preset, GIL switch interval) per end-to-end row: ``--e2e`` entries
    ``N:preset[:interval|none]``, else every ``--encoders`` x ``--presets`` pair."""
    if not args.e2e:
        return [(int(n), p, VideoConfig.switch_interval_s) for n in args.encoders.split(",")
                for p in args.presets.split(",")]
    out = []
    for item in args.e2e.split(","):
        n, preset, *rest = item.split(":")
        interval = VideoConfig.switch_interval_s
        if rest:
            interval = None if rest[0] == "none" else float(rest[0])
        out.append((int(n), preset, interval))
    return out


def gpu_only_row(name: str, what: str, frames: list, sw, args, h: int, w: int) -> dict:
    """Pre-decoded frames → upload → GPU → download, nothing encoded: the GPU side alone."""
    sw.timer.reset()
    waits = Waits()
    with GpuUtilSampler() as u:
        t = time.perf_counter()
        n, faces = run_batches(iter(frames), DeviceFrameStage(sw), lambda f, p: True,
                               batch=args.batch, waits=waits)  # sw is warm (warmup above)
        sec = time.perf_counter() - t
    return row(name, what, n, sec, u, faces=faces,
               stage_ms_per_frame={k: round(v / n, 3) for k, v in sw.timer.summary().items()},
               waits_s={k: round(v, 3) for k, v in waits.seconds.items()})


def e2e_row(name: str, what: str, clip: Path, args, swapper, rc: VideoConfig, sw) -> dict:
    sw.timer.reset()
    with GpuUtilSampler() as u:
        st = transcode(clip, Path(args.work) / "out.mp4", DeviceFrameStage(swapper), rc)
    r = row(name, what, st.frames, st.seconds, u, faces=st.faces, encoders=rc.encoders,
            preset=rc.preset, stage_ms_per_frame={k: round(v, 3) for k, v in st.stage_ms.items()},
            waits_s={k: round(v, 3) for k, v in st.waits_s.items()},
            queue_high_water=st.high_water)
    save([Path(args.out), Path(args.results_dir)])
    return r


def extra_variant(args, source, clip: Path, h: int, w: int, label: str, **change) -> None:
    """The GPU-only row, and one end-to-end row with the first ``--e2e`` setting, again with
    one setting changed (generator precision, or an engine for one stage): what it buys."""
    settings = dict(swapper="inswapper_128", engine=args.engine, device=args.device,
                    kernels="device", precision=args.precision, allow_synthetic=True,
                    gen_batch=args.batch)
    settings.update(change)
    with FaceSwapper.open(PipelineConfig(**settings)) as sw:
        sw.set_source(source)
        sw.warmup(args.batch, h, w)
        what = "; ".join(f"{k}: {v}" for k, v in sw.describe().items())
        gpu_only_row(f"GPU only, {label}", "as GPU only; " + what, decode_all(clip), sw, args,
                     h, w)
        n_enc, preset, interval = e2e_settings(args)[0]
        if elapsed() < args.budget_s - 30:
            e2e_row(f"end to end x264 {preset} x{n_enc}, {label}", "as end to end; " + what,
                    clip, args, sw, VideoConfig(batch=args.batch, encoders=n_enc,
                                                preset=preset, switch_interval_s=interval), sw)


def limiter(rows: list[dict], best: dict) -> str:
    """Which part bounds the end-to-end figure: the slowest of GPU-only and I/O-only."""
    gpu = next((r["fps"] for r in rows if r["name"] == "GPU only"), None)
    io = next((r["fps"] for r in rows if r["name"] == best["name"].replace("end to end",
                                                                           "I/O only")), None)
    if gpu is None or io is None:
        return "unknown"
    part = "decode/encode (I/O)" if io < gpu else "GPU work"
    return f"{part}: GPU only {gpu} fps, I/O only {io} fps, end to end {best['fps']} fps"


def markdown(res: dict) -> str:
    m = res.get("machine", {})
    st = res.get("settings", {})
    lines = [f"# GPU video path, {st.get('size')} ({m.get('gpu_name')}, {m.get('date')})", "",
             f"Command: `{m.get('command')}`; torch {m.get('torch')}, CUDA {m.get('cuda')}, "
             f"onnxruntime {m.get('onnxruntime')}, CPU {m.get('cpu')} x{m.get('cpu_count')}.",
             f"Synthetic random-weight inswapper_128 and ArcFace at width {st.get('model_width')}"
             " (1.0 = full size: 349 GFLOP per face), generator precision "
             f"{st.get('precision')}, batch {st.get('batch')}; the real RetinaFace detector. "
             "Speed only: the faces are garbage.", "",
             "| row | what | frames | FPS | GPU util % |", "|---|---|---:|---:|---:|"]
    for r in res.get("rows", []):
        lines.append(f"| {r['name']} | {r['what']} | {r['frames']} | {r['fps']} | "
                     f"{'—' if r.get('gpu_util_pct') is None else round(r['gpu_util_pct'])} |")
    if "summary" in res:
        s = res["summary"]
        lines += ["", f"**Best end to end: {s['best_e2e_fps']} FPS ({s['best_e2e']}), "
                      f"{s['speedup']}x the FaceFusion-style baseline ({s['baseline_fps']} FPS).** "
                      f"Limited by {s['limit']}."]
    lines.append("")
    for r in res.get("rows", []):
        if r.get("stage_ms_per_frame") or r.get("waits_s"):
            lines.append(f"- {r['name']}:")
        if r.get("stage_ms_per_frame"):
            clock = r.get("stage_clock", "GPU ms/frame by stage (CUDA events, compute stream)")
            lines.append(f"  - {clock}: " +
                         ", ".join(f"{k} {v}" for k, v in r["stage_ms_per_frame"].items()))
        if r.get("waits_s"):
            lines.append("  - seconds blocked on queues: " + ", ".join(
                f"{k} {v}" for k, v in sorted(r["waits_s"].items())))
    if "parity" in res:
        p = res["parity"]
        lines += ["", f"Parity ({p['what']}): PSNR dB {p['psnr_db']}, max |diff| "
                      f"{p['max_abs_diff']}."]
    if res.get("engines"):
        lines += ["", "Engines: " + "; ".join(f"{k}: {v}" for k, v in res["engines"].items())]
    lines += [""] + [f"- {n}" for n in res.get("notes", [])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
