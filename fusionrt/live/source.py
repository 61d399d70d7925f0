"""Where live frames come from: a camera (``0``, ``/dev/videoN``), a network stream (``rtsp://``,
``udp://``, ``rtmp://``, ``srt://``, ``http(s)://``) or a file, all through PyAV.

A file with ``realtime=True`` is released frame by frame at its frame rate (or at ``fps``), so it
stands in for a camera: each frame's capture time is the instant it is due, and a decoder that
falls behind shows up as latency, never as a faster clock. Opening fails with one line
(``InputError``) before anything is written; a stream that breaks after frames came ends the run
cleanly (the frames so far are kept).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
from av.error import FFmpegError

from ..errors import InputError
from ..pipeline.image_io import MAX_PIXELS
from ..pipeline.video.io import IMAGE_FORMATS, why
from ..pipeline.video.orient import display_rotation, upright, upright_size

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp", "http", "https")
KINDS = ("camera", "stream", "file")
SLEEP_STEP_S = 0.05  # a paced wait checks the stop flag this often


@dataclass(frozen=True)
class InputSpec:
    """What ``--input`` names: kind, the URL/path FFmpeg opens, its input format (None: guess)."""

    kind: str
    url: str
    format: str | None = None


def parse_input(text: str) -> InputSpec:
    """``0`` / ``/dev/videoN`` / ``v4l2:/dev/videoN`` → camera; ``scheme://…`` → stream; else a
    file path."""
    text = str(text).strip()
    if text.startswith("v4l2:"):
        return InputSpec("camera", text[5:], "v4l2")
    if text.isdigit():
        if sys.platform.startswith("linux"):
            return InputSpec("camera", f"/dev/video{int(text)}", "v4l2")
        if sys.platform == "darwin":
            return InputSpec("camera", text, "avfoundation")
        raise InputError(f"camera '{text}' | camera numbers work on Linux and macOS; expected a "
                         "device path, a stream URL or a file")
    if text.startswith("/dev/video"):
        return InputSpec("camera", text, "v4l2")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in STREAM_SCHEMES:
        return InputSpec("stream", text)
    return InputSpec("file", text)


def _options(spec: InputSpec, fps: float | None, size: str | None) -> dict[str, str]:
    """Low-latency demuxer options (no input buffering); a camera mode from ``fps``/``size``."""
    opts: dict[str, str] = {}
    if spec.kind == "camera":
        if fps:
            opts["framerate"] = f"{fps:g}"
        if size:
            opts["video_size"] = size
    elif spec.kind == "stream":
        opts.update({"fflags": "nobuffer", "flags": "low_delay"})
        if spec.url.lower().startswith("rtsp"):
            opts["rtsp_transport"] = "tcp"  # UDP RTP loses packets on a busy host: torn frames
        if spec.url.lower().startswith("udp"):
            opts["overrun_nonfatal"] = "1"
    return opts


class Source:
    """An open input: ``width``, ``height`` (upright), ``fps`` (the rate frames are due at),
    ``time_base``; ``frames(stop, fmt)`` yields ``(frame, pts, capture_time)``.

    Args:
        text: what ``--input`` says.
        realtime: pace a file at ``fps`` (default: its own rate); cameras and streams pace
            themselves.
        fps: a camera's mode, or the rate a paced file is released at (its pts are rescaled, so
            the output plays at that rate too).
        size: a camera's mode, ``WxH``.
        open_timeout_s: how long opening and each read of a camera or stream may block.
        max_pixels: refuse larger frames (None: no limit).

    Raises:
        InputError: missing file or camera, unreachable stream, no video, odd or oversize frames.
    """

    def __init__(self, text: str, realtime: bool = False, fps: float | None = None,
                 size: str | None = None, open_timeout_s: float = 5.0,
                 max_pixels: int | None = MAX_PIXELS):
        self.spec = spec = parse_input(text)
        self.realtime = realtime and spec.kind == "file"
        self.live = spec.kind != "file" or self.realtime  # frames come on a clock: may drop
        self.name = f"{spec.kind} '{spec.url}'"
        self.container = self._open(spec, fps, size, open_timeout_s)
        try:
            self._setup(fps, max_pixels)
        except BaseException:
            self.close()
            raise
        self.error: str | None = None  # why the input ended early, if it did
        self._first: tuple[Any, int] | None = None
        self._decoded = self._decode()

    def _open(self, spec: InputSpec, fps, size, timeout_s: float) -> Any:
        if spec.kind == "file":
            p = Path(spec.url)
            if not p.is_file():
                raise InputError(f"input '{p}' | file not found; expected a video file, a "
                                 "camera (0, /dev/videoN) or a stream URL")
        elif spec.kind == "camera" and spec.format == "v4l2" and not Path(spec.url).exists():
            raise InputError(f"camera '{spec.url}' | not found; expected a connected camera "
                             "(ls /dev/video*)")
        kw: dict[str, Any] = {"options": _options(spec, fps, size)}
        if spec.kind != "file":
            kw["timeout"] = (timeout_s, timeout_s)
        try:
            c = av.open(spec.url, "r", format=spec.format, **kw)
        except (FFmpegError, OSError, UnicodeDecodeError) as e:
            want = {"file": "a readable video file", "camera": "a working capture device",
                    "stream": "a reachable stream that is sending video"}[spec.kind]
            raise InputError(f"{spec.kind} '{spec.url}' | cannot be opened ({why(e)}); "
                             f"expected {want}") from None
        if c.format.name in IMAGE_FORMATS or not c.streams.video:
            what = "is an image" if c.format.name in IMAGE_FORMATS else "has no video stream"
            c.close()
            raise InputError(f"{spec.kind} '{spec.url}' | {what}; expected video")
        return c

    def _setup(self, fps: float | None, max_pixels: int | None) -> None:
        st = self.stream = self.container.streams.video[0]
        cc = st.codec_context
        # files: frame threads (throughput); live inputs: slice threads (no frames of delay)
        cc.thread_type = "AUTO" if self.spec.kind == "file" else "SLICE"
        if max_pixels is not None and cc.width * cc.height > max_pixels:
            raise InputError(f"{self.name} | frames of {cc.width}x{cc.height} are over the limit "
                             f"of {max_pixels} pixels; raise it with --max-pixels N")
        self.rotation = display_rotation(self.spec.url, st) if self.spec.kind == "file" else 0
        self.width, self.height = upright_size(cc.width, cc.height, self.rotation)
        if self.width % 2 or self.height % 2 or not self.width:
            raise InputError(f"{self.name} | frames of {self.width}x{self.height}; expected "
                             "even width and height (yuv420p)")
        own = st.average_rate or st.guessed_rate or st.base_rate
        if not own and not fps:
            raise InputError(f"{self.name} | has no frame rate; expected a constant-rate "
                             "video, or give --input-fps")
        self.own_fps = Fraction(own) if own else Fraction(fps).limit_denominator(1001)
        self.fps = Fraction(fps).limit_denominator(1001) if (fps and self.realtime) else \
            self.own_fps
        self.time_base = st.time_base or Fraction(1, 90_000)
        self._speed = self.own_fps / self.fps  # pts scale of a file paced at another rate

    def _decode(self) -> Iterator[tuple[Any, int]]:
        n = 0
        try:
            for frame in self.container.decode(self.stream):
                pts = frame.pts if frame.pts is not None else \
                    round(n / (self.own_fps * self.time_base))
                n += 1
                yield frame, pts
        except FFmpegError as e:
            if n == 0:
                raise InputError(f"{self.name} | no frame could be decoded ({why(e)}); "
                                 "expected a working video input") from None
            self.error = f"{self.name} | stopped after {n} frames ({why(e)})"
            log.warning("%s; ending the run", self.error)

    def first_frame(self, fmt: str = "yuv420p") -> Any:
        """The first decoded frame, upright (kept: ``frames`` yields it again). For warm-up.

        Raises:
            InputError: the input has no frame.
        """
        if self._first is None:
            item = next(self._decoded, None)
            if item is None:
                raise InputError(f"{self.name} | has no frames; expected video")
            self._first = item
        frame = self._first[0]
        return upright(frame, self.rotation, fmt) if self.rotation else frame

    def frames(self, stop: threading.Event, fmt: str = "yuv420p"
               ) -> Iterator[tuple[Any, int, float]]:
        """``(frame, pts, capture_time)`` until the input ends or ``stop`` is set. Frames are
        ``av.VideoFrame`` (or, for a rotated file, an upright array in ``fmt``); capture time is
        ``time.perf_counter()`` when the frame was due (paced file) or arrived."""
        t0 = pts0 = None
        pending = [self._first] if self._first is not None else []
        self._first = None
        items = iter(pending)
        for frame, pts in _chain(items, self._decoded):
            if stop.is_set():
                return
            if self._speed != 1:
                pts = round(pts * self._speed)
            if self.realtime:
                now = time.perf_counter()
                if t0 is None:
                    t0, pts0 = now, pts
                due = t0 + float((pts - pts0) * self.time_base)
                if not _sleep_until(due, stop):
                    return
                t_cap = due
            else:
                t_cap = time.perf_counter()
            if self.rotation:
                frame = upright(frame, self.rotation, fmt)
            yield frame, pts, t_cap

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - closing after the run; the run's result stands
            log.debug("closing %s failed", self.name, exc_info=True)


def _chain(*its: Iterator) -> Iterator:
    for it in its:
        yield from it


def _sleep_until(t: float, stop: threading.Event) -> bool:
    """Sleep until ``perf_counter() >= t``; False if ``stop`` was set meanwhile."""
    while (left := t - time.perf_counter()) > 0:
        if stop.wait(min(left, SLEEP_STEP_S)):
            return False
    return not stop.is_set()
