"""Encoding yuv420p frames with several x264 encoders at once, muxed in order with the audio.

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
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.error import FFmpegError

from .io import _DONE, _copy_stream, _get, _put, _why
from ..device.timing import Waits

log = logging.getLogger(__name__)

_SEGMENT_END = "segment-end"


def encoder_options(crf: int, preset: str, encoders: int) -> dict[str, str]:
    """x264 options shared by the segment encoders and the output stream (same SPS/PPS)."""
    opts = {"crf": str(crf), "preset": preset}
    if encoders > 1:
        opts["x264-params"] = "bframes=0"
    return opts


class SegmentEncoder(threading.Thread):
    """Encodes the segments it is given, in order, into ``self.out`` (packets, then a
    segment-end marker per segment; ``_DONE`` at the end)."""

    def __init__(self, index: int, codec: str, width: int, height: int, fps: Fraction,
                 time_base: Fraction, options: dict[str, str], threads: int,
                 stop: threading.Event, fail, waits: Waits, depth: int):
        super().__init__(name=f"fusionrt-encode-{index}", daemon=True)
        self.codec, self.width, self.height = codec, width, height
        self.fps, self.time_base, self.options, self.threads = fps, time_base, options, threads
        self.stop, self.fail, self.waits = stop, fail, waits
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
            if not _put(self.out, (seg, p), self.stop):
                return False
        return True

    def run(self) -> None:
        cc, seg = None, None
        try:
            while (item := self._take()) is not _DONE:
                s, arr, pts = item
                if s != seg:
                    if cc is not None and not self._close_segment(cc, seg):
                        return
                    cc, seg = self._context(), s
                vf = av.VideoFrame.from_ndarray(arr, format="yuv420p")
                vf.pts, vf.time_base = pts, self.time_base
                if not self._emit(cc.encode(vf), s):
                    return
            if cc is not None and not self._close_segment(cc, seg):
                return
            _put(self.out, _DONE, self.stop)
        except BaseException as e:  # noqa: BLE001 - recorded; the runner re-raises the first
            self.fail(e if not isinstance(e, FFmpegError) else _encode_error(e))

    def _take(self) -> Any:
        t0 = _now()
        item = _get(self.inbox, self.stop)
        self.waits.add(f"{self.name}.get", _now() - t0)
        return item

    def _close_segment(self, cc, seg: int) -> bool:
        return self._emit(cc.encode(None), seg) and _put(self.out, (seg, _SEGMENT_END), self.stop)


def _now() -> float:
    import time
    return time.perf_counter()


def _encode_error(e: BaseException) -> Exception:
    from ...errors import OutputError
    return OutputError(f"output | encoding failed ({_why(e)}); expected a working encoder "
                       "and free disk space")


class VideoSink:
    """Frames in (yuv420p arrays with pts, in order), an encoded file out.

    ``put`` blocks when the encoders fall behind (bounded queues); ``finish`` flushes, closes the
    container and returns; on any failure the caller removes the temp file.
    """

    def __init__(self, container: Any, v_out: Any, a_out: Any, time_base: Fraction,
                 fps: Fraction, codec: str, options: dict[str, str], encoders: int,
                 segment_frames: int, stop: threading.Event, fail, waits: Waits, cores: int):
        self.container, self.v_out, self.a_out = container, v_out, a_out
        self.time_base, self.stop, self.fail, self.waits = time_base, stop, fail, waits
        self.segment_frames = max(1, int(segment_frames)) if encoders > 1 else 1 << 62
        w, h = v_out.codec_context.width, v_out.codec_context.height
        depth = self.segment_frames if encoders > 1 else 16
        self.encoders = [SegmentEncoder(i, codec, w, h, fps, time_base, options,
                                        # x264 threads: 1.5 per core, shared by the encoders
                                        max(1, (3 * cores) // (2 * encoders)), stop, fail, waits,
                                        depth) for i in range(encoders)]
        self.audio: queue.SimpleQueue = queue.SimpleQueue()  # tiny packets; decode runs ahead
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
        ok = _put(enc.inbox, (seg, frame, pts), self.stop)
        self.waits.add("sink.put", _now() - t0)
        self.waits.saw(f"{enc.name}.inbox", enc.inbox.qsize())
        self.frames += 1
        return ok

    def finish(self) -> None:
        """End of stream: flush every encoder, wait for the muxer (raises nothing itself; the
        runner checks the recorded failure)."""
        for e in self.encoders:
            _put(e.inbox, _DONE, self.stop)
        self.join()

    def join(self) -> None:
        for e in self.encoders:
            e.join()
        self.muxer.join()

    def _mux_guarded(self) -> None:
        try:
            self._mux()
        except FFmpegError as e:
            self.fail(_encode_error(e))
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
            item = _get(enc.out, self.stop)
            self.waits.add("mux.get", _now() - t0)
            if item is _DONE:
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


def open_output(path: str, fmt: str, width: int, height: int, fps: Fraction, time_base: Fraction,
                audio_template: Any, codec: str, options: dict[str, str]) -> tuple[Any, Any, Any]:
    """The output container with a video stream whose encoder settings match the segment
    encoders (its extradata is what the container stores) and a copy of the audio stream."""
    out = av.open(path, "w", format=fmt)
    try:
        v_out = out.add_stream(codec, rate=fps, options=dict(options))
        v_out.width, v_out.height, v_out.pix_fmt = width, height, "yuv420p"
        v_out.codec_context.time_base = time_base
        a_out = _copy_stream(out, audio_template) if audio_template is not None else None
    except BaseException:
        out.close()
        raise
    return out, v_out, a_out
