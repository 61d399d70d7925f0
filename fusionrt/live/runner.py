"""The live loop: capture thread → compute (caller's thread) → output thread, with bounded
latency.

Between the threads sit two small slots (``DropOldest``). When a new frame arrives and the
slot is full, the OLDEST waiting frame is dropped and counted: a late compute (or output) never
builds a queue, so latency stays bounded by the slot sizes, and the newest frame is always the
next one shown. A file read as fast as it decodes (no ``--realtime``) is not live: its slots
block instead, and every frame is kept.

Stopping: ``stop`` (an event: the caller, a closed window) ends capture; frames already
computed are written and the sink is flushed by the caller. Ctrl-C / SIGTERM in the caller's
thread (the CLI raises SIGTERM as a KeyboardInterrupt) stop the same way; a second one during
the flush aborts. A failure in any thread aborts every thread and is raised (nothing is kept).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..pipeline.video.io import DONE, POLL_S
from ..pipeline.video.threads import Failure, join_all, spawn
from .stats import LiveStats

log = logging.getLogger(__name__)


@dataclass
class LiveConfig:
    """How deep the slots are and when to stop.

    ``queue``: frames waiting for compute (1: always the newest). ``out_queue``: computed frames
    waiting for the output. ``lossless``: block instead of dropping (None: when the source is not
    live). ``prime_frames``: the first frame computed this often before the clock starts (first
    calls allocate and autotune). ``switch_interval_s``: the GIL hand-over interval during the
    run (None: leave it); the default 5 ms would let a thread wait that long for the GIL at every
    hand-over, i.e. up to a third of a 60 FPS frame.
    """

    queue: int = 1
    out_queue: int = 2
    lossless: bool | None = None
    duration_s: float | None = None
    max_frames: int | None = None
    prime_frames: int = 3
    switch_interval_s: float | None = 0.0005

    def check(self) -> None:
        if self.queue < 1 or self.out_queue < 1 or self.prime_frames < 0:
            raise ValueError(f"queue {self.queue}, out_queue {self.out_queue}, prime_frames "
                             f"{self.prime_frames} | expected >= 1, >= 1, >= 0")


class DropOldest:
    """A bounded slot between two threads: ``put`` on a full slot drops the oldest item
    (counted in ``dropped``), or with ``lossless`` waits for room."""

    def __init__(self, size: int, lossless: bool = False):
        self.size, self.lossless = size, lossless
        self.items: deque = deque()
        self.dropped = 0
        self.closed = False
        self.cond = threading.Condition()

    def put(self, item: Any, abort: threading.Event) -> bool:
        """False when ``abort`` was set while waiting for room (lossless)."""
        with self.cond:
            if self.lossless:
                while len(self.items) >= self.size:
                    if abort.is_set():
                        return False
                    self.cond.wait(POLL_S)
            elif len(self.items) >= self.size:
                self.items.popleft()
                self.dropped += 1
            self.items.append(item)
            self.cond.notify_all()
        return True

    def get(self, abort: threading.Event) -> Any:
        """The oldest item; ``DONE`` once closed and empty, or at once on ``abort``."""
        with self.cond:
            while not self.items or abort.is_set():
                if self.closed or abort.is_set():
                    return DONE
                self.cond.wait(POLL_S)
            item = self.items.popleft()
            self.cond.notify_all()
            return item

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def run_live(source: Any, stage: Any, sink: Any, config: LiveConfig | None = None,
             stop: threading.Event | None = None) -> LiveStats:
    """Run ``source`` through ``stage`` into ``sink`` until the input ends, ``stop`` is set,
    the duration/frame limit is reached, the viewer quits or Ctrl-C/SIGTERM arrives. The caller
    owns (and closes) the source and the sink.

    Args:
        source: ``source.Source`` (or alike: ``width``, ``height``, ``fps``, ``live``,
            ``realtime``, ``error``, ``first_frame(fmt)``, ``frames(halt, fmt)``).
        stage: ``stage.LiveStage`` (or alike: ``frame_format``, ``warmup(h, w)``,
            ``upload``/``compute``/``download``; optional ``gpu_ms``, ``reset_timing``,
            ``stage_ms``).
        sink: ``sink.Sink``.

    Returns:
        What was measured (``LiveStats``); ``stopped_by`` says why it ended.

    Raises:
        Whatever a thread raised first (after every thread has ended).
    """
    cfg = config or LiveConfig()
    cfg.check()
    stop = stop or threading.Event()
    abort, halt = threading.Event(), threading.Event()  # everyone out now; capture out
    failure = Failure(abort)
    stats = LiveStats(width=source.width, height=source.height, fps_target=float(source.fps))
    lossless = (not source.live) if cfg.lossless is None else cfg.lossless
    fmt = stage.frame_format
    stage.warmup(source.height, source.width)
    _prime(stage, source.first_frame(fmt), cfg.prime_frames)
    if hasattr(stage, "reset_timing"):
        stage.reset_timing()
    in_q, out_q = DropOldest(cfg.queue, lossless), DropOldest(cfg.out_queue, lossless)
    gpu_ms = getattr(stage, "gpu_ms", None)
    marks: dict[str, float] = {}

    def why(reason: str) -> None:
        if stats.stopped_by == "end of input":  # the first reason stands
            stats.stopped_by = reason

    def capture() -> None:
        try:
            for frame, pts, t_cap in source.frames(halt, fmt):
                if stop.is_set() or abort.is_set():
                    why("stop")
                    return
                marks.setdefault("first", t_cap)
                if cfg.duration_s is not None and t_cap - marks["first"] >= cfg.duration_s:
                    return why(f"duration {cfg.duration_s:g} s")
                if cfg.max_frames is not None and stats.captured >= cfg.max_frames:
                    return why(f"{cfg.max_frames} frames")
                if source.realtime:
                    stats.late_ms.append((time.perf_counter() - t_cap) * 1e3)
                if not in_q.put((stage.upload([frame]), pts, t_cap), abort):
                    return
                stats.captured += 1
            if getattr(source, "error", None):
                why(f"input error: {source.error}")
        finally:
            in_q.close()

    def output() -> None:
        while (item := out_q.get(abort)) is not DONE:
            handle, pts, t_cap = item
            frames = stage.download(handle)
            ms = gpu_ms(handle) if gpu_ms is not None else None
            more = sink.write(frames[0], pts)
            marks["last"] = t = time.perf_counter()
            stats.latency_ms.append((t - t_cap) * 1e3)
            stats.frames += 1
            if ms is not None:
                stats.gpu_ms.append(ms)
            if not more:
                why("viewer")
                stop.set()

    threads = [spawn("fusionrt-live-capture", capture, failure),
               spawn("fusionrt-live-output", output, failure)]
    interval = sys.getswitchinterval()
    if cfg.switch_interval_s is not None:
        sys.setswitchinterval(cfg.switch_interval_s)
    try:
        for t in threads:
            t.start()
        while (item := in_q.get(abort)) is not DONE:
            handle, pts, t_cap = item
            t0 = time.perf_counter()
            out, counts = stage.compute(handle)
            stats.compute_ms.append((time.perf_counter() - t0) * 1e3)
            stats.faces += sum(int(n) for n in counts if n is not None)
            if not out_q.put((out, pts, t_cap), abort):
                break
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP as the CLI raises them
        signum = getattr(e, "signum", signal.SIGINT)
        why(signal.Signals(signum).name)
        log.info("stopping (%s): writing the frames computed so far", stats.stopped_by)
    except BaseException as e:  # noqa: BLE001 - recorded, raised below as the first error
        failure(e)
    finally:
        stop.set()
        halt.set()
        out_q.close()
        try:
            join_all(threads, abort)  # a second Ctrl-C here aborts the flush
        finally:
            sys.setswitchinterval(interval)
    if failure.error is not None:
        raise failure.error
    stats.dropped_compute, stats.dropped_output = in_q.dropped, out_q.dropped
    if "first" in marks and "last" in marks:
        stats.seconds = marks["last"] - marks["first"]
    if hasattr(stage, "stage_ms"):
        stats.stage_ms = dict(stage.stage_ms())
    return stats


def _prime(stage: Any, frame: Any, times: int) -> None:
    """Compute the first frame ``times`` times, uncounted: the first calls allocate memory and
    pick kernels (not captured in a CUDA graph), which would otherwise be the worst latencies."""
    gpu_ms = getattr(stage, "gpu_ms", None)
    for _ in range(times):
        out, _ = stage.compute(stage.upload([frame]))
        stage.download(out)
        if gpu_ms is not None:
            gpu_ms(out)
