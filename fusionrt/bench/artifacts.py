"""Which file each (engine, precision) row loads, and the quality gate's verdict on it.

Torch engines run the FP32 module with ``precision`` as autocast (FP16); they have no INT8 path.
ONNX engines (ort-*, trt) load a converted graph — precision lives in the graph:
  * the gated artifact ``fusionrt build MODEL --precision P`` wrote beside the FP32 file
    (``<stem>.<P>.onnx``, gate figures in ``<stem>.<P>.gate.json`` with ``--report``), if any;
  * else FP16 is built and gated now (``fusionrt.pipeline.artifacts.build_artifact``: the FP16
    converter of ``fusionrt.builders.fp16`` + ``fusionrt.builders.gate``); a refused artifact makes the
    row unavailable with the gate's figures;
  * INT8 is never built implicitly (its calibration needs the user's face crops): without the
    ``fusionrt build`` artifact the row says how to make one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..models.spec import Artifact

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_converter():
    """ORT's FP16 converter logs whole protobuf node lists as warnings ("initializer is used by
    both fp32 and fp16 nodes"); in a benchmark log they bury the rows."""
    lg = logging.getLogger("onnxruntime.transformers.float16")
    level = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(level)


class Unavailable(Exception):
    """A row that cannot run on this machine or in this build; the message is the reason."""


def gated_path(base: Artifact, precision: str) -> Path:
    """Where ``fusionrt build`` puts the ``precision`` artifact of ``base``."""
    fp32 = Path(base.onnx_path)
    return fp32.with_name(f"{fp32.stem}.{precision}.onnx")


def gate_summary(report: Any) -> dict[str, Any]:
    """The part of a gate report a bench row keeps (accepts a ``GateReport`` or its dict)."""
    d = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    figs = d.get("figures") or []
    text = ", ".join(f"{f['metric']} {f['value']:.4g}" for f in figs if f.get("value") is not None)
    return {"passed": d.get("passed"), "summary": text, "engine": d.get("engine"),
            "samples": d.get("samples"), "synthetic": d.get("synthetic"),
            "notes": list(d.get("notes") or [])}


def _read_gate(path: Path) -> dict[str, Any] | None:
    js = path.with_name(f"{path.with_suffix('').name}.gate.json")
    try:
        return gate_summary(json.loads(js.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def static_reason(engine: str, precision: str, torch_engine: bool) -> str | None:
    """Why (engine, precision) can never run, known without touching any file; else None."""
    if precision not in ("fp32", "fp16", "int8"):
        return f"precision '{precision}' | unknown; expected fp32, fp16 or int8"
    if torch_engine and precision == "int8":
        from .config import GRAPH_ENGINES
        return ("torch engines have no INT8 path (their precision is autocast: fp32, fp16, "
                f"bf16); INT8 runs as a Q/DQ graph on {', '.join(GRAPH_ENGINES)}")
    return None


def for_precision(base: Artifact, engine: str, precision: str, torch_engine: bool,
                  allow_synthetic: bool = False) -> tuple[Artifact, dict[str, Any]]:
    """(artifact to load, info: build_ms, gate, notes) or ``Unavailable`` with the reason."""
    if (why := static_reason(engine, precision, torch_engine)):
        raise Unavailable(why)
    if torch_engine:
        note = ("FP16 = fusionrt.builders.fp16.fp16_module: weights cast once, keep-list (norms, AdaIN "
                "statistics, output head) in FP32") if precision == "fp16" else ""
        return base, {"build_ms": None, "gate": None, "notes": [note] if note else []}
    if precision == "fp32":
        return base, {"build_ms": None, "gate": None, "notes": []}
    if base.onnx_path is None:
        raise Unavailable(f"model '{base.spec.name}' | no ONNX file to convert to {precision}")
    path = gated_path(base, precision)
    info: dict[str, Any] = {"build_ms": None, "gate": None, "notes": []}
    if path.is_file():
        info["gate"] = _read_gate(path)
        info["notes"].append(f"{precision.upper()} graph from fusionrt build: {path.name}" + (
            "" if info["gate"] else " (no gate report beside it; build with --report)"))
    else:
        old = _read_gate(path)
        if old is not None and old.get("passed") is False:  # refused (and deleted) earlier
            raise Unavailable(f"{precision.upper()} artifact refused by the quality gate "
                              f"({path.with_suffix('').name}.gate.json): {old['summary']}")
        if precision == "int8":  # calibration needs the user's face crops: never implicit
            raise Unavailable(
                f"no INT8 artifact for {base.spec.name} (expected {path.name} beside the FP32 "
                f"file): make one with `fusionrt calibrate {base.spec.name} --images DIR` then "
                f"`fusionrt build {base.spec.name} --precision int8 --calibration SET.npz "
                f"--report`")
        try:
            result, info["build_ms"] = _build(base.spec.name, precision, allow_synthetic)
        except _GateCouldNotRun as e:
            path, info["build_ms"] = _ungated_fp16(base)
            info["notes"].append(f"FP16 graph built by this run WITHOUT the quality gate (the "
                                 f"gate could not run: {e}); see the parity column")
            return replace(base, onnx_path=path, weights_path=None), info
        path = Path(result.artifact)
        info["gate"] = gate_summary(result.report) if result.report is not None else None
        info["notes"].append(f"FP16 graph built and gated by this run: {path.name}")
    return replace(base, onnx_path=path, weights_path=None), info


class _GateCouldNotRun(Exception):
    """The builder failed before the gate judged the artifact (not a refusal)."""


def _ungated_fp16(base: Artifact) -> tuple[Path, float]:
    """FP16 conversion alone, into the bench's own folder (never where ``fusionrt build`` puts
    gated artifacts, so nothing else mistakes it for one)."""
    from .._fs import sha256_file
    from ..builders.fp16 import convert_fp16
    from ..runtime.home import fusionrt_home
    src = Path(base.onnx_path)
    out = fusionrt_home() / "bench" / "artifacts" / f"{src.stem}.{sha256_file(src)[:16]}.fp16.onnx"
    t0 = time.perf_counter()
    if not out.is_file():
        with _quiet_converter():
            convert_fp16(src, out)
    return out, (time.perf_counter() - t0) * 1000.0


def _build(model: str, precision: str, allow_synthetic: bool) -> tuple[Any, float]:
    try:
        from ..pipeline.artifacts import build_artifact
    except ImportError as e:
        raise Unavailable(f"{precision.upper()} builder (fusionrt.pipeline.artifacts) not usable "
                          f"in this build: {e}") from None
    from ..errors import FusionError
    t0 = time.perf_counter()
    try:
        with _quiet_converter():
            result = build_artifact(model, precision, allow_synthetic=allow_synthetic,
                                    report=True)
    except FusionError as e:
        if "refused by the quality gate" in str(e):  # the row says so, with the figures
            raise Unavailable(f"{precision.upper()} artifact refused: {e}") from None
        raise _GateCouldNotRun(str(e)) from None
    except ImportError as e:  # e.g. onnxruntime's quantization tools missing
        raise Unavailable(f"{precision.upper()} builder cannot run here: {e}") from None
    return result, (time.perf_counter() - t0) * 1000.0

