"""Encoding the video loop's frames with one or several x264 encoders at once, muxed in order
with the audio.

Frames come in the stage's ``frame_format``: ``yuv420p`` planes go to x264 as they are, ``bgr24``
frames are converted to yuv420p by the encoder's reformatter (swscale, in the encoder thread).

Why segments: one libx264 stream tops out below the GPU path's rate (measured on the H100 host,
16 cores: ~148 FPS at 1080p ``veryfast``, ~236 FPS over 4 parallel streams). The output is cut
into segments of ``segment_frames`` frames; segment k goes to encoder k mod N, each segment is
encoded by a fresh codec context (so it starts with an IDR frame and needs nothing from the one
before), and one muxer thread writes the segments' packets in order into the same stream: the
lossless concat of same-codec segments, done in memory as the packets come, without temporary
files or a second pass. With more than one encoder B-frames are off, so every packet has
dts == pts and the concatenated stream is monotonic across segment joins. Audio packets are
copied (never re-encoded) and interleaved by time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.codec import Codec
from av.error import FFmpegError

from ...errors import OutputError
from .io import DONE, close_quietly, copy_stream, get, put, why
from ..device.timing import Waits

log = logging.getLogger(__name__)

_SEGMENT_END = "segment-end"


def to_video_frame(arr: np.ndarray, fmt: str, pts: int, time_base: Fraction) -> Any:
    """A host frame (``bgr24`` (H, W, 3) or packed ``yuv420p`` (H * 3 / 2, W)) as an
    ``av.VideoFrame`` stamped with its input pts."""
    vf = av.VideoFrame.from_ndarray(arr, format=fmt)
    vf.pts, vf.time_base = pts, time_base
    return vf


def encoder_options(crf: int, preset: str, encoders: int) -> dict[str, str]:
    """x264 options shared by the segment encoders and the output stream (same SPS/PPS)."""
    opts = {"crf": str(crf), "preset": preset}
    if encoders > 1:
        opts["x264-params"] = "bframes=0"
    return opts


class SegmentEncoder(threading.Thread):
    """Encodes the segments it is given, in order, into ``self.out`` (packets, then a
    segment-end marker per segment; ``DONE`` at the end)."""

    def __init__(self, index: int, codec: str, width: int, height: int, fps: Fraction,
                 time_base: Fraction, options: dict[str, str], threads: int,
                 stop: threading.Event, fail, waits: Waits, depth: int,
                 frame_format: str = "yuv420p", dst: Any = None):
        super().__init__(name=f"fusionrt-encode-{index}", daemon=True)
        self.codec, self.width, self.height = codec, width, height
        self.fps, self.time_base, self.options, self.threads = fps, time_base, options, threads
        self.stop, self.fail, self.waits = stop, fail, waits
        self.frame_format, self.dst = frame_format, dst
        self.inbox: queue.Queue = queue.Queue(maxsize=depth)
        self.out: queue.Queue = queue.Queue(maxsize=4 * depth)

    def _context(self):
        cc = av.CodecContext.create(self.codec, "w")
        cc.width, cc.height, cc.pix_fmt = self.width, self.height, "yuv420p"
        cc.time_base, cc.framerate = self.time_base, self.fps
        cc.thread_count = self.threads
        cc.options = dict(self.options)
        return cc

    def _emit(self, packets, seg: int) -> bool:
        for p in packets:
            if not put(self.out, (seg, p), self.stop):
                return False
        return True

    def run(self) -> None:
        cc, seg = None, None
        try:
            while (item := self._take()) is not DONE:
                s, arr, pts = item
                if s != seg:
                    if cc is not None and not self._close_segment(cc, seg):
                        return
                    cc, seg = self._context(), s
                vf = to_video_frame(arr, self.frame_format, pts, self.time_base)
                if not self._emit(cc.encode(vf), s):
                    return
            if cc is not None and not self._close_segment(cc, seg):
                return
            put(self.out, DONE, self.stop)
        except BaseException as e:  # noqa: BLE001 - recorded; the loop re-raises the first
            self.fail(e if not isinstance(e, FFmpegError) else encode_error(e, self.dst))

    def _take(self) -> Any:
        t0 = _now()
        item = get(self.inbox, self.stop)
        self.waits.add(f"{self.name}.get", _now() - t0)
        return item

    def _close_segment(self, cc, seg: int) -> bool:
        return self._emit(cc.encode(None), seg) and put(self.out, (seg, _SEGMENT_END), self.stop)


_now = time.perf_counter


def encode_error(e: BaseException, dst: Any = None) -> OutputError:
    where = f"output '{dst}'" if dst is not None else "output"
    return OutputError(f"{where} | encoding failed ({why(e)}); expected a working encoder "
                       "and free disk space")


class VideoSink:
    """Frames in (``frame_format`` arrays with pts, in order), an encoded file out.

    ``put`` blocks when the encoders fall behind (bounded queues); ``finish`` flushes, closes the
    container and returns; on any failure the caller removes the temp file.
    """

    def __init__(self, container: Any, v_out: Any, a_out: Any, time_base: Fraction,
                 fps: Fraction, codec: str, options: dict[str, str], encoders: int,
                 segment_frames: int, stop: threading.Event, fail, waits: Waits, cores: int,
                 frame_format: str = "yuv420p", dst: Any = None):
        self.container, self.v_out, self.a_out = container, v_out, a_out
        self.time_base, self.stop, self.fail, self.waits = time_base, stop, fail, waits
        self.dst = dst
        self.segment_frames = max(1, int(segment_frames)) if encoders > 1 else 1 << 62
        w, h = v_out.codec_context.width, v_out.codec_context.height
        depth = self.segment_frames if encoders > 1 else 16
        self.encoders = [SegmentEncoder(i, codec, w, h, fps, time_base, options,
                                        # x264 threads: 1.5 per core, shared by the encoders
                                        max(1, (3 * cores) // (2 * encoders)), stop, fail, waits,
                                        depth, frame_format, dst) for i in range(encoders)]
        # Audio packets are the one queue without a count bound: the muxer interleaves by time,
        # so it may hold them until the video packet after them is encoded (the encoders'
        # delay); a count bound could stall the decoder against the muxer. They are tiny, and
        # the video queues bound how far the decoder runs ahead.
        self.audio: queue.SimpleQueue = queue.SimpleQueue()
        self._next_audio: Any = None
        self.muxer = threading.Thread(target=self._mux_guarded, name="fusionrt-mux", daemon=True)
        self.frames = 0

    def start(self) -> None:
        for e in self.encoders:
            e.start()
        self.muxer.start()

    def put_audio(self, packet: Any) -> None:
        self.audio.put(packet)

    def put(self, frame: np.ndarray, pts: int) -> bool:
        seg = self.frames // self.segment_frames
        enc = self.encoders[seg % len(self.encoders)]
        t0 = _now()
        ok = put(enc.inbox, (seg, frame, pts), self.stop)
        self.waits.add("sink.put", _now() - t0)
        self.waits.saw(f"{enc.name}.inbox", enc.inbox.qsize())
        self.frames += 1
        return ok

    def finish(self) -> None:
        """End of stream: flush every encoder, wait for the muxer (raises nothing itself; the
        runner checks the recorded failure)."""
        for e in self.encoders:
            put(e.inbox, DONE, self.stop)
        self.join()

    @property
    def threads(self) -> list[threading.Thread]:
        return [*self.encoders, self.muxer]

    def join(self) -> None:
        for t in self.threads:
            if t.ident is not None:  # started
                t.join()

    def _mux_guarded(self) -> None:
        try:
            self._mux()
        except FFmpegError as e:
            self.fail(encode_error(e, self.dst))
        except BaseException as e:  # noqa: BLE001
            self.fail(e)

    def _mux_audio_until(self, t: float | None) -> None:
        """Mux the copied audio packets up to time ``t`` (all of them when None)."""
        while True:
            if self._next_audio is None:
                try:
                    self._next_audio = self.audio.get_nowait()
                except queue.Empty:
                    return
            p = self._next_audio
            if t is not None and p.dts is not None and float(p.dts * p.time_base) > t:
                return
            p.stream = self.a_out
            self.container.mux(p)
            self._next_audio = None

    def _mux(self) -> None:
        seg, n_enc = 0, len(self.encoders)
        while not self.stop.is_set():
            enc = self.encoders[seg % n_enc]
            t0 = _now()
            item = get(enc.out, self.stop)
            self.waits.add("mux.get", _now() - t0)
            if item is DONE:
                break  # this encoder has no segment `seg`: there is none after either
            s, p = item
            if isinstance(p, str):  # _SEGMENT_END
                seg += 1
                continue
            p.stream, p.time_base = self.v_out, self.time_base
            if self.a_out is not None:
                self._mux_audio_until(float(p.pts * self.time_base) if p.pts is not None else None)
            self.container.mux(p)
        if self.stop.is_set():
            return
        if self.a_out is not None:
            self._mux_audio_until(None)
        self.container.close()


def open_output(path: str | Path, fmt: str, dst: Any, width: int, height: int, fps: Fraction,
                time_base: Fraction, audio_template: Any, codec: str, options: dict[str, str]
                ) -> tuple[Any, Any, Any]:
    """The output container with a video stream whose encoder settings match the segment
    encoders (its extradata is what the container stores) and a copy of the audio stream.
    Frames are encoded in the input's time base, so the input pts pass through unrounded.

    Raises:
        OutputError: the encoder is not in this FFmpeg build, ``path`` cannot be created, or the
            container refuses the streams (nothing is left open).
    """
    try:
        Codec(codec, "w")
    except (FFmpegError, ValueError):  # UnknownCodecError is a ValueError
        raise OutputError(f"output '{dst}' | encoder '{codec}' is not in this FFmpeg build; "
                          "expected an available encoder such as libx264") from None
    try:
        out = av.open(str(path), "w", format=fmt)
    except (FFmpegError, OSError) as e:
        raise OutputError(f"output '{dst}' | cannot be created ({why(e)}); "
                          "expected a writable path") from None
    try:
        v_out = out.add_stream(codec, rate=fps, options=dict(options))
        v_out.width, v_out.height, v_out.pix_fmt = width, height, "yuv420p"
        v_out.codec_context.time_base = time_base
        a_out = copy_stream(out, audio_template) if audio_template is not None else None
    except (FFmpegError, ValueError) as e:
        close_quietly(out)
        raise OutputError(f"output '{dst}' | cannot set up encoder '{codec}' ({why(e)}); "
                          f"expected an encoder and audio codec that {fmt} supports") from None
    except BaseException:
        close_quietly(out)
        raise
    return out, v_out, a_out
