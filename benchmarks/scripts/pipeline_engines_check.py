"""The full pipeline (detect → embed → swap → paste) on every engine, against the ORT CPU FP32
reference output of the same inputs. Run on the GPU machine (issue 4's "every engine runs the
full pipeline"); synthetic generator/embedder weights, the real detector.

Usage: python3 benchmarks/scripts/pipeline_engines_check.py --device cuda --engines ort-cuda ort-trt torch torch-compile
Prints one JSON line per engine and a Markdown table; writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fusionrt.builders import parity
from fusionrt.pipeline.image_io import read_image
from fusionrt.pipeline.settings import PipelineConfig
from fusionrt.pipeline.swapper import FaceSwapper

ROOT = Path(__file__).resolve().parents[2]


def run(engine: str, device: str, swapper: str, frames: int) -> tuple[np.ndarray, dict]:
    cfg = PipelineConfig(swapper=swapper, engine=engine, device=device, allow_synthetic=True)
    t0 = time.perf_counter()
    with FaceSwapper.open(cfg) as pipe:
        pipe.set_source(read_image(str(ROOT / "examples/astronaut.png")), "astronaut")
        target = read_image(str(ROOT / "examples/grace_hopper.jpg"))
        setup_s = time.perf_counter() - t0
        out, n = pipe.process_frame(target)          # first frame: warm-up
        pipe.reset_timing()
        for _ in range(frames):
            out, n = pipe.process_frame(target)
        return out, {"faces": n, "setup_s": round(setup_s, 2), "stage_ms": pipe.stage_ms(),
                     "stages": pipe.describe()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--engines", nargs="+", default=["ort-cuda", "ort-trt", "torch", "torch-compile"],
                    help="engine names or per-stage maps (detect=ort-cuda,swap=torch)")
    ap.add_argument("--swapper", default="inswapper_128")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--out", default="pipeline_engines.json")
    a = ap.parse_args()
    ref, info = run("ort-cpu", "cpu", a.swapper, 2)
    rows = [{"engine": "ort-cpu", "device": "cpu", "psnr_vs_ref": "ref", **info}]
    print(json.dumps(rows[-1], default=str), flush=True)
    for eng in a.engines:
        try:
            out, info = run(eng, a.device, a.swapper, a.frames)
            p = parity.psnr(ref.astype(np.float64), out.astype(np.float64), 255.0)
            diff = int(np.abs(ref.astype(int) - out.astype(int)).max())
            rows.append({"engine": eng, "device": a.device, "psnr_vs_ref": round(p, 2),
                         "max_abs_diff": diff, **info})
        except Exception as e:  # reported, not hidden
            rows.append({"engine": eng, "device": a.device, "error": f"{type(e).__name__}: {e}"})
        print(json.dumps(rows[-1], default=str), flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=1, default=str))
    print("\n| engine | faces | PSNR vs ORT-CPU dB | max diff | detect ms | embed ms | swap ms | paste ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = r.get("stage_ms", {})
        print(f"| {r['engine']} | {r.get('faces', '—')} | {r.get('psnr_vs_ref', r.get('error'))} | "
              f"{r.get('max_abs_diff', '—')} | " + " | ".join(
                  f"{ms.get(k, 0):.2f}" for k in ("detect", "embed", "swap", "paste")) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
