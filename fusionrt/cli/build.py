"""``fusionrt export``, ``fusionrt build`` and ``fusionrt calibrate``.

``build`` writes ``<name>.<precision>.onnx`` beside the FP32 file, runs the quality gate on
held-out inputs and refuses (deletes) a failing artifact, naming its figures and the precision
that passed. An engine that loads a TensorRT plan then gets one built from that graph into the
engine cache: full TensorRT for this GPU (``--profile edge``: Jetson Orin), or TensorRT-RTX plans
for named RTX archs (``--arch sm86,sm89,sm120``), which build on any machine, GPU or not, with a
manifest beside them. ``--all`` builds every zoo model that is installed.
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

#: The product kinds of engines that load a prebuilt TensorRT plan (``Engine.needs``): for such an
#: engine ``build`` also builds the plan into the engine cache.
TRT_PLAN = "trt-plan"
TRT_RTX_PLAN = "trt-rtx-plan"
DETECT_DIMS = {"H": 640, "W": 640}  # the detector's plan is built for a 640x640 letterbox


def register(subparsers) -> None:
    names = ", ".join(ZOO)
    p = subparsers.add_parser("export", help="export a reference module (synthetic weights) to ONNX")
    p.add_argument("model", help=f"zoo name ({names})")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--static-batch", action="store_true", help="fix the batch at 1")
    p.add_argument("--out", type=Path, help="default: the store's synthetic/<model>.onnx")
    p.set_defaults(func=cmd_export)

    from ..builders.trt_presets import PRESETS
    p = subparsers.add_parser("build", help="convert to FP16/INT8, gate quality, build engines")
    p.add_argument("model", nargs="?", help=f"zoo name ({names}); or --all")
    p.add_argument("--all", action="store_true", help="every installed zoo model (with "
                   "--allow-synthetic also the synthetic ones)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default: fp32 (the --profile's, if it names one)")
    p.add_argument("--calibration", type=Path, help="calibration set .npz (INT8; also gives "
                   "the gate its held-out faces)")
    p.add_argument("--engine", choices=engine_names(), default=REFERENCE_ENGINE)
    p.add_argument("--batch", default=None, help="TensorRT batch profile N or MIN:OPT:MAX "
                   "(default 1)")
    p.add_argument("--arch", help="TensorRT-RTX targets, e.g. sm86,sm89,sm120 (RTX 30/40/50); "
                   "builds without a GPU. Default: this GPU's arch")
    p.add_argument("--profile", choices=tuple(PRESETS), default="default",
                   help="TensorRT build preset; edge: Jetson Orin (1 GiB workspace, batch 1, "
                   "FP16; written, not run on a Jetson)")
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
    from ..builders.trt_presets import apply_preset, get_preset
    from ..engines.base import BatchProfile
    from ..engines.registry import get_engine
    from ..errors import FusionError
    try:
        batch = BatchProfile.parse(args.batch) if args.batch else None
        preset = get_preset(args.profile)
        batch, precision = apply_preset(preset, batch, args.precision)
    except (ValueError, FusionError) as e:
        raise InputError(str(e)) from None
    cls = get_engine(args.engine)
    if (why := cls.precision_refusal(precision)):  # before anything is converted
        raise InputError(f"engine '{cls.name}' | {why}")
    if args.all == bool(args.model):
        raise InputError("build | expected one model name or --all")
    if not args.all:
        _build_model(args, cls, args.model, precision, batch, preset)
        return 0
    failed = 0
    for name in ZOO:
        try:
            _build_model(args, cls, name, precision, batch, preset)
        except FusionError as e:
            if "not installed" in str(e):
                print(f"{name}  skipped: {e}")
            else:
                failed += 1
                print(f"{name}  FAILED: {e}")
    return 1 if failed else 0


def _synthesize_if_missing(model: str) -> None:
    """``--allow-synthetic`` for one model that is not installed at all: make the full-size
    random-weight stand-in first (as ``fusionrt models synth`` would), and say so."""
    from ..builders.synth import synthesize_missing  # needs torch; its error names the extra
    from ..models.store import ModelStore
    built = synthesize_missing(ModelStore(), [model])
    if not built:
        return
    print(f"{model}  not installed: synthesized a random-weight stand-in in {built[model]:g} s "
          f"(speed and build work only)")


def _build_model(args, cls, model: str, precision: str, batch, preset) -> None:
    from ..engines.base import EngineConfig
    from ..models.spec import Artifact
    from ..pipeline.artifacts import build_artifact
    kind = cls.needs(Artifact(get_spec(model), None), EngineConfig(precision=precision,
                                                                  batch=batch))
    if args.arch and kind != TRT_RTX_PLAN:
        raise InputError(f"--arch | engine '{cls.name}' builds for the GPU it runs on; --arch "
                         "names TensorRT-RTX targets")
    if kind == TRT_RTX_PLAN and preset.name != "default":
        raise InputError(f"--profile {preset.name} | {preset.note}: full TensorRT, not a "
                         "TensorRT-RTX target")
    archs = _rtx_archs(args.arch) if kind == TRT_RTX_PLAN else ()  # before the slow part
    if args.allow_synthetic and not args.all:
        _synthesize_if_missing(model)
    res = build_artifact(model, precision, calibration=args.calibration,
                         engine=cls.name, method=args.method,
                         allow_synthetic=args.allow_synthetic, out=args.out, report=args.report,
                         activations=args.activations, require_id=args.require_id)
    if res.report is not None:
        print(f"{res.artifact}  {res.precision} passed the quality gate: {res.report.summary()}")
        if res.report.synthetic:
            print("note: random-weight models; the figures say nothing about real-model quality")
    else:
        print(f"{res.artifact}  fp32 (the reference; no gate)")
    if kind == TRT_PLAN:
        if res.details.get("activations") == "u8":
            raise InputError("int8 --activations u8 | TensorRT needs symmetric s8 activations; "
                             "rebuild with --activations s8")
        _build_trt(cls.name, model, res.artifact, res.precision, batch, preset.workspace_gb)
    elif kind == TRT_RTX_PLAN:
        _build_trt_rtx(cls.name, model, res.artifact, res.precision, batch, archs)


def _rtx_archs(arch_text: str | None) -> tuple[str, ...]:
    """The TensorRT-RTX targets asked for; default: this machine's GPU, if it is one."""
    from ..builders.trt_rtx import arch_for_cc, parse_archs
    from ..engines.tensorrt_rtx import gpu_facts
    from ..errors import FusionError
    if not arch_text:
        arch_text = arch_for_cc(gpu_facts(0)[1] or "")
        if not arch_text:
            raise InputError("--arch | no supported GPU here to default to; expected e.g. "
                             "--arch sm86,sm89,sm120")
    try:
        return parse_archs(arch_text)
    except FusionError as e:
        raise InputError(str(e)) from None


def _build_trt_rtx(engine: str, model: str, onnx_path: Path, precision: str, batch,
                   archs: tuple[str, ...]) -> None:
    """TensorRT-RTX plans, one per arch, into the engine cache, with the manifest; prints the
    build time, plan size and layer count of each."""
    from ..builders.trt_rtx import build_plans
    spec = get_spec(model)
    records, manifest = build_plans(spec, onnx_path, precision, archs, batch=batch,
                                    dims=DETECT_DIMS if spec.task == "detect" else {},
                                    engine=engine)
    for r in records:
        how = "cached" if r.build_s is None else f"built in {r.build_s:.2f} s, {r.layers} layers"
        print(f"{model}  {precision}  {r.arch}  {r.plan_bytes / 1e6:.1f} MB  {how}  "
              f"{manifest.parent / r.file}")
    print(f"manifest: {manifest}  (built, not run: a plan runs only on a GPU of its arch)")


def _build_trt(engine: str, model: str, onnx_path: Path, precision: str, batch,
               workspace_gb: float = 4.0) -> None:
    """Strongly typed TensorRT plan for ``engine`` into the engine cache; prints the trtexec
    equivalent first."""
    from ..builders.trt_builder import (TrtBuildConfig, build_engine, timing_cache_path,
                                        trtexec_command)
    from ..runtime.cache import EngineCache, Fingerprint, cache_root
    spec = get_spec(model)
    dims = DETECT_DIMS if spec.task == "detect" else {}
    cfg = TrtBuildConfig(onnx_path, batch=batch, dims=dims, workspace_gb=workspace_gb,
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
