"""``fusionrt doctor``: what this machine has (driver, CUDA, cuDNN, TensorRT, TensorRT-RTX, ONNX
Runtime, torch, GPUs) and which engines are usable, each with the exact reason and fix when not.

Every probe is optional and never raises: a missing piece is a finding, not a crash. ``--json``
prints one object whose keys are always present (``None`` where something is absent), so
scripts and bug reports can rely on the schema (``SCHEMA_VERSION``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from typing import Any

from .runtime.machine import library_version
from .runtime.probes import (ORT_FOR_TENSORRT, error_text, probe_cupy, probe_driver, probe_onnxruntime,
                             probe_tensorrt, probe_tensorrt_rtx, probe_torch)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

def probe_engines() -> dict[str, dict[str, Any]]:
    """Every registered engine: usable here, or the reason and fix. Import errors are reasons."""
    from .engines import registry
    out = {}
    for name in registry.engine_names():
        try:
            ok, why = registry.get_engine(name).available()
        except Exception as e:  # EngineError for an absent module, anything else for a bug
            ok, why = False, str(e) if type(e).__name__ == "EngineError" else error_text(e)
        out[name] = {"usable": bool(ok), "reason": why}
    return out


def tensorrt_rtx_report(gpus: list[dict[str, Any]]) -> dict[str, Any]:
    """TensorRT-RTX's version and build targets, and for each GPU here whether its plans run
    there (the engine's supported list)."""
    from .engines.tensorrt_rtx import cc_reason
    r = probe_tensorrt_rtx()
    r["gpus"] = []
    for g in gpus:
        cc = g.get("compute_capability")
        why = cc_reason(cc, g.get("name"), g.get("index", 0)) if cc else "compute capability unknown"
        r["gpus"].append({"index": g.get("index"), "name": g.get("name"),
                          "compute_capability": cc, "runs": not why, "reason": why})
    return r


def collect() -> dict[str, Any]:
    """The whole report; keys are fixed (see module docstring)."""
    driver, gpus = probe_driver()
    torch_info = probe_torch()
    if not gpus:
        gpus = torch_info["gpus"]
    cuda = torch_info["cuda"]
    return {
        "schema": SCHEMA_VERSION,
        "fusionrt": {"version": library_version("fusionrt")},
        "os": {"platform": platform.platform(), "machine": platform.machine()},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "driver": driver,
        "gpus": gpus,
        "cuda": {"torch": cuda, "cupy": probe_cupy()},
        "cudnn": {"version": torch_info["cudnn"]},
        "tensorrt": probe_tensorrt(cuda or driver.get("cuda_driver")),
        "tensorrt_rtx": tensorrt_rtx_report(gpus),
        "onnxruntime": probe_onnxruntime(cuda),
        "torch": {k: torch_info[k] for k in ("version", "cuda", "cuda_available", "error")},
        "engines": probe_engines(),
    }


def format_text(r: dict[str, Any]) -> str:
    """Human-readable report."""
    d, t, o, tr = r["driver"], r["torch"], r["onnxruntime"], r["tensorrt"]
    driver = (f"{d['version']} (CUDA {d['cuda_driver'] or '?'}, via {d['source']})"
              if d["version"] else d["error"] or "no NVIDIA driver")
    gpus = "; ".join(f"[{g['index']}] {g['name']}, {g['memory_total_mib']} MiB, "
                     f"sm {g['compute_capability']}" for g in r["gpus"]) or "none found"
    torch_line = (f"{t['version']} (CUDA {t['cuda']}, "
                  f"{'GPU visible' if t['cuda_available'] else 'no GPU visible'})"
                  if t["version"] else t["error"])
    rows = [("fusionrt", r["fusionrt"]["version"]),
            ("OS", r["os"]["platform"]), ("Python", r["python"]["version"]),
            ("NVIDIA driver", driver), ("GPUs", gpus),
            ("CUDA runtime", f"torch: {r['cuda']['torch']}; cupy: {r['cuda']['cupy'] or 'absent'}"),
            ("cuDNN", r["cudnn"]["version"] or "absent"),
            ("TensorRT", f"{tr['version']} (TensorRT {tr['major']}; its ONNX Runtime EP needs "
                         f"{tr['ort_ep_needs']})" if tr["version"] else
             f"{tr['error']} (ONNX Runtime's TensorRT EP needs " + ", ".join(
                 f"onnxruntime-gpu >= {v} for TensorRT {k}" for k, v in ORT_FOR_TENSORRT.items())
             + ")"),
            ("TensorRT-RTX", _rtx_line(r["tensorrt_rtx"])),
            ("ONNX Runtime", f"{o['version']}; providers: {', '.join(o['providers'])}"
             if o["version"] else o["error"]),
            ("torch", torch_line)]
    lines = [f"{k:<14}{v}" for k, v in rows]
    for p, s in o["provider_status"].items():
        lines.append(f"  {p:<28}{'ok' if s['usable'] else s['reason']}")
    lines.append("Engines")
    for name, e in r["engines"].items():
        lines.append(f"  {name:<14}{'ok' if e['usable'] else 'no  ' + e['reason']}")
    return "\n".join(lines)


def _rtx_line(x: dict[str, Any]) -> str:
    if not x["version"]:
        return x["error"]
    runs = "; ".join(f"GPU {g['index']} runs them" if g["runs"] else g["reason"]
                     for g in x["gpus"]) or "no GPU here to run them (building needs none)"
    return f"{x['version']}; builds {', '.join(x['build_archs'])}; {runs}"


def run_doctor(args: argparse.Namespace) -> int:
    report = collect()
    print(json.dumps(report, indent=2, default=str) if args.json else format_text(report))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("doctor", help="report drivers, libraries, GPUs and usable engines")
    p.add_argument("--json", action="store_true", help="print one JSON object (stable keys)")
    p.set_defaults(func=run_doctor)
