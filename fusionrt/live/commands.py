"""``fusionrt live``: swap the source face into a camera, a stream or a paced file, frame by
frame, with bounded latency (``runner.run_live``), and optionally write the run's ``--stats``.

One path for every input and device: ``plan_stages`` → ``FaceSwapper`` (batch 1: the device
kernels on CUDA, the host kernels on the CPU or with ``--baseline``) → ``LiveStage``. The input
is opened before any model loads, so a missing camera, an unreachable stream or a bad file is one
line and nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import re
import threading
import time
from typing import Any

from ..errors import InputError
from ..pipeline.image_io import MAX_PIXELS, read_image
from ..pipeline.plan import FACEFUSION_ENGINE, device_kind, engine_help
from ..pipeline.options import add_post_args, post_settings
from ..pipeline.settings import KERNELS, PRECISIONS, SWAPPER_CHOICES, PipelineConfig
from ..pipeline.select import MODES
from ..pipeline.swapper import FaceSwapper
from .runner import LiveConfig, run_live
from .sink import check_output, open_sink
from .source import Source
from .stage import LiveStage
from .stats import check_stats_path, write_stats

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "live", help="swap the source face into a camera, stream or paced file, live",
        description="Swap the face in --source into every frame of --input and send the result "
                    "to --output with bounded latency: when the swap is late the oldest waiting "
                    "frame is dropped (counted), never queued. Ctrl-C stops and flushes.")
    p.add_argument("--source", "-s", required=True, help="image with the face to put in")
    p.add_argument("--input", "-i", required=True,
                   help="camera number (0), /dev/videoN, rtsp://, udp://, rtmp://, srt:// or a "
                        "video file")
    p.add_argument("--output", "-o", default="window",
                   help="window, null (discard), vcam (virtual camera, needs pyvirtualcam), "
                        "v4l2:/dev/videoN, udp://HOST:PORT, rtmp://…, srt://… or a file "
                        "(.mp4 .mkv .mov .ts .flv)")
    p.add_argument("--realtime", action="store_true",
                   help="release a file's frames at its frame rate (or --input-fps), as a "
                        "camera would; without it a file is read as fast as it decodes, "
                        "and no frame is dropped")
    p.add_argument("--stats", metavar="FILE", help="write the run's figures as JSON")
    p.add_argument("--input-fps", type=float, metavar="FPS",
                   help="camera mode's frame rate, or the rate --realtime paces a file at")
    p.add_argument("--input-size", metavar="WxH", help="camera mode's frame size")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--frames", type=int, metavar="N", help="stop after N captured frames")
    p.add_argument("--swapper", default="auto", choices=SWAPPER_CHOICES,
                   help="auto = first neural swapper with real weights installed, else classic")
    p.add_argument("--engine", default="default", help=engine_help())
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--kernels", default="auto", choices=KERNELS,
                   help="pre/post-processing: device (torch: frames stay on the GPU), host "
                        "(numpy/OpenCV); auto = device on CUDA")
    p.add_argument("--baseline", action="store_true",
                   help="the FaceFusion-style loop for comparison: host kernels, ONNX Runtime "
                        "sessions (CUDA on a GPU), no CUDA graphs, frame by frame")
    p.add_argument("--select", default="largest", choices=MODES, help="which faces to swap")
    p.add_argument("--reference", help="with --select reference: image of the person to replace")
    p.add_argument("--detect-every", type=int, default=1, metavar="N",
                   help="detect on every N-th frame, track landmarks in between (default 1)")
    p.add_argument("--det-size", type=int, default=640, help="detector input side")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="generator precision, on engines that support it (default fp32)")
    p.add_argument("--color-transfer", action="store_true",
                   help="match the swapped face's colours to the frame")
    p.add_argument("--allow-synthetic", action="store_true",
                   help="allow random-weight synthetic models (tests and speed work only)")
    p.add_argument("--preset", default="ultrafast", help="x264 preset of encoded outputs")
    p.add_argument("--crf", type=int, default=23, help="x264 quality of encoded outputs")
    p.add_argument("--queue", type=int, default=1, metavar="N",
                   help="frames waiting for the swap before the oldest is dropped (default 1)")
    p.add_argument("--open-timeout", type=float, default=5.0, metavar="S",
                   help="seconds a camera or stream may take to open or send a frame")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                   help=f"refuse frames larger than N pixels (default {MAX_PIXELS:,}; 0 = none)")
    p.add_argument("--no-frame-graph", action="store_true",
                   help="on CUDA, run the frame stage by stage instead of as one CUDA graph "
                        "(the graph needs --select largest and --detect-every 1)")
    p.add_argument("--explain", action="store_true",
                   help="print which model/engine ran each stage and ms per stage")
    add_post_args(p)
    p.set_defaults(func=run_live_command)


def settings_from_args(args: argparse.Namespace) -> PipelineConfig:
    """``fusionrt live`` arguments → pipeline settings: batch 1 (``gen_batch=1``: a lone face
    is never padded to a larger generator batch); ``--baseline``: the FaceFusion-style loop."""
    if args.detect_every < 1:
        raise InputError(f"--detect-every | got {args.detect_every}; expected >= 1")
    kernels, engine, graphs = args.kernels, args.engine, True
    if args.baseline:
        if args.engine != "default" or args.kernels != "auto":
            raise InputError("--baseline | sets the kernels and engines itself; expected "
                             "--engine and --kernels left at their defaults")
        cuda = device_kind(args.device) == "cuda"
        kernels, engine, graphs = "host", FACEFUSION_ENGINE if cuda else "default", False
    frame_graph = (device_kind(args.device) == "cuda" and not args.baseline
                   and not args.no_frame_graph and args.kernels != "host")
    return PipelineConfig(
        swapper=args.swapper, engine=engine, device=args.device, kernels=kernels,
        select=args.select, det_size=args.det_size, color_transfer=args.color_transfer,
        allow_synthetic=args.allow_synthetic, precision=args.precision, cuda_graphs=graphs,
        detect_every=args.detect_every, gen_batch=1, frame_graph=frame_graph,
        **post_settings(args))


def open_source(args: argparse.Namespace) -> Source:
    """The ``--input`` as a ``Source`` (raises ``InputError`` in one line)."""
    if args.input_size and not re.fullmatch(r"\d+x\d+", args.input_size):
        raise InputError(f"--input-size | got '{args.input_size}'; expected WxH, e.g. 1280x720")
    if args.input_fps is not None and args.input_fps <= 0:
        raise InputError(f"--input-fps | got {args.input_fps}; expected > 0")
    limit = args.max_pixels if args.max_pixels and args.max_pixels > 0 else None
    return Source(args.input, realtime=args.realtime, fps=args.input_fps, size=args.input_size,
                  open_timeout_s=args.open_timeout, max_pixels=limit)


def live_config(args: argparse.Namespace) -> LiveConfig:
    for flag, v in (("--duration", args.duration), ("--frames", args.frames)):
        if v is not None and v <= 0:
            raise InputError(f"{flag} | got {v}; expected > 0")
    if args.queue < 1:
        raise InputError(f"--queue | got {args.queue}; expected >= 1")
    return LiveConfig(queue=args.queue, duration_s=args.duration, max_frames=args.frames)


def run_session(swapper: FaceSwapper, source: Source, args: argparse.Namespace,
                stop: threading.Event | None = None) -> dict[str, Any]:
    """One live run of an open swapper (source set) on an open source, into ``--output``;
    writes ``--stats`` and returns the stats document. The sink is flushed on every clean stop
    (end of input, ``stop``, Ctrl-C, SIGTERM) and removed on a failure."""
    stage = LiveStage(swapper)
    sink = open_sink(args.output, source.width, source.height, source.fps, source.time_base,
                     stage.frame_format, preset=args.preset, crf=args.crf,
                     timeout_s=args.open_timeout)
    try:
        stats = run_live(source, stage, sink, live_config(args), stop)
    except BaseException:
        sink.close(ok=False)
        raise
    sink.close(ok=True)
    doc = stats.report(
        mode="baseline FaceFusion-style (host kernels, per-frame engines, no CUDA graphs)"
        if args.baseline else f"fusionrt live, batch 1, {swapper.plan.kernels} kernels",
        swapper=swapper.swapper_name, synthetic=swapper.synthetic, device=swapper.plan.device,
        kernels=swapper.plan.kernels, engines=swapper.describe(),
        input={"url": source.spec.url, "kind": source.spec.kind, "realtime": source.realtime,
               "fps": float(source.fps), "file_fps": float(source.own_fps)},
        output=args.output, sink=getattr(sink, "name", ""),
        settings={"detect_every": args.detect_every, "precision": args.precision,
                  "queue": args.queue, "preset": args.preset, "crf": args.crf,
                  "det_size": args.det_size, "select": args.select,
                  "frame_graph": swapper.plan.frame_graph,
                  "frame_graph_why": swapper.plan.frame_graph_why,
                  "frame_graph_captured": _captured(swapper)})
    if args.stats:
        write_stats(args.stats, doc)
    return doc


def _captured(swapper: FaceSwapper) -> bool | None:
    """Whether every frame graph the run used was captured (None: no frame graph ran)."""
    captured = getattr(swapper.kernels, "frame_graph_captured", None)
    return captured() if captured is not None else None


def run_live_command(args: argparse.Namespace) -> int:
    if args.select == "reference" and not args.reference:
        raise InputError("selection 'reference' | needs --reference IMAGE")
    check_output(args.output, args.input)
    check_stats_path(args.stats)
    settings = settings_from_args(args)
    live_config(args)
    source_img = read_image(args.source, role="source")
    reference = read_image(args.reference, role="reference") if args.reference else None
    source = open_source(args)  # before any model loads: a bad input writes nothing
    try:
        t0 = time.perf_counter()
        with FaceSwapper.open(settings, source=(source_img, args.source),
                              reference=None if reference is None
                              else (reference, args.reference)) as swapper:
            setup_s = time.perf_counter() - t0
            doc = run_session(swapper, source, args)
            _report(swapper, args, doc, setup_s)
    finally:
        source.close()
    return 0


def _report(swapper: FaceSwapper, args: argparse.Namespace, doc: dict, setup_s: float) -> None:
    s = doc["summary"]
    if swapper.synthetic:
        print("WARNING: synthetic (random-weight) model used: the output is garbage, "
              "for tests and speed work only")
    gpu = f", GPU p99 {s['gpu_p99_ms']} ms" if s["gpu_p99_ms"] is not None else ""
    wrote = f"; wrote {args.output}" if args.output not in ("window", "null") else ""
    print(f"live: {swapper.swapper_name} on {swapper.plan.device}; {s['frames']} frames at "
          f"{s['fps']:.1f} FPS (target {s['fps_target']:g}), {s['dropped']} dropped, latency "
          f"p50 {s['p50_ms']} / p99 {s['p99_ms']} ms{gpu}; stopped by {s['stopped_by']}{wrote}")
    if args.stats:
        print(f"stats: {args.stats}")
    if args.explain:
        for stage, what in swapper.describe().items():
            print(f"  {stage:<12} {what}")
        print(f"  {'setup':<12} {setup_s * 1000:.1f} ms (model load + source face)")
        for stage, v in doc["stage_ms"].items():
            print(f"  {stage:<12} {v:.2f} ms/frame")
