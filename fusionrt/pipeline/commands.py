"""``fusionrt swap``: put the face of a source image into a target image or video.

One path for every target and device: ``plan_stages`` → ``FaceSwapper`` → one frame, or the
video loop (``video.loop.transcode``) with the swapper as its frame stage.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..errors import InputError, OutputError
from .image_io import IMAGE_EXTS, read_image, write_image
from .plan import engine_help
from .options import add_max_pixels_arg, add_post_args, max_pixels, post_settings
from .settings import (DETECTOR_CHOICES, KERNELS, LANDMARKER_CHOICES, PRECISIONS,
                       SWAPPER_CHOICES, PipelineConfig)
from .select import MODES
from .swapper import FaceSwapper

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
    p.add_argument("--landmarker", default="none", choices=LANDMARKER_CHOICES,
                   help="68-point landmarks after detection (FaceFusion's 2dfan4); when "
                        "confident, their 5 points align the face instead of the detector's")
    p.add_argument("--detector", default="retinaface_mnet025", choices=DETECTOR_CHOICES,
                   help="face detector (default retinaface_mnet025, built in); FaceFusion's "
                        "scrfd_2.5g, retinaface_10g, yoloface_8n need their files: fusionrt "
                        "models pull NAME --trust")
    p.add_argument("--detector-angles", default="0", metavar="A,B,...",
                   help="also detect on the frame rotated by these angles, e.g. 0,90,180,270, "
                        "for sideways or upside-down faces (default 0: upright only)")
    p.add_argument("--det-size", type=int, default=640,
                   help="detector input side (a multiple of 32; 320 is faster on large faces)")
    p.add_argument("--engine", default="default", help=engine_help())
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda or cuda:N: where every stage runs (default cpu)")
    p.add_argument("--kernels", default="auto", choices=KERNELS,
                   help="pre/post-processing: host (numpy/OpenCV), device (torch tensors, frames "
                        "stay on the GPU); auto = device on CUDA, host on the CPU")
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
                   help="video: frames per batch (default 16)")
    p.add_argument("--detect-every", type=int, default=1, metavar="N",
                   help="video: detect faces on every N-th frame and reuse smoothed landmarks "
                        "in between (default 1: every frame)")
    p.add_argument("--explain", action="store_true",
                   help="print which model/engine ran each stage and ms per stage")
    p.add_argument("--encoders", type=int, default=0,
                   help="video: parallel x264 segment encoders (default 0 = auto)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (video; default veryfast)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="generator precision, on engines that support it (default fp32)")
    add_max_pixels_arg(p)
    add_post_args(p)
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


def settings_from_args(args: argparse.Namespace) -> PipelineConfig:
    """``fusionrt swap`` arguments → the pipeline settings (flags a caller lacks: defaults)."""
    batch = int(getattr(args, "batch", 16))
    if batch < 1:
        raise InputError(f"--batch | got {batch}; expected >= 1")
    every = int(getattr(args, "detect_every", 1))
    if every < 1:
        raise InputError(f"--detect-every | got {every}; expected >= 1")
    return PipelineConfig(
        swapper=args.swapper, engine=args.engine, device=args.device,
        kernels=getattr(args, "kernels", "auto"), select=args.select,
        similarity_threshold=args.similarity, color_transfer=args.color_transfer,
        poisson=getattr(args, "poisson", False), allow_synthetic=args.allow_synthetic,
        precision=getattr(args, "precision", "fp32"), detect_every=every, gen_batch=batch,
        landmarker=getattr(args, "landmarker", "none"),
        det_size=int(getattr(args, "det_size", 640)),
        detector=getattr(args, "detector", "retinaface_mnet025"),
        detector_angles=parse_angles(getattr(args, "detector_angles", "0")),
        **post_settings(args))


def parse_angles(text: str) -> tuple[int, ...]:
    """``--detector-angles 0,90,180,270`` → (0, 90, 180, 270); one-line ``InputError`` else."""
    try:
        angles = tuple(int(a) for a in str(text).replace(" ", "").split(","))
    except ValueError:
        angles = ()
    if not angles or any(a not in (0, 90, 180, 270) for a in angles) \
            or len(set(angles)) != len(angles):
        raise InputError(f"--detector-angles '{text}' | expected distinct comma-separated "
                         "angles out of 0, 90, 180, 270, e.g. 0,90,180,270")
    return angles


def run_swap(args: argparse.Namespace) -> int:
    out_path = Path(args.output)
    video = _is_video(args.target)
    if args.select == "reference" and not args.reference:
        raise InputError("selection 'reference' | needs --reference IMAGE")
    target_path = Path(args.target)
    if not target_path.is_file():
        raise InputError(f"target '{target_path}' | file not found")
    for role, given in (("target", target_path), ("source", args.source),
                        ("reference", args.reference)):
        if given and Path(given).resolve() == out_path.resolve():  # also through ../ or symlinks
            raise OutputError(f"output '{out_path}' | same file as the {role}; "
                              "choose another path")
    _check_output(out_path, video)
    settings = settings_from_args(args)
    limit = max_pixels(args)
    source_img = read_image(args.source, role="source", max_pixels=limit)
    reference = (read_image(args.reference, role="reference", max_pixels=limit)
                 if args.reference else None)
    target_img = None if video else read_image(args.target, role="target", max_pixels=limit)
    if video:  # from the stream header, before any model loads
        from .video.io import check_frame_pixels
        check_frame_pixels(target_path, limit)

    t0 = time.perf_counter()
    with FaceSwapper.open(settings, source=(source_img, args.source),
                          reference=None if reference is None else (reference, args.reference)
                          ) as swapper:
        setup_s = time.perf_counter() - t0
        swapper.reset_timing()
        if video:
            stats = _swap_video(swapper, args, out_path)
            frames = stats.frames
            summary = (f"{stats.frames} frames at {stats.fps:.1f} fps, "
                       f"{stats.faces_total} face(s) swapped")
        else:
            result, n = swapper.process_frame(target_img)
            if n == 0:
                log.warning("no face selected in the target image '%s'; writing it unchanged",
                            args.target)
            write_image(out_path, result)
            frames, summary, stats = 1, f"{n} face(s) swapped", None
        _report(swapper, args, out_path, summary, frames, setup_s, stats)
    return 0


def _swap_video(swapper: FaceSwapper, args: argparse.Namespace, out_path: Path):
    from .video.loop import VideoConfig, transcode
    config = VideoConfig(batch=int(getattr(args, "batch", 16)), crf=args.crf,
                         preset=getattr(args, "preset", "veryfast"),
                         encoders=int(getattr(args, "encoders", 0)), progress=True,
                         max_pixels=max_pixels(args))
    return transcode(args.target, out_path, swapper.frame_stage(config.batch), config)


def _report(swapper: FaceSwapper, args: argparse.Namespace, out_path: Path, summary: str,
            frames: int, setup_s: float, stats) -> None:
    if swapper.synthetic:
        print("WARNING: synthetic (random-weight) model used: the output is garbage, "
              "for tests and speed work only")
    print(f"swapper: {swapper.swapper_name} on {swapper.plan.device}; {summary}; wrote {out_path}")
    if args.explain:
        for stage, what in swapper.describe().items():
            print(f"  {stage:<12} {what}")
        print(f"  {'setup':<12} {setup_s * 1000:.1f} ms (model load + source face)")
        if stats is not None:
            print(f"  {'encoders':<12} {stats.encoders} x x264 {getattr(args, 'preset', '')}, "
                  f"batch {getattr(args, 'batch', '')}")
        ms = swapper.stage_ms()
        for stage, v in ms.items():
            print(f"  {stage:<12} {v:.2f} ms/frame")
        print(f"  {'total':<12} {sum(ms.values()):.2f} ms/frame over {frames} frame(s)")
        for name, s in sorted(getattr(stats, "waits_s", {}).items()):
            print(f"  wait {name:<22} {s:.2f} s")
