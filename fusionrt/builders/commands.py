"""``fusionrt export``, ``fusionrt build`` and ``fusionrt calibrate``.

``build`` writes ``<name>.<precision>.onnx`` beside the FP32 file, runs the quality gate on
held-out inputs and refuses (deletes) a failing artifact, naming its figures and the precision
that passed. ``--engine trt`` then builds a strongly typed TensorRT plan from that graph into the
engine cache.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EngineError, InputError
from ..models.zoo import ZOO, get_spec

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
BUILD_ENGINES = ("ort-cpu", "ort-cuda", "ort-trt", "trt", "torch", "torch-compile")
HOLDOUT = 0.1  # share of a calibration set held out for the gate (1..32 samples)


def register(subparsers) -> None:
    names = ", ".join(ZOO)
    p = subparsers.add_parser("export", help="export a reference module (synthetic weights) to ONNX")
    p.add_argument("model", help=f"zoo name ({names})")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--static-batch", action="store_true", help="fix the batch at 1")
    p.add_argument("--out", type=Path, help="default: the store's synthetic/<model>.onnx")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("build", help="convert to FP16/INT8, gate quality, build engines")
    p.add_argument("model", help=f"zoo name ({names})")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--calibration", type=Path, help="calibration set .npz (INT8; also gives "
                   "the gate its held-out faces)")
    p.add_argument("--engine", choices=BUILD_ENGINES, default="ort-cpu")
    p.add_argument("--batch", default="1", help="TensorRT batch profile N or MIN:OPT:MAX")
    p.add_argument("--method", choices=("entropy", "percentile", "minmax"), default="entropy",
                   help="INT8 activation calibration")
    p.add_argument("--activations", choices=("auto", "s8", "u8"), default="auto",
                   help="INT8 activations: s8 symmetric (TensorRT and every ORT EP), u8 "
                   "asymmetric (ORT CPU's fast U8S8 kernels only); auto = u8 for ort-cpu")
    p.add_argument("--report", action="store_true", help="write the gate figures (JSON + "
                   "Markdown) beside the artifact")
    p.add_argument("--allow-synthetic", action="store_true",
                   help="use random-weight models when the real ones are not installed")
    p.add_argument("--out", type=Path, help="artifact path (default: beside the FP32 file)")
    p.set_defaults(func=cmd_build)

    p = subparsers.add_parser("calibrate", help="make an INT8 calibration set of face crops")
    p.add_argument("model", help=f"zoo name ({names})")
    p.add_argument("--images", type=Path, required=True, help="folder of images, or a video")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="top up with flipped/scaled/rotated/"
                   "brightened variants (for tiny test sets; not a substitute for real faces)")
    p.add_argument("--allow-synthetic", action="store_true",
                   help="identity embeddings from a synthetic ArcFace if the real one is missing")
    p.add_argument("--out", type=Path, help="default: $FUSIONRT_HOME/calibration/MODEL-N-sSEED.npz")
    p.set_defaults(func=cmd_calibrate)


# -- export -----------------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    from ..models.store import ModelStore
    from .export import export_onnx
    from .synth import load_reference
    spec = get_spec(args.model)
    module = load_reference(spec.name)
    out = args.out or ModelStore().synthetic_path(spec.name)
    extra = {"emap": module.emap.numpy().astype(np.float32)} if hasattr(module, "emap") else None
    rep = export_onnx(module, spec, out, opset=args.opset, dynamic_batch=not args.static_batch,
                      metadata={"synthetic": "1"}, extra_initializers=extra)
    print(f"{rep.path}  opset {rep.opset}, {'static' if args.static_batch else 'dynamic'} batch, "
          f"parity max|d|={rep.max_abs_diff:.3g} cosine={rep.cosine:.6f} (random weights)")
    return 0


# -- calibrate -------------------------------------------------------------------------------

def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..models.store import fusionrt_home
    from .calibrate import build_calibration_set
    cal = build_calibration_set(args.model, args.images, args.count, args.seed,
                                do_augment=args.augment, allow_synthetic=args.allow_synthetic)
    out = args.out or fusionrt_home() / "calibration" / f"{args.model}-{len(cal)}-s{args.seed}.npz"
    cal.save(out)
    m = cal.meta
    print(f"{out}  {len(cal)} crops from {m['frames']} frames ({m['faces_found']} faces found, "
          f"{m['augmented']} augmented variants)")
    if m["augmented"]:
        print("note: augmented crops of a few photos are not a diverse set; calibrate on "
              "500-1000 of your own faces for real use")
    return 0


# -- build -----------------------------------------------------------------------------------

@dataclass
class BuildResult:
    artifact: Path
    precision: str
    report: object | None = None  # GateReport
    details: dict = field(default_factory=dict)


def _id_embedder(allow_synthetic: bool):
    """FP32 ArcFace on ort-cpu for the generator's identity figure, or None if not installed."""
    from ..engines.registry import get_engine
    from ..errors import ModelError
    from ..models.store import ModelStore
    from ..pipeline.host.embed import Embedder
    try:
        art = ModelStore().resolve("arcface_w600k_r50", allow_synthetic=allow_synthetic)
    except ModelError as e:
        log.warning("identity cosine not measurable: %s", e)
        return None
    return Embedder(get_engine("ort-cpu")(art).load())


def holdout_feeds(spec, calibration: Path | None) -> tuple[list, list, list[str]]:
    """(calibration feeds, held-out feeds, notes)."""
    from .calibrate import load_calibration
    from .export import sample_inputs
    if calibration is None:
        feeds = [sample_inputs(spec, 1, seed=1000 + i) for i in range(4)]
        return [], feeds, ["gate inputs: 4 seeded random tensors (no --calibration set given), "
                           "not face crops"]
    cal = load_calibration(calibration)
    cal.check(spec)
    k = int(min(32, max(1, round(len(cal) * HOLDOUT))))
    fit, held = cal.split(k)
    notes = [f"gate inputs: {len(held)} held-out crops of {calibration.name} "
             f"({len(fit)} used for calibration)"]
    if cal.meta.get("augmented"):
        notes.append("calibration set is augmented crops of a few photos: not a diverse set")
    return list(fit.feeds(spec)), list(held.feeds(spec)), notes


def make_artifact(spec, fp32: Path, precision: str, out: Path, fit: list, method: str = "entropy",
                  activations: str = "s8") -> dict:
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


def build_artifact(model: str, precision: str, *, calibration: Path | None = None,
                   engine: str = "ort-cpu", method: str = "entropy", allow_synthetic: bool = False,
                   out: Path | None = None, report: bool = False,
                   activations: str = "auto") -> BuildResult:
    """Make and gate one reduced-precision artifact (library form of ``fusionrt build``)."""
    from ..models.store import ModelStore
    from .gate import evaluate, refusal
    spec = get_spec(model)
    art = ModelStore().resolve(model, allow_synthetic=allow_synthetic)
    fp32 = Path(art.onnx_path)
    if precision == "fp32":
        return BuildResult(fp32, "fp32")
    fit, held, notes = holdout_feeds(spec, calibration)
    if precision == "int8" and not fit:
        raise InputError(f"model '{spec.name}' | INT8 needs --calibration SET.npz; make one "
                         f"with: fusionrt calibrate {spec.name} --images DIR")
    out = Path(out) if out else fp32.with_name(f"{fp32.stem}.{precision}.onnx")
    embedder = _id_embedder(allow_synthetic) if spec.task == "swap" else None
    torch_engine = engine in ("torch", "torch-compile")
    if torch_engine and precision == "int8":
        raise EngineError(f"engine '{engine}' | has no INT8 path; INT8 runs as a Q/DQ graph on "
                          "ort-cpu, ort-cuda, ort-trt or trt")
    cand_runner, details = None, {}
    if torch_engine:
        cand_runner, out = _torch_fp16_runner(spec, art), fp32
        details = {"torch": "fusionrt.builders.fp16.fp16_module (keep-list modules in FP32)"}
    else:
        if activations == "auto":  # measured: S8S8 graphs fuse only partly on x86 ORT CPU
            activations = "u8" if engine == "ort-cpu" else "s8"
        details = make_artifact(spec, fp32, precision, out, fit, method, activations)
    gate_on = engine if engine.startswith("ort-") else "ort-cpu"
    rep = evaluate(spec, fp32, out, precision, held, engine=gate_on, id_embedder=embedder,
                   synthetic=art.synthetic, candidate_runner=cand_runner)
    rep.notes[:0] = notes
    rep.details = details
    stem = out.with_suffix("") if not torch_engine else fp32.with_name(f"{fp32.stem}.torch-fp16")
    if report:
        for p in rep.write(stem):
            log.info("wrote %s", p)
    if not rep.passed:
        if not torch_engine:
            out.unlink(missing_ok=True)
        passed = _fallbacks(model, precision, calibration, engine, allow_synthetic)
        raise refusal(rep, passed)
    return BuildResult(out, precision, rep, details)


def _fallbacks(model, precision, calibration, engine, allow_synthetic) -> list[str]:
    """Which lower-risk precision passes, for the refusal message (INT8 → try FP16)."""
    if precision != "int8":
        return []
    import tempfile
    from ..errors import FusionError
    with tempfile.TemporaryDirectory() as tmp:
        try:
            build_artifact(model, "fp16", calibration=calibration, engine=engine,
                           allow_synthetic=allow_synthetic, out=Path(tmp) / "fp16.onnx")
            return ["fp16"]
        except FusionError:
            return []


def _torch_fp16_runner(spec, art):
    """Outputs of ``fp16_module`` of the reference module (CPU), for the gate."""
    import torch
    from .fp16 import fp16_module
    from .synth import load_reference
    if art.weights_path is None:
        raise EngineError(f"model '{spec.name}' | torch FP16 gate needs the torch weights (.pt)")
    module = fp16_module(load_reference(spec.name, art.weights_path))

    def run(feeds):
        with torch.inference_mode():
            out = module(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().numpy() for o in outs]
    return run


def cmd_build(args: argparse.Namespace) -> int:
    from ..engines.base import BatchProfile
    try:
        batch = BatchProfile.parse(args.batch)
    except ValueError as e:
        raise InputError(str(e)) from None
    res = build_artifact(args.model, args.precision, calibration=args.calibration,
                         engine=args.engine, method=args.method,
                         allow_synthetic=args.allow_synthetic, out=args.out, report=args.report,
                         activations=args.activations)
    if res.report is not None:
        print(f"{res.artifact}  {res.precision} passed the quality gate: {res.report.summary()}")
        if res.report.synthetic:
            print("note: random-weight models; the figures say nothing about real-model quality")
    else:
        print(f"{res.artifact}  fp32 (the reference; no gate)")
    if args.engine == "trt":
        if res.details.get("activations") == "u8":
            raise InputError("int8 --activations u8 | TensorRT needs symmetric s8 activations; "
                             "rebuild with --activations s8")
        _build_trt(args.model, res.artifact, res.precision, batch)
    return 0


def _build_trt(model: str, onnx_path: Path, precision: str, batch) -> None:
    """Strongly typed TensorRT plan into the engine cache; prints the trtexec equivalent first."""
    from ..runtime.cache import EngineCache, Fingerprint, cache_root
    from .trt_builder import TrtBuildConfig, build_engine, trtexec_command
    spec = get_spec(model)
    dims = {"H": 640, "W": 640} if spec.task == "detect" else {}
    cfg = TrtBuildConfig(onnx_path, batch=batch, dims=dims,
                         timing_cache=cache_root() / "trt" / "timing.cache")
    plan_path = onnx_path.with_suffix(".plan")
    print("equivalent: " + trtexec_command(cfg, spec, plan_path))
    fp = Fingerprint.for_model(onnx_path, "trt", precision, str(batch), cfg.builder_tag())
    cache = EngineCache()
    hit = cache.get(fp)
    if hit is not None:
        print(f"{hit}  TensorRT engine (cached)")
        return
    plan = build_engine(cfg, spec)  # EngineError with the install hint when TensorRT is absent
    print(f"{cache.put(fp, plan)}  TensorRT engine built")
