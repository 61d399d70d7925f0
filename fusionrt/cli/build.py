"""``fusionrt export``, ``fusionrt build`` and ``fusionrt calibrate``.

``build`` writes ``<name>.<precision>.onnx`` beside the FP32 file, runs the quality gate on
held-out inputs and refuses (deletes) a failing artifact, naming its figures and the precision
that passed. ``--engine trt`` then builds a strongly typed TensorRT plan from that graph into the
engine cache.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ..builders.convert import PRECISIONS
from ..engines.registry import REFERENCE_ENGINE, engine_names
from ..errors import InputError
from ..models.zoo import ZOO, get_spec

log = logging.getLogger(__name__)

#: The product kind of an engine that loads a prebuilt TensorRT plan (``Engine.needs``): for such an
#: engine ``build`` also builds the plan into the engine cache.
TRT_PLAN = "trt-plan"


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
    p.add_argument("--engine", choices=engine_names(), default=REFERENCE_ENGINE)
    p.add_argument("--batch", default="1", help="TensorRT batch profile N or MIN:OPT:MAX")
    p.add_argument("--method", choices=("entropy", "percentile", "minmax"), default="entropy",
                   help="INT8 activation calibration")
    p.add_argument("--activations", choices=("auto", "s8", "u8"), default="auto",
                   help="INT8 activations: s8 symmetric (TensorRT and every ORT EP), u8 "
                   "asymmetric (ORT CPU's fast U8S8 kernels only); auto = u8 for engines that run "
                   "on the CPU only")
    p.add_argument("--report", action="store_true", help="write the gate figures (JSON + "
                   "Markdown) beside the artifact")
    p.add_argument("--allow-synthetic", action="store_true",
                   help="use random-weight models when the real ones are not installed")
    p.add_argument("--require-id", action="store_true",
                   help="swap models: refuse unless the identity cosine is measured (needs the "
                   "FP32 ArcFace: fusionrt models pull arcface_w600k_r50); without it a missing "
                   "ArcFace leaves the figure 'not measured' and PSNR/SSIM decide")
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
    from ..builders.export import export_onnx
    from ..models.arch.reference import load_reference
    from ..models.store import ModelStore
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
    from ..pipeline.artifacts import build_calibration_set
    from ..runtime.home import fusionrt_home
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

def cmd_build(args: argparse.Namespace) -> int:
    from ..engines.base import BatchProfile, EngineConfig
    from ..engines.registry import get_engine
    from ..models.spec import Artifact
    from ..pipeline.artifacts import build_artifact
    try:
        batch = BatchProfile.parse(args.batch)
    except ValueError as e:
        raise InputError(str(e)) from None
    res = build_artifact(args.model, args.precision, calibration=args.calibration,
                         engine=args.engine, method=args.method,
                         allow_synthetic=args.allow_synthetic, out=args.out, report=args.report,
                         activations=args.activations, require_id=args.require_id)
    if res.report is not None:
        print(f"{res.artifact}  {res.precision} passed the quality gate: {res.report.summary()}")
        if res.report.synthetic:
            print("note: random-weight models; the figures say nothing about real-model quality")
    else:
        print(f"{res.artifact}  fp32 (the reference; no gate)")
    cls = get_engine(args.engine)
    if cls.needs(Artifact(get_spec(args.model), res.artifact),
                 EngineConfig(precision=res.precision, batch=batch)) == TRT_PLAN:
        if res.details.get("activations") == "u8":
            raise InputError("int8 --activations u8 | TensorRT needs symmetric s8 activations; "
                             "rebuild with --activations s8")
        _build_trt(cls.name, args.model, res.artifact, res.precision, batch)
    return 0


def _build_trt(engine: str, model: str, onnx_path: Path, precision: str, batch) -> None:
    """Strongly typed TensorRT plan for ``engine`` into the engine cache; prints the trtexec
    equivalent first."""
    from ..builders.trt_builder import (TrtBuildConfig, build_engine, timing_cache_path,
                                        trtexec_command)
    from ..runtime.cache import EngineCache, Fingerprint, cache_root
    spec = get_spec(model)
    dims = {"H": 640, "W": 640} if spec.task == "detect" else {}
    cfg = TrtBuildConfig(onnx_path, batch=batch, dims=dims,
                         timing_cache=timing_cache_path(cache_root()))
    plan_path = onnx_path.with_suffix(".plan")
    print("equivalent: " + trtexec_command(cfg, spec, plan_path))
    fp = Fingerprint.for_model(onnx_path, engine, precision, str(batch), cfg.builder_tag())
    cache = EngineCache()
    hit = cache.get(fp)
    if hit is not None:
        print(f"{hit}  TensorRT engine (cached)")
        return
    plan = build_engine(cfg, spec)  # EngineError with the install hint when TensorRT is absent
    print(f"{cache.put(fp, plan)}  TensorRT engine built")
