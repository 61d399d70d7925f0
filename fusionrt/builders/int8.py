"""INT8 artifacts: a Q/DQ ONNX graph calibrated on face crops.

Quantizer: ONNX Runtime's static QDQ quantizer (``onnxruntime.quantization.quantize_static``).
Why this one: it ships with onnxruntime (no new dependency), calibrates on the CPU, and writes
standard QuantizeLinear/DequantizeLinear pairs that ORT CPU fuses into integer kernels (VNNI) and
that TensorRT (ORT TRT EP or a strongly typed native build) reads as explicit quantization.
NVIDIA ModelOpt's ONNX quantizer writes the same kind of graph; it was not measured here (its
install would replace the shared onnx/onnxruntime versions), so the choice is not a measured
comparison — see the CPU benchmark notes.

Settings and their reasons:
  * weights: signed INT8, symmetric. Activations (``Int8Options.activations``): ``"s8"`` signed
    symmetric, the one graph for TensorRT (zero point 0 only) and every ORT EP; ``"u8"``
    unsigned asymmetric, ORT CPU only. Measured on x86 ORT 1.32 (SimSwap, 2 cores): ORT turns
    only part of an S8S8 graph into integer kernels (most convs stay float, ~1.1x), while the
    U8 graph runs every conv as U8S8 QLinearConv (~2.5x); forcing S8S8 kernels
    (``session.qdqisint8allowed``) is 3x *slower* than FP32. ``fusionrt build`` picks u8 for
    ``--engine ort-cpu`` and s8 otherwise;
  * per-channel weights: conv filters differ by orders of magnitude in range;
  * activation ranges by entropy (default) or percentile calibration; min/max is skewed by rare
    outliers;
  * only Conv (and, for embedders, Gemm) is quantized, plus the cheap ops between them that ORT
    fuses with a QLinearConv (Relu/LeakyRelu/Add/Pad/Resize); norm layers and every keep-list
    node stay float (``keeplist.py``), as do the generators' AdaIN style Gemms and the final conv
    that writes pixels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from ..errors import InputError, ModelError
from ..models.spec import ModelSpec
from ..runtime.machine import x86_without_vnni
from .keeplist import fp32_nodes, last_convs, name_nodes

log = logging.getLogger(__name__)

METHODS = ("entropy", "percentile", "minmax")


@dataclass(frozen=True)
class Int8Options:
    """How to quantize. ``op_types`` None = by task (see module docstring)."""

    method: str = "entropy"
    percentile: float = 99.999
    per_channel: bool = True
    op_types: tuple[str, ...] | None = None
    keep_last_conv: bool = True
    extra_exclude: tuple[str, ...] = ()
    # "s8": signed, symmetric (zero point 0) activations: what TensorRT requires; the default.
    # "u8": unsigned, asymmetric activations: ORT CPU's native U8S8 (VNNI) kernels; TensorRT
    # rejects non-zero zero points, so such a graph is for ORT CPU only.
    activations: str = "s8"
    # 7-bit weights. None: on when this CPU is x86 without VNNI, where ORT's 8-bit GEMMs can
    # saturate (measured on an AMD EPYC with AVX2 only: an inswapper-contract graph calibrated on
    # face crops gave 9.7 dB against the FP32 graph with full-range weights — worse than one
    # calibrated on black images — and passed the face-vs-black check with reduce_range).
    reduce_range: bool | None = None

    def __post_init__(self) -> None:
        if self.activations not in ("s8", "u8"):
            raise ValueError(f"activations '{self.activations}' | expected 's8' or 'u8'")
        if self.method not in METHODS:
            raise ValueError(f"calibration method '{self.method}' | expected one of {METHODS}")


@dataclass(frozen=True)
class Int8Report:
    """What was quantized: per op type counts, what was left float and why."""

    path: Path
    method: str
    samples: int
    quantized: dict[str, int]
    excluded: dict[str, str] = field(default_factory=dict)


# Ops that sit between convolutions: quantizing them lets ORT keep the data in INT8 across
# them instead of Q/DQ-ing on every edge (the difference between ~1x and ~2x+ on the CPU).
_BETWEEN = ("Relu", "LeakyRelu", "Add", "Pad", "Resize", "MaxPool", "Concat")


def default_op_types(spec: ModelSpec | None) -> tuple[str, ...]:
    if spec is not None and spec.task == "embed":
        return ("Conv", "Gemm", "PRelu") + _BETWEEN
    return ("Conv",) + _BETWEEN


def excluded_nodes(model, spec: ModelSpec | None, options: Int8Options) -> dict[str, str]:
    """{node: reason} for nodes that stay float in the INT8 graph."""
    name_nodes(model)
    out = {name: e.reason for name, e in fp32_nodes(model).items()}
    if options.keep_last_conv:
        for name in last_convs(model):
            out.setdefault(name, "last conv: writes the output pixels/embedding directly")
    if spec is not None and spec.task == "swap":  # AdaIN style Gemms act on the identity latent
        for n in model.graph.node:
            if n.op_type in ("Gemm", "MatMul"):
                out.setdefault(n.name, "AdaIN style projection of the identity latent")
    for name in options.extra_exclude:
        out.setdefault(name, "excluded by the caller")
    return out


@contextlib.contextmanager
def _quiet():
    """ORT's quantizer prints progress and logs one root-logger INFO line per copied bias."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            yield
    finally:
        root.setLevel(level)


def _at_least_opset(model, opset: int):
    """Per-channel DequantizeLinear (``axis``) needs opset 13; older graphs (the built-in
    RetinaFace) are converted up first."""
    import onnx
    from onnx import version_converter
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= opset:
        return model
    log.info("int8: converting opset %d -> %d for per-channel Q/DQ", current, opset)
    try:
        return version_converter.convert_version(model, opset)
    except Exception as e:  # the converter raises RuntimeError/ValidationError on odd graphs
        raise ModelError(f"int8 quantization | cannot convert opset {current} -> {opset}: {e}") \
            from None


CHUNK = 4  # samples whose intermediate tensors are held at once (full inswapper: ~300 MB each)


def chunk_size(n: int, most: int = CHUNK) -> int:
    """Largest divisor of ``n`` that is <= ``most`` (ORT wants equal strides)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


class _Reader:
    """ORT ``CalibrationDataReader`` over a list of feeds, read in strides.

    ORT's histogram calibrators keep every sample's intermediate tensors until they build the
    histograms: 56 full-size inswapper samples took 21 GB. With ``CalibStridedMinMax`` (which,
    despite its name, strides every calibrator) ORT folds each stride into the histograms and
    drops its tensors, so memory stays at ``CHUNK`` samples for any set size.
    """

    def __init__(self, feeds: list[Mapping[str, np.ndarray]]):
        self.feeds = feeds
        self.set_range(0, len(feeds))

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it: Iterator = iter(self.feeds[start_index:end_index])

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self.set_range(0, len(self.feeds))


def quantize_int8(onnx_path: Path | str, out_path: Path | str,
                  feeds: Iterable[Mapping[str, np.ndarray]], *, spec: ModelSpec | None = None,
                  options: Int8Options | None = None) -> Int8Report:
    """Write a Q/DQ INT8 graph of ``onnx_path`` to ``out_path``, calibrated on ``feeds``.

    Raises:
        InputError: no calibration feeds, or feeds that are all the same value (e.g. black).
        ModelError: the quantizer failed.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    options = options or Int8Options()
    feeds = list(feeds)
    if not feeds:
        raise InputError("calibration set | empty; expected >= 1 sample (fusionrt calibrate)")
    image = next(iter(feeds[0].values()))
    if all(float(np.ptp(next(iter(f.values())))) == 0.0 for f in feeds):
        log.warning("calibration set: every image is flat (e.g. all black, value %g); INT8 "
                    "ranges from it will clip real faces (the gate will refuse the result)",
                    float(image.flat[0]))
    out_path = Path(out_path)
    method = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
              "minmax": CalibrationMethod.MinMax}[options.method]
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Shape inference + ORT's graph optimizations (BN folding) before quantizing, as the
        # ORT docs recommend: quantizing an unfolded BN would quantize twice.
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        model = _at_least_opset(onnx.load(str(pre)), 13)
        meta = [(p.key, p.value) for p in onnx.load(str(onnx_path), load_external_data=False)
                .metadata_props]
        excluded = excluded_nodes(model, spec, options)
        onnx.save(model, str(pre))
        op_types = list(options.op_types or default_op_types(spec))
        s8 = options.activations == "s8"
        reduce_range = options.reduce_range
        if reduce_range is None:
            reduce_range = x86_without_vnni()
            if reduce_range:
                log.info("int8 | this CPU has no VNNI: 7-bit weights (reduce_range) so ONNX "
                         "Runtime's 8-bit kernels do not saturate")
        extra = {"ActivationSymmetric": s8, "WeightSymmetric": True,
                 "CalibMovingAverage": False, "CalibStridedMinMax": chunk_size(len(feeds))}
        if options.method == "percentile":
            extra["CalibPercentile"] = options.percentile
        raw = Path(tmp) / "q.onnx"
        try:
            with _quiet():
                quantize_static(str(pre), str(raw), _Reader(feeds), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=op_types, per_channel=options.per_channel,
                                activation_type=QuantType.QInt8 if s8 else QuantType.QUInt8,
                                weight_type=QuantType.QInt8,
                                nodes_to_exclude=sorted(excluded), calibrate_method=method,
                                reduce_range=reduce_range, extra_options=extra)
        except Exception as e:  # ORT's quantizer raises assorted errors on odd graphs
            raise ModelError(f"int8 quantization | onnxruntime quantizer failed: {e}") from e
        q = onnx.load(str(raw))
    del q.metadata_props[:]
    meta = [(k, v) for k, v in meta if k not in ("fusionrt.precision", "fusionrt.int8")]
    for k, v in meta + [("fusionrt.precision", "int8"),
                        ("fusionrt.int8", f"ort-qdq {options.method} act={options.activations} "
                                          f"per_channel={options.per_channel} "
                                          f"reduce_range={reduce_range} "
                                          f"samples={len(feeds)}")]:
        e = q.metadata_props.add()
        e.key, e.value = k, v
    from .._fs import atomic_write_bytes
    atomic_write_bytes(out_path, q.SerializeToString())
    report = Int8Report(out_path, options.method, len(feeds), qdq_summary(q)["int8_weights"],
                        excluded)
    log.info("int8: %s calibration on %d samples; quantized %s; %d nodes kept float",
             options.method, len(feeds), report.quantized, len(excluded))
    return report


def qdq_summary(model) -> dict:
    """Counts for reports: {"int8_weights": {op: n}, "float_weights": {op: n}, "qdq_pairs": n}.

    A Conv/Gemm has INT8 weights when its weight input is a DequantizeLinear output; norm nodes
    never do (their scale/bias stay float).
    """
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    q: dict[str, int] = {}
    f: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            d = q if len(n.input) > 1 and n.input[1] in dq else f
            d[n.op_type] = d.get(n.op_type, 0) + 1
    pairs = sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear")
    return {"int8_weights": q, "float_weights": f, "qdq_pairs": pairs}


def quantized_nodes(model) -> dict[str, bool]:
    """{node name: its weight input comes from a DequantizeLinear} for Conv/Gemm nodes."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name: len(n.input) > 1 and n.input[1] in dq
            for n in model.graph.node if n.op_type in ("Conv", "Gemm")}


def dq_fed(model) -> set[str]:
    """Names of nodes with at least one input straight from a DequantizeLinear."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if any(i in dq for i in n.input)}
