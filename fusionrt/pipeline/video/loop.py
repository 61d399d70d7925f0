"""The one video loop: decode → upload → compute → download → encode, each in its own
thread, joined by bounded queues, so FFmpeg's CPU work, the copies and the model work run at
once.

    decode (PyAV, FFmpeg threads)          -> frames queue   (batch · queue_batches frames)
    upload (stage.upload: BGR conversion, or pinned copy + H2D)
                                           -> batches queue  (queue_batches batches)
    compute (caller's thread: stage.compute)
                                           -> results queue  (queue_batches batches)
    download (stage.download: D2H, or nothing)
                                           -> encoder inboxes (encode.VideoSink)
    encoders x N, muxer (+ copied audio)   -> temp file, renamed on success

What runs in upload/compute/download is a ``FrameStage``: ``frame_fn.FrameFnStage`` (host frames,
``process_video``) or a device one (``pipeline.device.stage.DeviceFrameStage``). Compute stays in
the caller's thread, which keeps GPU contexts and Ctrl-C there.

Every queue is bounded, so memory stays flat on any length of video. A failure anywhere sets one
stop flag: every thread leaves its loop within ``io.POLL_S``, the temp file is removed and the
first error is raised (a corrupt input says where decoding broke). Frame order is kept: each
stage is one thread, and the muxer writes encoder segments in order.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from .encode import VideoSink, encoder_options, open_output
from .io import DONE, close_quietly, demux_decode, get, prepare_transcode, put
from .orient import upright
from .threads import Failure, join_all, spawn, timed_get, timed_put
from ..device.timing import Waits
from ..image_io import MAX_PIXELS

log = logging.getLogger(__name__)


class FrameStage(Protocol):
    """What the loop drives. Handles are opaque to the loop: a device stage packs its tensor
    and CUDA events into them, a host stage passes lists of arrays.

    Optional: ``stage_ms() -> dict[str, float]``, mean milliseconds per frame by stage over the
    frames this stage computed; the loop copies it into ``VideoStats.stage_ms``.
    """

    frame_format: str  # "bgr24": host (H, W, 3) frames; "yuv420p": packed (H * 3 / 2, W) planes

    def warmup(self, batch: int, height: int, width: int) -> None:
        """Before any thread starts (CUDA graphs are captured here)."""

    def upload(self, frames: list) -> Any:
        """Upload thread: decoded ``av.VideoFrame``s (or host arrays) → a batch handle."""

    def compute(self, batch: Any) -> tuple[Any, Sequence[int | None]]:
        """Caller's thread: → (handle, faces per frame; None where the stage does not count)."""

    def download(self, batch: Any) -> list[np.ndarray]:
        """Download thread: → host frames in ``frame_format``, one per frame of the batch."""


@dataclass
class VideoConfig:
    """How frames flow, and the encoder settings (the CPU and GPU paths mean the same)."""

    batch: int = 16             # frames per compute call
    queue_batches: int = 2      # batches in flight per queue
    encoders: int = 0           # parallel x264 segment encoders; 0 = auto (see auto_encoders)
    segment_frames: int = 60    # frames per segment when encoders > 1 (an IDR each)
    crf: int = 18
    preset: str = "veryfast"
    codec: str = "libx264"
    progress: bool = False      # tqdm bar
    # Python's GIL hand-over interval while the loop runs (None: leave it). The compute thread
    # gives up the GIL at every CUDA sync or engine call and, with decoder and encoder threads
    # busy, waits up to one interval (5 ms by default) to get it back, per release.
    switch_interval_s: float | None = 0.0005
    cores: int = 0              # CPU cores for decoder/encoder threads; 0 = this process's share
    #                             (the decoder then takes FFmpeg's own count, also affinity-based)
    max_pixels: int | None = MAX_PIXELS  # per frame, from the header (None: no limit)

    def check(self) -> None:
        if self.batch < 1 or self.queue_batches < 1 or self.encoders < 0 or self.segment_frames < 1:
            raise ValueError(f"batch {self.batch}, queue_batches {self.queue_batches}, encoders "
                             f"{self.encoders}, segment_frames {self.segment_frames} | expected "
                             ">= 1, >= 1, >= 0, >= 1")


@dataclass
class VideoStats:
    """What a run did. ``faces_total`` is None when the stage counts no faces (a frame_fn that
    returns frames only); ``faces`` is the same count as an int."""

    frames: int
    faces_total: int | None
    seconds: float
    fps: float
    encoders: int = 1
    stage_ms: dict[str, float] = field(default_factory=dict)   # ms per frame, per stage
    waits_s: dict[str, float] = field(default_factory=dict)    # seconds blocked, per thread
    high_water: dict[str, int] = field(default_factory=dict)   # largest queue sizes seen

    @property
    def faces(self) -> int:
        return self.faces_total or 0


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, containers), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_encoders(width: int, height: int, cores: int | None = None) -> int:
    """One x264 stream up to 720p; at 1080p and above one per 4 cores, at most 4 (x264's own
    threads fill each encoder's share; on the 16-core H100 host 4 streams gave ~1.6x one)."""
    cores = cores or available_cores()
    return 1 if width * height <= 1280 * 720 else max(1, min(4, cores // 4))


def run_batches(source: Iterable[tuple[Any, int]], stage: FrameStage,
                emit: Callable[[Any, int], bool], *, batch: int, queue_batches: int = 2,
                stop: threading.Event | None = None, failure: Failure | None = None,
                waits: Waits | None = None, on_frames: Callable[[int], None] | None = None
                ) -> tuple[int, int | None]:
    """The middle of the loop: frames ``(frame, pts)`` from ``source`` through ``stage`` in
    batches of ``batch`` (upload thread, compute here, download thread), results to
    ``emit(frame, pts)`` in order (False from ``emit`` means stop). The caller has run
    ``stage.warmup``. Returns (frames, faces; None when the stage counted none). Raises the
    first failure, after every thread it started has ended."""
    if batch < 1 or queue_batches < 1:
        raise ValueError(f"batch {batch}, queue_batches {queue_batches} | expected >= 1")
    stop = stop or threading.Event()
    failure = failure or Failure(stop)
    waits = waits or Waits()
    up_q: queue.Queue = queue.Queue(maxsize=queue_batches)
    down_q: queue.Queue = queue.Queue(maxsize=queue_batches)

    def upload() -> None:
        pending: list = []
        it: Iterator = iter(source)
        while not stop.is_set():
            t0 = time.perf_counter()
            item = next(it, DONE)
            waits.add("upload.source", time.perf_counter() - t0)
            if item is not DONE:
                pending.append(item)
            if pending and (len(pending) >= batch or item is DONE):
                handle = stage.upload([f for f, _ in pending])
                if not timed_put(up_q, (handle, [p for _, p in pending]), stop, waits, "upload"):
                    return
                pending = []
            if item is DONE:
                put(up_q, DONE, stop)
                return

    def download() -> None:
        while (item := timed_get(down_q, stop, waits, "download")) is not DONE:
            handle, pts = item
            frames = stage.download(handle)
            if len(frames) != len(pts):
                raise ValueError(f"stage | download gave {len(frames)} frames for a batch of "
                                 f"{len(pts)}; expected one per frame")
            for frame, p in zip(frames, pts):
                if not emit(frame, p):
                    return
            if on_frames is not None:
                on_frames(len(pts))

    threads = [spawn("fusionrt-upload", upload, failure),
               spawn("fusionrt-download", download, failure)]
    frames, faces = 0, None
    try:
        for t in threads:
            t.start()
        while (item := timed_get(up_q, stop, waits, "compute")) is not DONE:
            handle, pts = item
            out, counts = stage.compute(handle)
            frames += len(pts)
            for n in counts:
                if n is not None:
                    faces = (faces or 0) + int(n)
            if not timed_put(down_q, (out, pts), stop, waits, "compute"):
                break
        else:
            put(down_q, DONE, stop)
    except BaseException as e:  # noqa: BLE001 - recorded, then raised below as the first error
        failure(e)
    join_all(threads, stop)
    if failure.error is not None:
        raise failure.error
    return frames, faces


def transcode(src: str | os.PathLike, dst: str | os.PathLike, stage: FrameStage,
              config: VideoConfig | None = None) -> VideoStats:
    """``src`` through ``stage`` into ``dst``: audio copied, frame order and timestamps kept,
    ``dst`` written atomically (temp file beside it, renamed on success).

    Raises:
        InputError: ``src`` missing, not a video, or failing to decode (also mid-video).
        OutputError: ``dst`` not writable or the encoder fails.
        Whatever the stage raises, unchanged. No partial file is left on any error.
    """
    cfg = config or VideoConfig()
    cfg.check()
    src, dst = Path(src), Path(dst)
    inp, v_in, fmt, fps, width, height, tmp, rotation = prepare_transcode(src, dst,
                                                                         cfg.max_pixels)
    try:
        stats = _run(inp, v_in, fps, width, height, src, dst, tmp, fmt, stage, cfg, rotation)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        close_quietly(inp)
    # debug: the front end reports what it wrote (``fusionrt swap`` prints one "wrote" line)
    log.debug("wrote %s: %d frames in %.1f s (%.1f frames/s)", dst, stats.frames, stats.seconds,
              stats.fps)
    return stats


def _run(inp, v_in, fps, width, height, src: Path, dst: Path, tmp: Path, fmt: str,
         stage: FrameStage, cfg: VideoConfig, rotation: int = 0) -> VideoStats:
    a_in = inp.streams.audio[0] if inp.streams.audio else None
    cores = cfg.cores or available_cores()
    v_in.codec_context.thread_type = "AUTO"
    if cfg.cores:  # else FFmpeg's own count, which follows the CPU affinity too
        v_in.codec_context.thread_count = cfg.cores
    n_enc = cfg.encoders or auto_encoders(width, height, cores)
    options = encoder_options(cfg.crf, cfg.preset, n_enc)
    out, v_out, a_out = open_output(tmp, fmt, dst, width, height, fps, v_in.time_base, a_in,
                                    cfg.codec, options)
    stop, waits = threading.Event(), Waits()
    failure = Failure(stop)
    try:
        stage.warmup(cfg.batch, height, width)  # before any thread runs: CUDA graph capture
        sink = VideoSink(out, v_out, a_out, v_in.time_base, fps, cfg.codec, options, n_enc,
                         cfg.segment_frames, stop, failure, waits, cores=cores,
                         frame_format=stage.frame_format, dst=dst)
    except BaseException:
        close_quietly(out)
        raise
    frames_q: queue.Queue = queue.Queue(maxsize=cfg.batch * cfg.queue_batches)

    # a phone video's frames turned upright in the decode thread, as arrays in the stage's
    # format (both stages take arrays as well as av.VideoFrames); the output has no rotation
    turn = (lambda f: upright(f, rotation, stage.frame_format)) if rotation else None

    def decode() -> None:
        for kind, item, pts in demux_decode(inp, v_in, a_in, fps, src, convert=turn):
            if kind == "a":
                sink.put_audio(item)
            elif not timed_put(frames_q, (item, pts), stop, waits, "decode"):
                return
        put(frames_q, DONE, stop)

    def source() -> Iterator[tuple[Any, int]]:
        while (item := get(frames_q, stop)) is not DONE:
            yield item

    bar = _progress(cfg.progress, v_in.frames, dst.name)
    decoder = spawn("fusionrt-decode", decode, failure)
    interval = sys.getswitchinterval()
    if cfg.switch_interval_s is not None:
        sys.setswitchinterval(cfg.switch_interval_s)
    t0 = time.perf_counter()
    frames, faces = 0, None
    try:
        sink.start()
        decoder.start()
        frames, faces = run_batches(source(), stage, sink.put, batch=cfg.batch,
                                    queue_batches=cfg.queue_batches, stop=stop, failure=failure,
                                    waits=waits, on_frames=bar.update if bar is not None else None)
        sink.finish()
    except BaseException as e:  # noqa: BLE001 - recorded, then raised below as the first error
        failure(e)
    finally:
        join_all([decoder, *sink.threads], stop)
        sys.setswitchinterval(interval)
        if bar is not None:  # tqdm without a total (Matroska) has no truth value
            bar.close()
    if failure.error is not None:
        close_quietly(out)
        raise failure.error
    seconds = time.perf_counter() - t0
    stage_ms = getattr(stage, "stage_ms", None)
    return VideoStats(frames, faces, seconds, frames / seconds if seconds else 0.0, n_enc,
                      dict(stage_ms()) if stage_ms else {}, dict(waits.seconds),
                      dict(waits.high_water))


def _progress(enabled: bool, total: int, name: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total or None, unit="frame", desc=name)
