"""Export a torch module to ONNX under a ``ModelSpec`` contract, then prove parity on ORT CPU.

The file names its own contract (``metadata_props``) and where it came from (torch version,
opset, exporter, date). Exporter: the TorchScript-based one (``dynamo=False``), measured
against the ``torch.export`` one (torch 2.14.1 CPU, onnxscript 0.7.2, 2 shared cores, batch 2,
export time only): iresnet50 1.3 s vs 6.5 s, simswap256 3.0 s vs 12.3 s, inswapper at width
0.125 1.5 s vs 4.0 s, with equal ORT parity (max |d| <= 2e-6). The ``torch.export`` exporter also
needs ``onnxscript``, which is not in our extras. TorchScript refuses some graph names (ArcFace's
output ``683``), so I/O is exported under placeholders and renamed afterwards.
"""

from __future__ import annotations

import datetime as _dt
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._fs import atomic_write_bytes
from ..errors import EngineError, ModelError
from ..models.spec import ModelSpec
from ..runtime.machine import library_version

log = logging.getLogger(__name__)

MIN_OPSET = 13  # Resize with bilinear/align_corners=False and ReduceMean axes as inputs need >= 13
EXPORTER = "torchscript"


@dataclass(frozen=True)
class ExportReport:
    """What ``export_onnx`` wrote and how close ORT came to torch (None if parity was skipped)."""

    path: Path
    opset: int
    max_abs_diff: float | None
    cosine: float | None
    simplified: bool
    seconds: float
    exporter: str = EXPORTER


def _require_onnx():
    try:
        import onnx
        import torch
    except ImportError as e:
        raise EngineError(f"onnx export | {e.name} is not installed: "
                          "pip install 'fusionrt[torch]'") from None
    return torch, onnx


def sample_inputs(spec: ModelSpec, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random feeds in each input's range: images in [0, 1] when the spec scales by
    1/255 (inswapper), standard-normal when normalised by mean/std, L2-normalised (N, 512)
    latents for swap ``source`` inputs."""
    rng = np.random.default_rng(seed)
    feeds = {}
    dims = spec.extra.get("export_dims", {})  # e.g. a detector's {"H": 320, "W": 320}
    for t in spec.inputs:
        shape = tuple(batch if i == 0 and isinstance(d, str) else dims.get(d, d)
                      for i, d in enumerate(t.shape))
        if any(isinstance(d, str) for d in shape[1:]):
            raise ModelError(f"input '{t.name}' | symbolic dims {t.shape_str()} beyond the batch "
                             "axis; export supports only a dynamic batch")
        if len(shape) == 2:  # an id latent: unit length, like the pipeline feeds it
            x = rng.standard_normal(shape)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        elif spec.preprocess.std[0] >= 255.0 and spec.preprocess.mean[0] == 0.0:
            x = rng.random(shape)
        else:
            x = rng.standard_normal(shape)
        feeds[t.name] = x.astype(t.dtype)
    return feeds


def _torch_export(torch, module, args: tuple, path: Path, spec: ModelSpec, opset: int,
                  dynamic_batch: bool) -> None:
    """TorchScript exporter; ``dynamo=False`` only where the argument exists (torch >= 2.5).

    Graph I/O gets placeholder names here and the spec's names after loading: TorchScript
    refuses names such as ArcFace's output ``683`` ("Invalid name").
    """
    names_in = [_placeholder("in", i) for i in range(len(spec.inputs))]
    names_out = [_placeholder("out", i) for i in range(len(spec.outputs))]
    kwargs: dict[str, Any] = dict(input_names=names_in, output_names=names_out,
                                  opset_version=opset, do_constant_folding=True)
    # only axes the contract names: "N" (CodeFormer's 'weight' is a fixed (1,) input) and
    # others a spec samples with extra["export_dims"] (a detector's H, W and anchor counts)
    axes = {n: {i: d for i, d in enumerate(t.shape) if isinstance(d, str) and (i or dynamic_batch)}
            for n, t in zip(names_in + names_out, spec.inputs + spec.outputs)}
    if any(axes.values()):
        kwargs["dynamic_axes"] = {n: a for n, a in axes.items() if a}
    import inspect
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with warnings.catch_warnings():
        # The legacy-exporter DeprecationWarning and tracer warnings are about torch, not the user.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), **kwargs)


def _placeholder(kind: str, i: int) -> str:
    return f"fusionrt_{kind}_{i}"


def _rename_io(model, spec: ModelSpec) -> None:
    """Give the graph I/O the spec's names, moving any internal value of that name aside."""
    mapping = {_placeholder("in", i): t.name for i, t in enumerate(spec.inputs)}
    mapping.update({_placeholder("out", i): t.name for i, t in enumerate(spec.outputs)})
    g = model.graph
    used = {n for node in g.node for n in (*node.input, *node.output)}
    used |= {i.name for i in g.initializer}
    for new in list(mapping.values()):
        if new in used:  # e.g. a traced value that happens to be called "683"
            mapping[new] = f"{new}__internal"
    for node in g.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for init in g.initializer:
        init.name = mapping.get(init.name, init.name)
    for v in (*g.input, *g.output, *g.value_info):
        v.name = mapping.get(v.name, v.name)


def _simplify(model, spec: ModelSpec):
    """onnxslim (constant folding, dead-node removal) when installed; graph I/O must survive."""
    try:
        import onnxslim
    except ImportError:
        log.info("onnxslim not installed: exporting without simplification "
                 "(pip install 'fusionrt[onnx]')")
        return model, False
    slim = onnxslim.slim(model)
    ins = [i.name for i in slim.graph.input]
    outs = [o.name for o in slim.graph.output]
    if ins != [t.name for t in spec.inputs] or outs != [t.name for t in spec.outputs]:
        log.warning("onnxslim changed the graph I/O (%s -> %s); keeping the unsimplified graph",
                    ins, outs)
        return model, False
    return slim, True


def export_onnx(module: Any, spec: ModelSpec, out_path: Path | str, *, opset: int = 17,
                dynamic_batch: bool = True, simplify: bool = True,
                metadata: Mapping[str, Any] | None = None, check_parity: bool = True,
                atol: float = 1e-3, min_cosine: float = 0.9999,
                extra_initializers: Mapping[str, np.ndarray] | None = None,
                seed: int = 0) -> ExportReport:
    """Export ``module`` (forward takes ``spec.inputs`` in order; it is put in eval mode)
    to ``out_path``, written atomically. The graph is traced in fp32 on the CPU.

    Args:
        opset: ONNX opset, >= 13 (lower is refused).
        dynamic_batch: batch axis "N"; False fixes the batch at 1.
        simplify: run onnxslim when installed.
        metadata: extra provenance, written as ``fusionrt.<key>`` (prefix optional).
        check_parity: run seeded inputs through torch (eval, fp32) and ORT CPU.
        atol: the largest allowed |torch - ort|, relative to max(1, max |torch output|).
        min_cosine: the lowest allowed cosine between flattened outputs.
        extra_initializers: arrays appended *after* all others (in order), unused by the graph;
            inswapper's ``emap`` must be the graph's last initializer.

    Raises:
        ModelError: opset too low, export failure, I/O mismatch or parity over tolerance.
    """
    torch, onnx = _require_onnx()
    t0 = time.perf_counter()
    out_path = Path(out_path)
    if opset < MIN_OPSET:
        raise ModelError(f"export '{spec.name}' | opset {opset} is too old; "
                         f"expected >= {MIN_OPSET}")
    module = module.eval()
    # Trace at batch 2 for a dynamic batch so no reshape gets baked in as batch 1.
    feeds = sample_inputs(spec, batch=2 if dynamic_batch else 1, seed=seed)
    args = tuple(torch.from_numpy(feeds[t.name]) for t in spec.inputs)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            with torch.no_grad():
                _torch_export(torch, module, args, raw, spec, opset, dynamic_batch)
        except Exception as e:  # torch raises many types (OnnxExporterError, RuntimeError, ...)
            raise ModelError(f"export '{spec.name}' | torch.onnx.export failed at opset {opset}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        model = onnx.load(str(raw))
    _rename_io(model, spec)
    simplified = False
    if simplify:
        model, simplified = _simplify(model, spec)
    _append_initializers(model, extra_initializers or {})
    _write_metadata(model, spec, library_version("torch"), opset, dynamic_batch, metadata or {})
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"export '{spec.name}' | exported graph is invalid: {e}") from None
    atomic_write_bytes(out_path, model.SerializeToString())
    max_diff = cos = None
    if check_parity:
        max_diff, cos = parity(module, spec, out_path, batch=2 if dynamic_batch else 1,
                               seed=seed + 1, atol=atol, min_cosine=min_cosine)
    seconds = time.perf_counter() - t0
    log.info("exported %s to %s (opset %d, %s batch, simplified=%s) in %.1f s; parity max|d|=%s "
             "cos=%s", spec.name, out_path, opset, "dynamic" if dynamic_batch else "static",
             simplified, seconds, max_diff, cos)
    return ExportReport(out_path, opset, max_diff, cos, simplified, seconds)


def _append_initializers(model, extra: Mapping[str, np.ndarray]) -> None:
    from onnx import numpy_helper
    have = {i.name for i in model.graph.initializer}
    for name, arr in extra.items():
        if name in have:
            raise ModelError(f"extra initializer '{name}' | name already used in the graph")
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), name))


def _write_metadata(model, spec: ModelSpec, torch_version: str, opset: int,
                    dynamic_batch: bool, metadata: Mapping[str, Any]) -> None:
    provenance = {"torch_version": torch_version, "opset": str(opset), "exporter": EXPORTER,
                  "batch": "dynamic" if dynamic_batch else "static",
                  "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    provenance.update({k.removeprefix("fusionrt."): str(v) for k, v in metadata.items()})
    del model.metadata_props[:]
    for key, value in spec.to_metadata(**provenance).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def parity(module: Any, spec: ModelSpec, onnx_path: Path | str, *, batch: int = 2, seed: int = 1,
           atol: float = 1e-3, min_cosine: float = 0.9999) -> tuple[float, float]:
    """(max |torch - ort|, worst cosine) over all outputs; ``ModelError`` if over tolerance."""
    import onnxruntime as ort
    import torch
    feeds = sample_inputs(spec, batch=batch, seed=seed)
    so = ort.SessionOptions()
    so.log_severity_level = 3  # the unused emap initializer draws a warning per load
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    got = sess.run([t.name for t in spec.outputs], feeds)
    with torch.no_grad():
        ref = module.eval()(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs))
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    worst_diff, worst_cos = 0.0, 1.0
    for t, r, g in zip(spec.outputs, refs, got):
        r = r.float().numpy().astype(np.float64).ravel()
        g = np.asarray(g, np.float64).ravel()
        diff = float(np.max(np.abs(r - g)))
        denom = float(np.linalg.norm(r) * np.linalg.norm(g))
        cos = float(r @ g / denom) if denom > 0 else float(np.array_equal(r, g))
        log.info("parity %s/%s: max|d|=%.3g cosine=%.8f", spec.name, t.name, diff, cos)
        if diff > atol * max(1.0, float(np.max(np.abs(r)))) or cos < min_cosine:
            raise ModelError(f"export '{spec.name}' output '{t.name}' | ORT differs from torch: "
                             f"max|d|={diff:.3g}, cosine={cos:.6f}; expected max|d| <= "
                             f"{atol:g} x max(1, |ref|) and cosine >= {min_cosine}")
        worst_diff, worst_cos = max(worst_diff, diff), min(worst_cos, cos)
    return worst_diff, worst_cos
