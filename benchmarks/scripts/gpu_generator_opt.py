"""Make the generator fast, one measured step at a time (issue 6), on a CUDA GPU.

SimSwap-256-shaped generator (synthetic random weights: speed only), batch 1 and 16. Each step
adds one change to the one before; the table says what each bought. Every step's output is
compared with the eager FP32 output of the same inputs (PSNR over the [0, 1] image).

Usage (on a GPU): python3 benchmarks/scripts/gpu_generator_opt.py --out DIR [--model simswap_256] [--budget-s 420]
Writes DIR/generator_steps.json and DIR/generator_steps.md (partial results survive a timeout).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fusionrt.bench.timers import CudaEventTimer, RowKey, summarize
from fusionrt.builders import parity
from fusionrt.builders.open import open_engine
from fusionrt.engines.base import BatchProfile, EngineConfig
from fusionrt.models.spec import Artifact, sample_feeds
from fusionrt.models.store import ModelStore

# (label, engine, precision, options, artifact kind). Order = the optimisation story.
# Steps as first measured: no conv channel padding, no layer rewrites (torch-compile's default
# is now rewrite="auto", which step 28 measures).
BASE = {"align_channels": 0, "rewrite": False}
COMPILED = {"mode": "max-autotune-no-cudagraphs", "channels_last": True, "cuda_graph": True,
            **BASE}
STEPS = [
    ("eager FP32 (TF32 off)", "torch", "fp32", {}, "fp32"),
    ("eager FP32 + TF32", "torch", "fp32", {"tf32": True}, "fp32"),
    ("eager FP16 autocast", "torch", "fp16", {"autocast": True, **BASE}, "fp32"),
    ("eager FP16 cast once (keep-list FP32)", "torch", "fp16", {**BASE}, "fp32"),
    ("+ channels_last", "torch", "fp16", {"channels_last": True, **BASE}, "fp32"),
    ("+ CUDA graph", "torch", "fp16", {"channels_last": True, "cuda_graph": True, **BASE},
     "fp32"),
    ("ORT CUDA FP32 (IOBinding)", "ort-cuda", "fp32", {}, "fp32"),
    ("ORT CUDA FP16 graph (keep-list FP32)", "ort-cuda", "fp16", {}, "fp16"),
    ("ORT CUDA FP16 graph + CUDA graph", "ort-cuda", "fp16", {"cuda_graph": True}, "fp16"),
    ("torch.compile max-autotune-no-cudagraphs FP16 channels_last + CUDA graph",
     "torch-compile", "fp16",
     {"mode": "max-autotune-no-cudagraphs", "channels_last": True, "cuda_graph": True, **BASE},
     "fp32"),
    ("step 10 + Inductor freezing (BN folded, weight layouts converted once)",
     "torch-compile", "fp16",
     {"mode": "max-autotune-no-cudagraphs", "channels_last": True, "cuda_graph": True,
      "inductor": {"freezing": True}, **BASE}, "fp32"),
    ("step 10 + conv channels zero-padded to 8 (3-channel first/last convs on tensor cores)",
     "torch-compile", "fp16",
     {"mode": "max-autotune-no-cudagraphs", "channels_last": True, "cuda_graph": True,
      "align_channels": 8, "rewrite": False}, "fp32"),
    ("step 6 + conv channels zero-padded to 8 (eager)", "torch", "fp16",
     {"channels_last": True, "cuda_graph": True, "align_channels": 8}, "fp32"),
    # Exact layer rewrites (fusionrt/builders/generator_rewrite.py), added one at a time to step 10.
    ("step 10 + one-pass instance norm (var_mean)", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "norm"}, "fp32"),
    ("+ upsample folded into the next conv (phase conv + pixel shuffle)", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "norm,upconv"}, "fp32"),
    ("+ 64->3 head as a wide GEMM + shifted sum", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "norm,upconv,head"}, "fp32"),
    ("+ 3->64 stem as patches + GEMM (the first round's rewrites)", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "norm,upconv,head,stem"}, "fp32"),
    ("step 17 + Inductor freezing", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "norm,upconv,head,stem", "inductor": {"freezing": True}}, "fp32"),
    # Second round, from the profiles of 10 and 17 (upconv borders now one line per edge).
    ("step 10 + head GEMM + one style GEMM (18 -> 1 launches)", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "head,style"}, "fp32"),
    ("step 19 + residual blocks hand over padded tensors", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "head,style,respad"}, "fp32"),
    ("step 20 + stem + upsample folded (every rewrite but norm)", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "head,style,respad,stem,upconv"}, "fp32"),
    ("step 21 + one-pass instance norm (every rewrite)", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "all"}, "fp32"),
    ("step 21 + Inductor freezing", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "head,style,respad,stem,upconv", "inductor": {"freezing": True}},
     "fp32"),
    ("step 20 + Inductor freezing", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "head,style,respad", "inductor": {"freezing": True}}, "fp32"),
    # Third round, from the bs1 profile of 20: 18 instance norms cost 72 small reduction
    # kernels (each mean split in two), 0.15 ms of 0.73.
    ("step 20 + one-pass norm + unsplit reductions (1 kernel per norm)", "torch-compile",
     "fp16", {**COMPILED, "rewrite": "head,style,respad,norm",
              "inductor": {"split_reductions": False}}, "fp32"),
    ("step 20 + unsplit reductions", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "head,style,respad", "inductor": {"split_reductions": False}},
     "fp32"),
    ("step 21 + one-pass norm + unsplit reductions", "torch-compile", "fp16",
     {**COMPILED, "rewrite": "all", "inductor": {"split_reductions": False}}, "fp32"),
    ("torch-compile's default rewrite (auto: 25's set at bs1, 21's at bs16)", "torch-compile",
     "fp16", {"mode": "max-autotune-no-cudagraphs", "channels_last": True, "cuda_graph": True},
     "fp32"),
    # Issue 20: which defaults the engines should have (compile cost vs speed; ORT FP16 at bs1).
    ("step 28 in Inductor's default mode (no autotuning: shorter compile)", "torch-compile",
     "fp16", {"mode": "default", "channels_last": True, "cuda_graph": True}, "fp32"),
    ("ORT CUDA FP16 graph + prefer_nhwc", "ort-cuda", "fp16", {"prefer_nhwc": True}, "fp16"),
    ("ORT CUDA FP16 graph + prefer_nhwc + CUDA graph", "ort-cuda", "fp16",
     {"prefer_nhwc": True, "cuda_graph": True}, "fp16"),
    ("ORT CUDA FP32 + CUDA graph", "ort-cuda", "fp32", {"cuda_graph": True}, "fp32"),
    ("ORT CUDA FP32 + TF32", "ort-cuda", "fp32", {"tf32": True}, "fp32"),
]

# Kernel families for the profile: which part of the GPU time goes where.
KERNEL_KINDS = [("conv/GEMM", ("conv", "gemm", "sm90", "sm80", "cutlass", "xmma", "cudnn",
                               "triton_tem", "implicit", "wgrad", "dgrad", "fprop")),
                ("reduction (norms)", ("triton_red", "triton_per", "reduce", "norm")),
                ("pointwise", ("triton_poi", "elementwise", "vectorized", "unrolled")),
                ("copy/layout", ("memcpy", "copy", "nchwtonhwc", "nhwctonchw", "transpose",
                                 "memset"))]


def fp16_artifact(art: Artifact, out_dir: Path) -> Artifact:
    from fusionrt.builders.fp16 import convert_fp16
    path = out_dir / f"{art.spec.name}.fp16.onnx"
    if not path.is_file():
        convert_fp16(art.onnx_path, path)
    return Artifact(art.spec, path, None, synthetic=True)


def step_feeds(art: Artifact, b: int) -> dict:
    """The script's inputs for batch ``b``: seeded latents, a uniform random target."""
    import torch
    f = sample_feeds(art, b, seed=b)
    f["target"] = np.random.default_rng(b).random(f["target"].shape, dtype=np.float32)
    return {k: torch.from_numpy(v).cuda() for k, v in f.items()}


def measure_step(engine: str, art: Artifact, prec: str, opts: dict, b: int, runs: int,
                 timer, feeds: dict | None = None) -> dict:
    """One step at batch ``b``: open with a b:b:b profile, 3 warm-up runs (compile, autotune,
    graph capture), ``runs`` timed runs. Returns ms (summary), fps, load_s, the engine, out."""
    import torch
    feeds = feeds if feeds is not None else step_feeds(art, b)
    cfg = EngineConfig(device="cuda", precision=prec, batch=BatchProfile(b, b, b), options=opts)
    t0 = time.perf_counter()
    eng = open_engine(engine, art, cfg)
    for _ in range(3):  # warm-up: compile, autotune, graph capture
        eng.run(feeds)
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    timing, out = timer.measure(lambda: eng.run(feeds), runs, RowKey("swap", engine, prec, b))
    s = summarize(timing.latency_ms)
    return {"ms": s, "fps": b * 1000.0 / s["p50"], "load_s": round(load_s, 2), "engine": eng,
            "out": out}


def to_host(v):
    return v.detach().float().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="simswap_256")
    ap.add_argument("--out", default="benchmarks/results/2026-11-25-h100")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--steps", default="", help="comma-separated step numbers (default all)")
    ap.add_argument("--profile", default="",
                    help="comma-separated step numbers to profile (torch.profiler, CUDA kernels, "
                         "no CUDA graph so each kernel is seen)")
    ap.add_argument("--profile-batches", default="",
                    help="batch sizes to profile at (default: the largest)")
    ap.add_argument("--batches-for", default="",
                    help="per-step batch lists, e.g. '14=16,15=16' (steps not named: --batches)")
    a = ap.parse_args()
    import torch
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = ModelStore()
    if store.installed(a.model) is None:
        from fusionrt.builders.synth import synthesize
        synthesize(a.model, store.synthetic_path(a.model), seed=0, width=1.0)
    art32 = store.resolve(a.model, allow_synthetic=True)
    art16 = None
    batches = [int(b) for b in a.batches.split(",")]
    step_batches = {int(k): [int(b) for b in v.split("/")] for k, v in
                    (kv.split("=") for kv in a.batches_for.split(",") if kv)}
    prof_batches = [int(b) for b in a.profile_batches.split(",") if b] or [max(batches)]
    timer = CudaEventTimer("cuda")
    feeds = {b: step_feeds(art32, b) for b in batches}
    result = {"model": a.model, "synthetic": True, "gpu": torch.cuda.get_device_name(0),
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(sys.argv), "note": "synthetic random weights: speed only",
              "steps": []}
    ref = {}
    t_start = time.perf_counter()
    chosen = {int(s) for s in a.steps.split(",") if s} or set(range(1, len(STEPS) + 1))
    for i, (label, engine, prec, opts, kind) in enumerate(STEPS, 1):
        if i not in chosen:
            continue
        row = {"step": i, "label": label, "engine": engine, "precision": prec, "options": opts}
        if time.perf_counter() - t_start > a.budget_s:
            row["error"] = "skipped: time budget spent"
            result["steps"].append(row)
            continue
        try:
            if kind == "fp16" and art16 is None:
                art16 = fp16_artifact(art32, out_dir.parent / "_artifacts")
            art = art16 if kind == "fp16" else art32
            for b in step_batches.get(i, batches):
                m = measure_step(engine, art, prec, opts, b, a.runs, timer, feeds[b])
                eng = m["engine"]
                img = to_host(m["out"]["output"])
                if i == 1:
                    ref[b] = img
                row[f"bs{b}"] = {"ms": m["ms"], "fps": m["fps"], "load_s": m["load_s"],
                                 "psnr_vs_eager_fp32": parity.psnr(ref[b], img, 1.0)
                                 if b in ref else None,
                                 "max_mem_mb": torch.cuda.max_memory_allocated() / 2**20}
                if str(i) in a.profile.split(",") and b in prof_batches:
                    row.setdefault("profile", {})[f"bs{b}"] = profile(eng, feeds[b],
                                                                      a.runs // 3 or 1)
                eng.close()
                del eng
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
        except Exception as e:  # a step that cannot run is reported, not hidden
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        result["steps"].append(row)
        (out_dir / "generator_steps.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(row), flush=True)
    write_markdown(result, out_dir / "generator_steps.md", batches)
    print((out_dir / "generator_steps.md").read_text())
    return 0


def profile(eng, feeds: dict, runs: int, top: int = 20) -> dict:
    """CUDA kernel time per run by kernel family and the top kernels, plus the wall time per
    run: their difference is time the GPU waited on the host (launch gaps)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    graph = eng.config.options.get("cuda_graph")
    eng.config.options["cuda_graph"] = False  # see each kernel (a graph shows as one launch)
    try:
        for _ in range(3):
            eng.run(feeds)
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            for _ in range(runs):
                eng.run(feeds)
            torch.cuda.synchronize()
            wall_ms = (time.perf_counter() - t0) * 1000.0 / runs
    finally:
        eng.config.options["cuda_graph"] = graph
    kernels = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if us > 0:
            kernels.append((e.key, us / 1000.0 / runs, e.count / runs))
    kernels.sort(key=lambda k: -k[1])
    total = sum(k[1] for k in kernels)
    kinds: dict[str, float] = {}
    for name, ms, _ in kernels:
        low = name.lower()
        kind = next((k for k, keys in KERNEL_KINDS if any(x in low for x in keys)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + ms
    return {"runs": runs, "wall_ms_no_graph": round(wall_ms, 3),
            "kernel_ms": round(total, 3),
            "by_kind_ms": {k: round(v, 3) for k, v in sorted(kinds.items(), key=lambda x: -x[1])},
            "top": [{"kernel": n[:120], "ms": round(ms, 4), "calls": round(c, 1)}
                    for n, ms, c in kernels[:top]]}


def write_markdown(result: dict, path: Path, batches: list[int]) -> None:
    lines = [f"# Generator steps — {result['model']} on {result['gpu']}", "",
             f"{result['date']}, torch {result['torch']} (CUDA {result['cuda']}). "
             f"**Synthetic random weights: speed only.** Command: `{result['command']}`", "",
             "| # | step | " + " | ".join(f"bs{b} p50 ms | bs{b} FPS | bs{b} PSNR dB"
                                          for b in batches) + " |",
             "|---|---|" + "---|---|---|" * len(batches)]
    for r in result["steps"]:
        cells = []
        for b in batches:
            d = r.get(f"bs{b}")
            if d:
                ps = d["psnr_vs_eager_fp32"]
                cells += [f"{d['ms']['p50']:.3f}", f"{d['fps']:.0f}",
                          "ref" if r["step"] == 1 else (f"{ps:.1f}" if ps is not None else "—")]
            else:
                cells += ["—", "—", "—"]
        err = f" ({r['error']})" if "error" in r else ""
        lines.append(f"| {r['step']} | {r['label']}{err} | " + " | ".join(cells) + " |")
    for r in result["steps"]:
        for bkey, p in (r.get("profile") or {}).items():
            lines += _profile_lines(r["step"], bkey, p)
    path.write_text("\n".join(lines) + "\n")


def _profile_lines(step: int, bkey: str, p: dict) -> list[str]:
    lines = ["", f"Profile of step {step} at {bkey} (no CUDA graph, "
                 f"{p['runs']} runs): {p['kernel_ms']} ms of kernels per run, "
                 f"{p['wall_ms_no_graph']} ms wall per run. By kind: " +
             ", ".join(f"{k} {v} ms" for k, v in p["by_kind_ms"].items()) + ".", "",
             "| kernel | ms/run | calls/run |", "|---|---:|---:|"]
    return lines + [f"| `{k['kernel']}` | {k['ms']} | {k['calls']} |" for k in p["top"]]


if __name__ == "__main__":
    raise SystemExit(main())
