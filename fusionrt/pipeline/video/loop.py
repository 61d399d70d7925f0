"""The overlapped video loop: decode → upload → GPU batch → download → encode, each in its own
thread, joined by bounded queues, so FFmpeg's CPU work, the copies and the GPU run at once.

    decode (PyAV, FFmpeg threads)          -> frames queue   (batch · queue_batches frames)
    upload (pinned copy, H2D stream)       -> batches queue  (queue_batches batches)
    compute (caller's thread, compute stream: GpuSwapper.process)
                                           -> results queue  (queue_batches batches)
    download (D2H stream)                  -> encoder inboxes (encode.VideoSink)
    encoders x N, muxer (+ copied audio)   -> temp file, renamed on success

Every queue is bounded, so memory stays flat on any length of video. A failure anywhere sets one
stop flag: every thread leaves its loop within ``video.POLL_S``, the temp file is removed and
the first error is raised (a corrupt input says where decoding broke). Frame order is kept:
each stage is one thread, and the muxer writes encoder segments in order.
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
from typing import Any, Callable, Iterable, Iterator

from av.error import FFmpegError

from ...errors import OutputError
from .io import _DONE, _close_quietly, _get, _put, _why, demux_decode, prepare_transcode
from .encode import VideoSink, encoder_options, open_output
from ..device.frames import Transfer
from ..device.timing import Waits

log = logging.getLogger(__name__)


@dataclass
class RunnerConfig:
    """How frames flow; encoder settings mean what they mean on the CPU path."""

    batch: int = 16             # frames per GPU batch
    queue_batches: int = 2      # batches in flight per queue
    encoders: int = 0           # parallel x264 segment encoders; 0 = auto (see auto_encoders)
    segment_frames: int = 60    # frames per segment when encoders > 1 (an IDR each)
    crf: int = 18
    preset: str = "veryfast"
    codec: str = "libx264"
    progress: bool = False
    # Python's GIL hand-over interval while the loop runs (None: leave it). The compute thread
    # gives up the GIL at every CUDA sync or engine call and, with decoder and encoder threads
    # busy, waits up to one interval (5 ms by default) to get it back, per release.
    switch_interval_s: float | None = 0.0005
    cores: int = 0              # CPU cores for decoder/encoder threads; 0 = this process's share


@dataclass
class RunStats:
    frames: int
    faces: int
    seconds: float
    fps: float
    encoders: int = 1
    stage_ms: dict[str, float] = field(default_factory=dict)   # GPU ms per frame, per stage
    waits_s: dict[str, float] = field(default_factory=dict)    # seconds blocked, per thread
    high_water: dict[str, int] = field(default_factory=dict)   # largest queue sizes seen


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


class Failure:
    """The first error of any thread; recording it stops every stage."""

    def __init__(self, stop: threading.Event):
        self.stop, self.error = stop, None
        self._lock = threading.Lock()

    def __call__(self, e: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = e
        self.stop.set()


def _thread(name: str, work: Callable[[], None], failure: Failure) -> threading.Thread:
    def body() -> None:
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - handed to the caller, who re-raises it
            failure(e)
    return threading.Thread(target=body, name=name, daemon=True)


def _timed_get(q: queue.Queue, stop: threading.Event, waits: Waits, name: str) -> Any:
    t0 = time.perf_counter()
    item = _get(q, stop)
    waits.add(f"{name}.get", time.perf_counter() - t0)
    return item


def _timed_put(q: queue.Queue, item: Any, stop: threading.Event, waits: Waits, name: str) -> bool:
    t0 = time.perf_counter()
    ok = _put(q, item, stop)
    waits.add(f"{name}.put", time.perf_counter() - t0)
    waits.saw(name, q.qsize())
    return ok


def run_batches(source: Iterable[tuple[Any, int]], swapper: Any, emit: Callable[[Any, int], bool],
                *, fmt: str, height: int, width: int, batch: int, queue_batches: int = 2,
                stop: threading.Event | None = None, failure: Failure | None = None,
                waits: Waits | None = None, on_frames: Callable[[int], None] | None = None
                ) -> tuple[int, int]:
    """Frames ``(frame, pts)`` from ``source`` through ``swapper.process`` in batches, results
    to ``emit(frame, pts)`` in order. Returns (frames, faces). Raises the first failure."""
    if batch < 1 or queue_batches < 1:
        raise ValueError(f"batch {batch}, queue_batches {queue_batches} | expected >= 1")
    stop = stop or threading.Event()
    failure = failure or Failure(stop)
    waits = waits or Waits()
    dev = swapper.dev
    transfer = Transfer(dev)
    up_q: queue.Queue = queue.Queue(maxsize=queue_batches)
    down_q: queue.Queue = queue.Queue(maxsize=queue_batches)
    totals = {"frames": 0, "faces": 0}

    def upload() -> None:
        pending: list = []
        it: Iterator = iter(source)
        while not stop.is_set():
            t0 = time.perf_counter()
            item = next(it, _DONE)
            waits.add("upload.source", time.perf_counter() - t0)
            if item is not _DONE:
                pending.append(item)
            if pending and (len(pending) >= batch or item is _DONE):
                tensor, ready = transfer.upload([f for f, _ in pending], fmt)
                if not _timed_put(up_q, (tensor, ready, [p for _, p in pending]), stop, waits,
                                  "upload"):
                    return
                pending = []
            if item is _DONE:
                _put(up_q, _DONE, stop)
                return

    def download() -> None:
        while (item := _timed_get(down_q, stop, waits, "download")) is not _DONE:
            tensor, ready, pts = item
            host = transfer.download(tensor, ready)
            for i, p in enumerate(pts):
                if not emit(host[i], p):
                    return
            if on_frames is not None:
                on_frames(len(pts))

    if hasattr(swapper, "warmup"):  # CUDA graphs must be captured before other threads run
        swapper.warmup(batch, height, width)
    threads = [_thread("fusionrt-upload", upload, failure),
               _thread("fusionrt-download", download, failure)]
    for t in threads:
        t.start()
    try:
        while (item := _timed_get(up_q, stop, waits, "compute")) is not _DONE:
            tensor, ready, pts = item
            dev.wait(swapper.compute, ready)
            if swapper.compute is not None:
                tensor.record_stream(swapper.compute)  # allocated on the H2D stream
            counts = swapper.process(tensor, fmt, height, width)
            done = dev.record(swapper.compute)
            totals["frames"] += len(pts)
            totals["faces"] += sum(counts)
            if not _timed_put(down_q, (tensor, done, pts), stop, waits, "compute"):
                break
        else:
            _put(down_q, _DONE, stop)
    except BaseException as e:  # noqa: BLE001 - recorded, then raised below as the first error
        failure(e)
    for t in threads:
        t.join()
    if failure.error is not None:
        raise failure.error
    return totals["frames"], totals["faces"]


def swap_video(src: str | os.PathLike, dst: str | os.PathLike, swapper: Any,
               config: RunnerConfig | None = None) -> RunStats:
    """Swap faces through a whole video file with ``swapper`` (a ``GpuSwapper`` with its source
    set); audio is copied, frame order and timestamps kept, ``dst`` written atomically.

    Raises:
        InputError: ``src`` missing, not a video, or failing to decode (also mid-video).
        OutputError: ``dst`` not writable or the encoder fails. No partial file is left.
    """
    cfg = config or RunnerConfig()
    src, dst = Path(src), Path(dst)
    inp, v_in, fmt, fps, width, height, tmp = prepare_transcode(src, dst)
    try:
        stats = _run_file(inp, v_in, fps, width, height, src, dst, tmp, fmt, swapper, cfg)
        os.replace(tmp, dst)
        return stats
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _close_quietly(inp)


def _run_file(inp, v_in, fps, width, height, src: Path, dst: Path, tmp: Path, fmt: str,
              swapper: Any, cfg: RunnerConfig) -> RunStats:
    a_in = inp.streams.audio[0] if inp.streams.audio else None
    cores = cfg.cores or available_cores()
    v_in.codec_context.thread_type = "AUTO"
    v_in.codec_context.thread_count = cores
    n_enc = cfg.encoders or auto_encoders(width, height, cores)
    options = encoder_options(cfg.crf, cfg.preset, n_enc)
    try:
        out, v_out, a_out = open_output(str(tmp), fmt, width, height, fps, v_in.time_base, a_in,
                                        cfg.codec, options)
    except (FFmpegError, ValueError) as e:
        raise OutputError(f"output '{dst}' | cannot set up encoder '{cfg.codec}' ({_why(e)}); "
                          f"expected an encoder and audio codec that {fmt} supports") from None
    stop, waits = threading.Event(), Waits()
    failure = Failure(stop)
    sink = VideoSink(out, v_out, a_out, v_in.time_base, fps, cfg.codec, options, n_enc,
                     cfg.segment_frames, stop, failure, waits, cores=cores)
    frames_q: queue.Queue = queue.Queue(maxsize=cfg.batch * cfg.queue_batches)

    def decode() -> None:
        for kind, item, pts in demux_decode(inp, v_in, a_in, fps, src):
            if kind == "a":
                sink.put_audio(item)
            elif not _timed_put(frames_q, (item, pts), stop, waits, "decode"):
                return
        _put(frames_q, _DONE, stop)

    def source() -> Iterator[tuple[Any, int]]:
        while (item := _get(frames_q, stop)) is not _DONE:
            yield item

    bar = _progress(cfg.progress, v_in.frames, dst.name)
    decoder = _thread("fusionrt-decode", decode, failure)
    interval = sys.getswitchinterval()
    if cfg.switch_interval_s is not None:
        sys.setswitchinterval(cfg.switch_interval_s)
    t0 = time.perf_counter()
    try:
        sink.start()
        decoder.start()
        frames, faces = run_batches(source(), swapper, sink.put, fmt="yuv420p", height=height,
                                    width=width, batch=cfg.batch, queue_batches=cfg.queue_batches,
                                    stop=stop, failure=failure, waits=waits,
                                    on_frames=bar.update if bar else None)
        sink.finish()
    except BaseException as e:  # noqa: BLE001
        failure(e)
    finally:
        stop_all = failure.error is not None
        if stop_all:
            stop.set()
        decoder.join()
        sink.join()
        sys.setswitchinterval(interval)
        if bar:
            bar.close()
    if failure.error is not None:
        _close_quietly(out)
        raise failure.error
    seconds = time.perf_counter() - t0
    stage = swapper.timer.summary() if getattr(swapper, "timer", None) else {}
    return RunStats(frames, faces, seconds, frames / seconds if seconds else 0.0, n_enc,
                    {k: v / max(frames, 1) for k, v in stage.items()}, dict(waits.seconds),
                    dict(waits.high_water))


def _progress(enabled: bool, total: int, name: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total or None, unit="frame", desc=name)
