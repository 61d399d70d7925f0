"""Reduced-precision artifacts: an FP32 ONNX file converted to FP16 (keep-list) or INT8 (Q/DQ),
the gate's held-out inputs, and the torch FP16 module's outputs for the gate.

What the conversion needs comes in as data (calibration feeds); finding faces in photos to make
a calibration set is the pipeline's (``fusionrt.pipeline.artifacts``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import EngineError, InputError
from ..models.spec import Artifact, ModelSpec

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
HOLDOUT = 0.1  # share of a calibration set held out for the gate (1..32 samples)


def holdout_feeds(spec: ModelSpec, calibration: Path | None) -> tuple[list, list, list[str]]:
    """(calibration feeds, held-out feeds, notes)."""
    from .calibrate import load_calibration
    from .export import sample_inputs
    random = [sample_inputs(spec, 1, seed=1000 + i) for i in range(4)]
    if calibration is None:
        return [], random, ["gate inputs: 4 seeded random tensors (no --calibration set "
                            "given), not face crops"]
    cal = load_calibration(calibration)
    cal.check(spec)
    k = int(min(32, max(1, round(len(cal) * HOLDOUT))))
    fit, held = cal.split(k)
    if all(float(np.ptp(c)) == 0.0 for c in held.crops):
        # flat crops (all black, say) test nothing: ranges fitted to them pass on them
        return list(fit.feeds(spec)), random, [
            f"gate inputs: 4 seeded random tensors: the held-out crops of {calibration.name} "
            "are flat (one value each), which no INT8 range can fail on"]
    notes = [f"gate inputs: {len(held)} held-out crops of {calibration.name} "
             f"({len(fit)} used for calibration)"]
    if cal.meta.get("augmented"):
        notes.append("calibration set is augmented crops of a few photos: not a diverse set")
    return list(fit.feeds(spec)), list(held.feeds(spec)), notes


def make_artifact(spec: ModelSpec, fp32: Path, precision: str, out: Path, fit: list,
                  method: str = "entropy", activations: str = "s8") -> dict:
    """Convert ``fp32`` to ``precision`` at ``out``; returns facts for the report."""
    if precision == "fp16":
        from .fp16 import convert_fp16
        _, rep = convert_fp16(fp32, out)
        return {"fp32_keep": rep.kept, "casts": rep.casts,
                "fp16_nodes": f"{rep.fp16_nodes}/{rep.nodes}", "converter":
                "onnxruntime.transformers.float16 (keep_io_types, keep-list blocked)"}
    from .int8 import Int8Options, qdq_summary, quantize_int8
    import onnx
    if not fit:
        raise InputError(f"model '{spec.name}' | INT8 needs --calibration SET.npz; make one "
                         f"with: fusionrt calibrate {spec.name} --images DIR")
    rep = quantize_int8(fp32, out, fit, spec=spec,
                        options=Int8Options(method=method, activations=activations))
    return {"quantizer": "onnxruntime.quantization QDQ (per-channel symmetric INT8 weights)",
            "activations": activations, "method": method, "samples": rep.samples,
            **qdq_summary(onnx.load(str(out))), "float_nodes": len(rep.excluded)}


def torch_fp16_runner(spec: ModelSpec, art: Artifact):
    """Outputs of ``fp16_module`` of the reference module (CPU), for the gate."""
    import torch

    from ..models.arch.reference import load_reference
    from .fp16 import fp16_module
    if art.weights_path is None:
        raise EngineError(f"model '{spec.name}' | torch FP16 gate needs the torch weights (.pt)")
    module = fp16_module(load_reference(spec.name, art.weights_path))

    def run(feeds):
        with torch.inference_mode():
            out = module(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().numpy() for o in outs]
    return run
