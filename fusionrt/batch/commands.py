"""``fusionrt batch``: swap one source face into many images and videos on a Ray cluster.

Ray is imported only when the command runs, so ``fusionrt --help`` works without the extra.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..pipeline.image_io import MAX_PIXELS, read_image
from ..pipeline.options import add_max_pixels_arg, add_post_args, max_pixels, post_settings
from ..pipeline.plan import device_kind, engine_help, parse_engine_spec
from ..pipeline.settings import PRECISIONS, SWAPPER_CHOICES, PipelineConfig
from .jobs import plan_job

log = logging.getLogger(__name__)

# --path → the settings' kernels ("auto": the plan's choice, device kernels on CUDA)
PATH_KERNELS = {"auto": "auto", "cpu": "host", "gpu": "device"}



def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch", help="swap a face into every image/video of a folder or manifest, on Ray",
        description="Swap the face in --source into every image and video listed by --inputs "
                    "(a folder, searched recursively, or a manifest with one path a line) and "
                    "write them under --out with the same relative names. Starts a local Ray "
                    "cluster unless --address is given. Finished outputs are skipped on rerun. "
                    "Needs: pip install 'fusionrt[ray]'.")
    p.add_argument("--source", "-s", required=True, help="image with the face to put in")
    p.add_argument("--inputs", "-i", required=True, help="folder or manifest.txt")
    p.add_argument("--out", "-o", required=True, help="output folder (created if missing)")
    p.add_argument("--address", help="Ray cluster to join: ray://host:10001 or 'auto'; "
                                     "default: start a local one")
    p.add_argument("--workers", type=int, help="default: one per GPU, or per --cpus-per-worker cores")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="GPUs per worker (e.g. 1; 0.5 puts two workers on a GPU)")
    p.add_argument("--retries", type=int, default=2,
                   help="extra attempts after a crash or a dead worker (default 2)")
    p.add_argument("--segment-seconds", type=float, default=0.0,
                   help="split videos longer than this at keyframes into segments processed in "
                        "parallel and stitched back (default 0: whole videos)")
    p.add_argument("--report", help="JSON report path (a .md twin is written beside it); "
                                    "default OUT/batch_report.json")
    p.add_argument("--swapper", default="auto", choices=SWAPPER_CHOICES)
    p.add_argument("--engine", default="default", help=engine_help())
    p.add_argument("--device", help="default cpu, or cuda with --gpus-per-worker > 0 (the GPU "
                                    "Ray assigned to the worker)")
    p.add_argument("--det-size", type=int, default=640, help="detector input size")
    p.add_argument("--crf", type=int, default=18, help="video quality (x264 CRF)")
    p.add_argument("--path", choices=tuple(PATH_KERNELS), default="auto",
                   help="gpu: the device kernels (frames stay on the GPU; needs torch and a "
                        "neural swapper); cpu: the host kernels (numpy/OpenCV); auto (default): "
                        "gpu on a CUDA --device with a neural swapper, else cpu")
    p.add_argument("--batch", type=int, default=16,
                   help="frames per batch of the video loop (and crops per generator call)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="generator precision (on engines that support it)")
    p.add_argument("--preset", default="veryfast", help="x264 preset of the written videos")
    p.add_argument("--allow-synthetic", action="store_true",
                   help="allow random-weight test models (output is garbage)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local cluster (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_max_pixels_arg(p)
    add_post_args(p)
    p.set_defaults(func=run_batch_command)


def _check(args: argparse.Namespace) -> None:
    for flag, value, low in (("--workers", args.workers, 1), ("--retries", args.retries, 0)):
        if value is not None and value < low:
            raise InputError(f"{flag} {value} | expected >= {low}")
    if args.cpus_per_worker <= 0 or args.gpus_per_worker < 0 or args.segment_seconds < 0:
        raise InputError("--cpus-per-worker/--gpus-per-worker/--segment-seconds | got "
                         f"{args.cpus_per_worker}/{args.gpus_per_worker}/{args.segment_seconds}; "
                         "expected > 0 / >= 0 / >= 0")


def path_settings(pipeline: PipelineConfig, path: str = "auto", batch: int = 16,
                  precision: str = "fp32", preset: str = "veryfast",
                  limit: int | None = MAX_PIXELS) -> tuple[PipelineConfig, Any]:
    """(PipelineConfig, VideoConfig) of the workers for ``--path``, checked here, before a
    cluster starts (the device kernels need torch). The classic swapper runs on the host
    kernels only: ``auto`` picks them for it, ``gpu`` refuses it."""
    if batch < 1:
        raise InputError(f"--batch {batch} | expected >= 1")
    if path not in PATH_KERNELS:
        raise InputError(f"--path {path} | unknown; expected one of: {', '.join(PATH_KERNELS)}")
    if path == "gpu" and pipeline.swapper == "classic":
        raise InputError("--path gpu | the classic swapper runs on the CPU path only; expected a "
                         "neural --swapper (or --path cpu)")
    kernels = "host" if path == "auto" and pipeline.swapper == "classic" else PATH_KERNELS[path]
    settings = dataclasses.replace(pipeline, kernels=kernels, gen_batch=batch,
                                   precision=precision)
    settings.check()
    parse_engine_spec(settings.engine)  # an unknown engine or stage: refused before Ray starts
    if kernels == "device" or (kernels == "auto" and device_kind(settings.device) == "cuda"):
        from ..pipeline.device import require_torch
        require_torch()
    from ..pipeline.video.loop import VideoConfig
    return settings, VideoConfig(batch=batch, preset=preset, max_pixels=limit)


def run_batch_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .runner import BatchConfig, run_batch

    _check(args)
    limit = max_pixels(args)
    read_image(args.source, role="source", max_pixels=limit)  # fail before starting a cluster
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_job(args.inputs, out, args.segment_seconds)
    pipeline = PipelineConfig(swapper=args.swapper, engine=args.engine,
                              device=args.device or ("cuda" if args.gpus_per_worker > 0 else "cpu"),
                              det_size=args.det_size, allow_synthetic=args.allow_synthetic,
                              **post_settings(args))
    pipeline, video = path_settings(pipeline, args.path, args.batch, args.precision, args.preset,
                                    limit)
    config = BatchConfig(source=args.source, pipeline=pipeline, address=args.address,
                         workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                         gpus_per_worker=args.gpus_per_worker, retries=args.retries, crf=args.crf,
                         ray_init={"num_cpus": args.num_cpus} if args.num_cpus and not args.address else {},
                         video=video)
    todo = [p for p in plans if p.status == "todo"]
    skipped = sum(p.status == "skipped" for p in plans)
    print(f"{len(plans)} inputs: {len(todo)} to do, {skipped} already finished, "
          f"{sum(p.status == 'failed' for p in plans)} unreadable")
    frames = sum(i.frames for p in todo for i in p.items if i.kind != "stitch")
    bar = tqdm(total=frames, unit="frame", disable=args.no_progress, desc="batch", dynamic_ncols=True)
    failed = 0

    def on_event(event: str, item, result: dict) -> None:
        nonlocal failed
        if event == "done" and item.kind != "stitch":
            bar.update(result.get("frames", 0))
        elif event in ("failed", "dropped") and item.kind != "stitch":
            bar.update(item.frames)
        failed += event == "failed"
        bar.set_postfix(failed=failed, refresh=False)

    try:
        report = run_batch(config, plans, on_event)
    finally:
        bar.close()
    report.settings["segment_seconds"] = args.segment_seconds
    js, md = report.write(args.report or out / "batch_report.json")
    s = report.to_dict()["summary"]
    print(f"done {s['done']}, skipped {s['skipped']}, failed {s['failed']}; {s['frames']} frames "
          f"in {s['wall_s']:.1f} s ({s['fps']:.1f} frames/s); report: {js} and {md}")
    for item in report.items:
        if item.status == "failed":
            print(f"  failed {item.id}: {item.error}")
    return 1 if s["failed"] else 0
