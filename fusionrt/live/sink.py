"""Where live frames go: ``window`` (OpenCV, only where a display exists), ``v4l2:/dev/videoN``
(a v4l2loopback device, raw yuv420p), ``udp://`` / ``srt://`` / ``tcp://`` (MPEG-TS),
``rtmp://`` (FLV), ``rtsp://`` (to a server), a file (``.mp4 .mkv .mov .ts .flv``), ``vcam``
(a virtual camera through the optional ``pyvirtualcam``), or ``null`` (nothing: measure the
swap alone).

Encoded outputs use x264 with ``tune=zerolatency`` (no lookahead, no B-frames, sliced threads),
so each frame's packets come out of the ``encode`` call that took it: a frame is "encoded" when
``write`` returns. A file is written to a temp file beside it and renamed by ``close(ok=True)``
(a clean stop included); a failed run leaves nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from av.error import FFmpegError

from ..errors import EngineError, OutputError
from ..pipeline.video.encode import to_video_frame
from ..pipeline.video.io import close_quietly, reserve_part, why

log = logging.getLogger(__name__)

FILE_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".ts": "mpegts",
                ".flv": "flv"}
NETWORK_FORMATS = {"udp": "mpegts", "srt": "mpegts", "tcp": "mpegts", "rtmp": "flv",
                   "rtmps": "flv", "rtsp": "rtsp"}
VCAM_HINT = "pip install 'fusionrt[live]' (or: pip install pyvirtualcam)"


def to_bgr(frame: np.ndarray, fmt: str) -> np.ndarray:
    """A host frame in the stage's format as BGR (for OpenCV windows and virtual cameras)."""
    if fmt == "yuv420p":  # packed (H * 3 / 2, W) planes: OpenCV's I420
        return cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)
    return frame


class Sink:
    """``write(frame, pts) -> bool`` (False: the viewer asked to stop), ``close(ok)``."""

    name = "null"

    def write(self, frame: np.ndarray, pts: int) -> bool:
        return True

    def close(self, ok: bool = True) -> None:
        """Flush and finish (``ok``) or drop what was written."""


class AvSink(Sink):
    """Frames encoded by PyAV into a container: a file, a network URL or a v4l2 device."""

    def __init__(self, target: str, fmt: str, codec: str, width: int, height: int,
                 fps: Fraction, time_base: Fraction, frame_format: str,
                 options: dict[str, str] | None = None, dst: Path | None = None,
                 timeout_s: float | None = None, name: str | None = None):
        self.name = name or target
        self.frame_format, self.time_base = frame_format, time_base
        self.tmp, self.dst = (Path(target), dst) if dst is not None else (None, None)
        kw = {"timeout": timeout_s} if timeout_s else {}
        try:
            self.out = av.open(target, "w", format=fmt, **kw)
        except (FFmpegError, OSError) as e:
            self._drop_tmp()
            raise OutputError(f"output '{self.name}' | cannot be opened ({why(e)}); expected a "
                              "writable file, device or reachable URL") from None
        try:
            self.stream = self.out.add_stream(codec, rate=fps, options=dict(options or {}))
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
            self.stream.codec_context.time_base = time_base
        except (FFmpegError, ValueError) as e:
            self._fail()
            raise OutputError(f"output '{self.name}' | cannot set up encoder '{codec}' "
                              f"({why(e)}); expected an FFmpeg build with it") from None
        self._last_pts: int | None = None

    def write(self, frame: np.ndarray, pts: int) -> bool:
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # a camera clock that repeats: keep the muxer's order
        self._last_pts = pts
        try:
            for packet in self.stream.encode(to_video_frame(frame, self.frame_format, pts,
                                                            self.time_base)):
                self.out.mux(packet)
        except (FFmpegError, OSError) as e:
            raise OutputError(f"output '{self.name}' | writing failed ({why(e)}); expected a "
                              "working encoder, free disk space or a listening receiver") from None
        return True

    def close(self, ok: bool = True) -> None:
        if not ok:
            self._fail()
            return
        try:
            for packet in self.stream.encode(None):
                self.out.mux(packet)
            self.out.close()
        except (FFmpegError, OSError) as e:
            self._fail()
            raise OutputError(f"output '{self.name}' | finishing failed ({why(e)})") from None
        if self.tmp is not None:
            os.replace(self.tmp, self.dst)

    def _fail(self) -> None:
        if hasattr(self, "out"):
            close_quietly(self.out)
        self._drop_tmp()

    def _drop_tmp(self) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


class WindowSink(Sink):
    """An OpenCV window; ``q`` or Esc stops the run. Made in the thread that writes to it."""

    name = "window"

    def __init__(self, frame_format: str, title: str = "fusionrt live"):
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                     or os.environ.get("WAYLAND_DISPLAY")):
            raise OutputError("output 'window' | no display here ($DISPLAY is not set); expected "
                              "a desktop session, or --output FILE | v4l2:/dev/videoN | "
                              "udp://HOST:PORT | vcam | null")
        self.frame_format, self.title, self._open = frame_format, title, False

    def write(self, frame: np.ndarray, pts: int) -> bool:
        try:
            if not self._open:
                cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
                self._open = True
            cv2.imshow(self.title, to_bgr(frame, self.frame_format))
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as e:
            raise OutputError(f"output 'window' | OpenCV cannot show a window ({e.msg}); "
                              "expected an OpenCV build with GUI support (opencv-python, not "
                              "-headless)") from None
        return key not in (27, ord("q"))

    def close(self, ok: bool = True) -> None:
        if self._open:
            try:
                cv2.destroyWindow(self.title)
            except cv2.error:
                pass


class VirtualCameraSink(Sink):
    """A virtual webcam other apps can open (pyvirtualcam: v4l2loopback, OBS, Unity Capture)."""

    name = "vcam"

    def __init__(self, width: int, height: int, fps: Fraction, frame_format: str,
                 device: str | None = None):
        try:
            import pyvirtualcam
        except ImportError:
            raise EngineError(f"output 'vcam' | needs the optional package pyvirtualcam: "
                              f"{VCAM_HINT}") from None
        try:
            self.cam = pyvirtualcam.Camera(width, height, float(fps), device=device,
                                           fmt=pyvirtualcam.PixelFormat.BGR)
        except (RuntimeError, ValueError) as e:
            raise OutputError(f"output 'vcam' | no virtual camera ({e}); expected v4l2loopback "
                              "(Linux) or OBS's virtual camera (Windows, macOS)") from None
        self.frame_format = frame_format

    def write(self, frame: np.ndarray, pts: int) -> bool:
        self.cam.send(to_bgr(frame, self.frame_format))
        return True

    def close(self, ok: bool = True) -> None:
        self.cam.close()


def x264_options(preset: str, crf: int, fps: Fraction) -> dict[str, str]:
    """Low-latency x264: zerolatency (no lookahead or B-frames: a packet per frame at once), a
    keyframe every 2 s (a receiver that joins late waits at most that)."""
    return {"preset": preset, "tune": "zerolatency", "crf": str(crf),
            "g": str(max(1, round(2 * float(fps))))}


def check_output(text: str, input_path: str | None = None) -> None:
    """Fail before any model loads when ``--output`` cannot be what it says (no file made)."""
    kind, target = _kind(text)
    if kind == "file":
        p = Path(target)
        if p.suffix.lower() not in FILE_FORMATS:
            raise OutputError(f"output '{p}' | unknown extension '{p.suffix}'; expected one of "
                              f"{', '.join(FILE_FORMATS)}, or window, null, vcam, "
                              "v4l2:/dev/videoN, udp://, rtmp://, srt://")
        if p.is_dir() or not (p.parent if str(p.parent) else Path(".")).is_dir():
            raise OutputError(f"output '{p}' | is a folder or its folder does not exist; "
                              "expected a file path in an existing folder")
        if input_path and Path(input_path).exists() and p.resolve() == Path(input_path).resolve():
            raise OutputError(f"output '{p}' | same file as the input; choose another path")
    elif kind == "v4l2" and not Path(target).exists():
        raise OutputError(f"output 'v4l2:{target}' | device not found; expected a v4l2loopback "
                          "device (sudo modprobe v4l2loopback)")


def _kind(text: str) -> tuple[str, str]:
    if text in ("window", "null", "vcam"):
        return text, text
    if text.startswith("vcam:"):
        return "vcam", text[5:]
    if text.startswith("v4l2:"):
        return "v4l2", text[5:]
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in NETWORK_FORMATS:
        return "network", text
    return "file", text


def open_sink(text: str, width: int, height: int, fps: Fraction, time_base: Fraction,
              frame_format: str, preset: str = "ultrafast", crf: int = 23,
              timeout_s: float = 5.0) -> Sink:
    """The sink ``--output`` names, ready for frames of ``width`` x ``height`` in
    ``frame_format`` (``yuv420p`` packed planes or ``bgr24``) stamped in ``time_base``.

    Raises:
        OutputError: the output cannot be opened or written. EngineError: ``vcam`` without
        pyvirtualcam.
    """
    check_output(text)
    kind, target = _kind(text)
    if kind == "null":
        return Sink()
    if kind == "window":
        return WindowSink(frame_format)
    if kind == "vcam":
        return VirtualCameraSink(width, height, fps, frame_format, target if target != "vcam"
                                 else None)
    if kind == "v4l2":  # raw frames: v4l2loopback takes yuv420p as it is
        return AvSink(target, "v4l2", "rawvideo", width, height, fps, time_base, frame_format,
                      name=text)
    opts = x264_options(preset, crf, fps)
    if kind == "network":
        fmt = NETWORK_FORMATS[target.split("://", 1)[0].lower()]
        return AvSink(target, fmt, "libx264", width, height, fps, time_base, frame_format,
                      opts, timeout_s=timeout_s)
    dst = Path(target)
    tmp = reserve_part(dst)
    return AvSink(str(tmp), FILE_FORMATS[dst.suffix.lower()], "libx264", width, height, fps,
                  time_base, frame_format, opts, dst=dst, name=str(dst))


def describe(sink: Any) -> str:
    return getattr(sink, "name", type(sink).__name__)
