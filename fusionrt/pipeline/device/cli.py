"""``fusionrt swap --device cuda`` on a video: the handler the swap command hands video targets to.

The swap command has already checked the paths; this builds the GPU swapper, sets the source
(and reference) identity once, runs the overlapped loop and prints the summary.
"""

from __future__ import annotations

import argparse
import logging
import time

from ...errors import InputError
from ..image_io import read_image

log = logging.getLogger(__name__)


def gpu_config_from_args(args: argparse.Namespace):
    """``fusionrt swap`` arguments → ``GpuConfig`` (flags the command lacks take defaults)."""
    from .swapper import GpuConfig
    if getattr(args, "poisson", False):
        raise InputError("--poisson | runs on the CPU path only; drop it or use --device cpu")
    batch = int(getattr(args, "batch", 16))
    if batch < 1:
        raise InputError(f"--batch | got {batch}; expected >= 1")
    every = int(getattr(args, "detect_every", 1))
    if every < 1:
        raise InputError(f"--detect-every | got {every}; expected >= 1")
    return GpuConfig(
        swapper=args.swapper, engine=args.engine, device=args.device, select=args.select,
        similarity_threshold=args.similarity, color_transfer=args.color_transfer,
        allow_synthetic=args.allow_synthetic, detect_every=every, gen_batch=batch,
        precision=getattr(args, "precision", "fp32"))


def runner_config_from_args(args: argparse.Namespace, progress: bool = True):
    from ..video.loop import RunnerConfig
    return RunnerConfig(batch=int(getattr(args, "batch", 16)), crf=args.crf,
                        preset=getattr(args, "preset", "veryfast"),
                        encoders=int(getattr(args, "encoders", 0)), progress=progress)


def run_gpu_video(args: argparse.Namespace) -> int:
    """Swap the source face through the video ``args.target`` on the GPU path; 0 on success."""
    from ..video.loop import swap_video
    from .swapper import GpuSwapper

    config = gpu_config_from_args(args)
    runner = runner_config_from_args(args)
    source = read_image(args.source, role="source")
    reference = read_image(args.reference, role="reference") if args.reference else None
    t0 = time.perf_counter()
    with GpuSwapper(config) as swapper:
        swapper.set_source(source, args.source)
        if reference is not None:
            swapper.set_reference(reference, args.reference)
        setup_s = time.perf_counter() - t0
        swapper.timer.reset()
        stats = swap_video(args.target, args.output, swapper, runner)
        if swapper.synthetic:
            print("WARNING: synthetic (random-weight) model used: the output is garbage, "
                  "for tests and speed work only")
        print(f"swapper: {swapper.neural.name} on {config.device}; {stats.frames} frames at "
              f"{stats.fps:.1f} fps, {stats.faces} face(s) swapped; wrote {args.output}")
        if getattr(args, "explain", False):
            for stage, what in swapper.describe().items():
                print(f"  {stage:<12} {what}")
            print(f"  {'setup':<12} {setup_s * 1000:.1f} ms (model load + source face)")
            print(f"  {'encoders':<12} {stats.encoders} x {runner.codec} {runner.preset}, "
                  f"batch {runner.batch}")
            for stage, ms in stats.stage_ms.items():
                print(f"  {stage:<12} {ms:.2f} ms/frame (GPU)")
            for name, s in sorted(stats.waits_s.items()):
                print(f"  wait {name:<22} {s:.2f} s")
    return 0
