"""``fusionrt swap``: put the face of a source image into a target image or video."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..engines.registry import engine_names
from ..errors import EngineError, InputError, OutputError
from .image_io import IMAGE_EXTS, read_image, write_image
from .pipeline import SWAPPER_CHOICES, FaceSwapPipeline, PipelineConfig
from .select import MODES

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "swap", help="swap the source face into a target image or video",
        description="Swap the face in --source into --target and write -o OUT. Without neural "
                    "weights installed, the built-in 'classic' swapper runs.")
    p.add_argument("--source", "-s", required=True, help="image with the face to put in")
    p.add_argument("--target", "-t", required=True,
                   help=f"image or video ({', '.join(VIDEO_EXTS)}) to put it into")
    p.add_argument("-o", "--output", required=True, help="output image or video path")
    p.add_argument("--swapper", default="auto", choices=SWAPPER_CHOICES,
                   help="auto = first neural swapper with real weights installed, else classic")
    p.add_argument("--engine", default="ort-cpu",
                   help=f"one of {', '.join(engine_names())}; a per-stage map "
                        "'detect=ort-cuda,embed=ort-cuda,swap=trt'; or 'auto' (measured once per "
                        "machine, parity-checked, fastest kept)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (GPU engines)")
    p.add_argument("--select", default="largest", choices=MODES,
                   help="which target faces to swap")
    p.add_argument("--reference", help="with --select reference: image of the person to replace")
    p.add_argument("--similarity", type=float, default=0.4,
                   help="with --select reference: cosine similarity threshold (default 0.4)")
    p.add_argument("--color-transfer", action="store_true",
                   help="match the swapped face's colours to the target (LAB mean/std)")
    p.add_argument("--poisson", action="store_true", help="Poisson (seamless) blending")
    p.add_argument("--allow-synthetic", action="store_true",
                   help="allow random-weight synthetic models (tests and speed work only)")
    p.add_argument("--crf", type=int, default=18, help="video quality (x264 CRF, lower = better)")
    p.add_argument("--batch", type=int, default=16,
                   help="video with --device cuda: frames per GPU batch (default 16)")
    p.add_argument("--detect-every", type=int, default=1, metavar="N",
                   help="video with --device cuda: detect faces on every N-th frame and reuse "
                        "smoothed landmarks in between (default 1: every frame)")
    p.add_argument("--explain", action="store_true",
                   help="print which model/engine ran each stage and ms per stage")
    p.add_argument("--encoders", type=int, default=0,
                   help="video with --device cuda: parallel x264 segment encoders (0 = auto)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (video)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "fp16", "bf16"),
                   help="generator precision on the GPU path")
    p.set_defaults(func=run_swap)


def _is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def _check_output(path: Path, video: bool) -> None:
    """Fail before any work if the output cannot be written where asked (the video writer
    checks its own containers)."""
    exts = VIDEO_EXTS if video else IMAGE_EXTS
    if not video and path.suffix.lower() not in exts:
        kind = "video" if video else "image"
        raise OutputError(f"output '{path}' | extension '{path.suffix}' for a {kind} target; "
                          f"expected one of {', '.join(exts)}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output '{path}' | folder '{parent}' does not exist or is not a folder")
    if path.is_dir():
        raise OutputError(f"output '{path}' | is a folder; expected a file path")


def run_swap(args: argparse.Namespace) -> int:
    out_path = Path(args.output)
    video = _is_video(args.target)
    if args.select == "reference" and not args.reference:
        raise InputError("selection 'reference' | needs --reference IMAGE")
    target_path = Path(args.target)
    if not target_path.is_file():
        raise InputError(f"target '{target_path}' | file not found")
    if target_path.resolve() == out_path.resolve():
        raise OutputError(f"output '{out_path}' | same file as the target; choose another path")
    _check_output(out_path, video)
    if video and args.device.startswith("cuda"):
        from .device.cli import run_gpu_video  # the GPU-resident path (torch); CPU path below
        return run_gpu_video(args)
    source_img = read_image(args.source, role="source")
    target_img = None if video else read_image(args.target, role="target")

    config = PipelineConfig(
        swapper=args.swapper, engine=args.engine, device=args.device, select=args.select,
        similarity_threshold=args.similarity, color_transfer=args.color_transfer,
        poisson=args.poisson, allow_synthetic=args.allow_synthetic)
    t0 = time.perf_counter()
    with FaceSwapPipeline(config) as pipe:
        pipe.set_source(source_img, args.source)
        if args.reference:
            pipe.set_reference(read_image(args.reference, role="reference"), args.reference)
        setup_s = time.perf_counter() - t0
        if video:
            frames, summary = _swap_video(pipe, args, out_path)
        else:
            result, n = pipe.process_frame(target_img)
            if n == 0:
                log.warning("no face selected in the target image '%s'; writing it unchanged",
                            args.target)
            write_image(out_path, result)
            frames, summary = 1, f"{n} face(s) swapped"
        _report(pipe, args, out_path, summary, frames, setup_s)
    return 0


def _swap_video(pipe: FaceSwapPipeline, args: argparse.Namespace, out_path: Path):
    try:
        from .video.io import process_video
    except ImportError as e:
        raise EngineError(f"video '{args.target}' | video support is not available: {e}") from None
    # process_frame returns (frame, n_faces): process_video counts the faces for us
    stats = process_video(args.target, str(out_path), pipe.process_frame, crf=args.crf,
                          preset=getattr(args, "preset", "veryfast"), progress=True)
    return stats.frames, (f"{stats.frames} frames at {stats.fps:.1f} fps, "
                          f"{stats.faces_total} face(s) swapped")


def _report(pipe: FaceSwapPipeline, args: argparse.Namespace, out_path: Path, summary: str,
            frames: int, setup_s: float) -> None:
    if pipe.synthetic:
        print("WARNING: synthetic (random-weight) model used: the output is garbage, "
              "for tests and speed work only")
    print(f"swapper: {pipe.swapper_name}; {summary}; wrote {out_path}")
    if args.explain:
        for stage, what in pipe.describe().items():
            print(f"  {stage:<7} {what}")
        print(f"  setup   {setup_s * 1000:.1f} ms (model load + source face)")
        ms = pipe.stage_ms()
        for stage in ("detect", "embed", "swap", "paste"):
            if stage in ms:
                print(f"  {stage:<7} {ms[stage]:.1f} ms/frame")
        print(f"  total   {sum(ms.values()):.1f} ms/frame over {frames} frame(s)")
