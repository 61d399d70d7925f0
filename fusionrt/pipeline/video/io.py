"""Video in and out with PyAV: probe, frame iteration, and a threaded decode -> frame_fn -> encode loop.

Decoding and encoding run in background threads joined by small bounded queues, so FFmpeg's CPU
work overlaps the model work done by ``frame_fn`` in the calling thread (which keeps GPU contexts
and Ctrl-C on the caller). The audio stream is remuxed packet by packet, never re-encoded. Output
goes to a temp file next to the destination and is renamed only on success: a failed run leaves
no partial file.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import av
import numpy as np
from av.codec import Codec
from av.error import FFmpegError

from ...errors import InputError, OutputError

log = logging.getLogger(__name__)

Frame = np.ndarray  # BGR uint8, shape (H, W, 3)
FrameResult = Union[Frame, tuple[Frame, int]]
FrameFn = Callable[[Any], Any]  # batch=1: Frame -> FrameResult; batch>1: list[Frame] -> list[FrameResult]

CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe")
QUEUE_FRAMES = 8       # decoded/processed frames in flight per queue: enough to hide jitter, bounded memory
POLL_S = 0.1           # how often a blocked thread checks whether another one failed
_DONE = object()       # end-of-stream marker passed down the queues


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` finds in a video file."""

    width: int
    height: int
    fps: Fraction
    frames: int
    duration: float
    codec: str
    has_audio: bool
    audio_codec: str | None = None
    audio_rate: int | None = None


@dataclass
class VideoStats:
    """What ``process_video`` did; ``faces_total`` is None unless frame_fn returns (frame, n_faces)."""

    frames: int
    faces_total: int | None
    seconds: float
    fps: float


def _open_input(path: str | os.PathLike) -> tuple[Any, Any]:
    """Open ``path`` and return (container, first video stream) or raise InputError."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"video '{p}' | not found; expected an existing video file")
    try:
        container = av.open(str(p), "r")
    except (FFmpegError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"video '{p}' | cannot be opened ({_why(e)}); expected a readable video file") from None
    if container.format.name in IMAGE_FORMATS or not container.streams.video:
        kind = "an image" if container.format.name in IMAGE_FORMATS else "a file without a video stream"
        container.close()
        raise InputError(f"video '{p}' | is {kind}; expected a video file")
    return container, container.streams.video[0]


def _why(e: BaseException) -> str:
    """FFmpeg's reason without the errno and file name PyAV adds."""
    return getattr(e, "strerror", None) or str(e)


def _truncated(path: str | os.PathLike, stream: Any, packets: int) -> InputError | None:
    """The error for a file whose index promises more frames than could be read (a cut-off file).

    Counts packets, not decoded frames: an edit list may legally hide some decoded frames.
    Containers without a frame count (Matroska) cannot be checked this way.
    """
    if stream.frames and packets < stream.frames:
        return InputError(f"video '{path}' | ends after {packets} of {stream.frames} frames; "
                          "expected an intact (not truncated) video")
    return None


def demux_decode(inp: Any, v_in: Any, a_in: Any, fps: Fraction, src: str | os.PathLike,
                 convert: Callable[[Any], Any] | None = None
                 ) -> Iterator[tuple[str, Any, int | None]]:
    """The file in order: ("v", frame, pts) per decoded video frame (``convert(frame)`` when
    given, inside the decode-error handling), ("a", packet, None) per audio packet. Raw streams
    (e.g. .h264) carry no pts: frames go on the average-rate grid.

    Raises:
        InputError: decoding failed mid-file (saying after how many frames), or the file ends
            before the frames its index promises.
    """
    n = packets = 0
    streams = [v_in] + ([a_in] if a_in is not None else [])
    try:
        for packet in inp.demux(streams):
            if packet.stream is v_in:
                packets += packet.size > 0
                for frame in packet.decode():
                    pts = frame.pts if frame.pts is not None else round(n / (fps * v_in.time_base))
                    yield "v", convert(frame) if convert else frame, pts
                    n += 1
            elif packet.size and packet.dts is not None:
                yield "a", packet, None
    except FFmpegError as e:
        raise InputError(f"video '{src}' | decode failed after {n} frames ({_why(e)}); "
                         "expected an intact video") from None
    if (err := _truncated(src, v_in, packets)) is not None:
        raise err


def _frame_rate(stream: Any, path: str | os.PathLike) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise InputError(f"video '{path}' | has no frame rate; expected a constant-rate video")
    return Fraction(rate)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read size, rate, frame count (demuxed and counted when the container does not say) and audio."""
    container, stream = _open_input(path)
    try:
        cc = stream.codec_context
        fps = _frame_rate(stream, path)
        frames = stream.frames
        if not frames:  # e.g. Matroska stores no count: count the video packets (no decoding needed)
            frames = sum(1 for pkt in container.demux(stream) if pkt.size)
        if container.duration:
            duration = container.duration / av.time_base
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = frames / float(fps)
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            width=cc.width, height=cc.height, fps=fps, frames=frames, duration=duration,
            codec=cc.name, has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio else None,
            audio_rate=audio.codec_context.sample_rate if audio else None)
    except FFmpegError as e:
        raise InputError(f"video '{path}' | unreadable ({_why(e)}); expected a valid video file") from None
    finally:
        container.close()


def _to_bgr(frame: Any) -> Frame:
    arr = frame.to_ndarray(format="bgr24")
    return arr if arr.flags.writeable else arr.copy()  # frame_fn may draw in place


def iter_frames(path: str | os.PathLike) -> Iterator[Frame]:
    """Yield the video's frames in presentation order as BGR uint8 (H, W, 3) arrays."""
    container, stream = _open_input(path)
    stream.codec_context.thread_type = "AUTO"
    n = packets = 0
    try:
        for packet in container.demux(stream):
            packets += packet.size > 0
            for frame in packet.decode():
                n += 1
                yield _to_bgr(frame)
    except FFmpegError as e:
        raise InputError(f"video '{path}' | decode failed after {n} frames ({_why(e)}); "
                         "expected an intact video") from None
    finally:
        container.close()
    if (err := _truncated(path, stream, packets)) is not None:
        raise err


def _check_destination(dst: Path) -> str:
    """Fail before any decoding when ``dst`` cannot be written; return the container format."""
    fmt = CONTAINERS.get(dst.suffix.lower())
    if fmt is None:
        raise OutputError(f"output '{dst}' | unknown extension '{dst.suffix}'; "
                          f"expected one of {', '.join(CONTAINERS)}")
    if dst.is_dir():
        raise OutputError(f"output '{dst}' | is a directory; expected a file path")
    if not dst.parent.is_dir():
        raise OutputError(f"output '{dst}' | folder '{dst.parent}' does not exist; expected an existing folder")
    return fmt


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put unless another stage failed; False means stop."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            pass
    return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    """Get the next item, or _DONE once another stage failed."""
    while not stop.is_set():
        try:
            return q.get(timeout=POLL_S)
        except queue.Empty:
            pass
    return _DONE


class _Stage(threading.Thread):
    """A pipeline thread that records its exception and tells the other stages to stop."""

    def __init__(self, name: str, work: Callable[[], None], stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self.work, self.stop, self.error = work, stop, None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as e:  # noqa: BLE001 - handed to the caller, who re-raises it
            self.error = e
            self.stop.set()


def _to_video_frame(arr: Frame, pts: int, time_base: Fraction) -> Any:
    vf = av.VideoFrame.from_ndarray(arr, format="bgr24")
    vf.pts, vf.time_base = pts, time_base
    return vf


def _check_result(out: Any, like: Frame) -> tuple[Frame, int | None]:
    frame, faces = out if isinstance(out, tuple) else (out, None)
    if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == like.shape):
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame_fn | returned {got}; expected uint8 array of shape {like.shape}")
    return frame, faces


def process_video(src: str | os.PathLike, dst: str | os.PathLike, frame_fn: FrameFn, *, crf: int = 18,
                  preset: str = "veryfast", codec: str = "libx264", progress: bool = True,
                  batch: int = 1) -> VideoStats:
    """Decode ``src``, pass every frame through ``frame_fn`` and encode the result to ``dst``.

    Args:
        src: input video (anything FFmpeg reads).
        dst: output path; the container comes from the extension (.mp4, .mkv, .mov).
        frame_fn: with ``batch=1`` takes one BGR uint8 (H, W, 3) frame and returns a frame of the
            same shape or ``(frame, n_faces)``; with ``batch>1`` takes a list of up to ``batch``
            frames and returns a list of as many results. Runs in the calling thread.
        crf, preset, codec: encoder settings (yuv420p, same size and average rate as the input).
        progress: show a tqdm bar (frames/s).
        batch: frames per frame_fn call, to let a model batch crops of several frames.

    Frame order and timestamps are kept; the first audio stream is copied without re-encoding;
    other streams (subtitles, data) are dropped.

    Raises:
        InputError: ``src`` missing, not a video, or corrupt (also when it breaks mid-video).
        OutputError: ``dst`` not writable, or the encoder/muxer fails.
        Whatever ``frame_fn`` raises, unchanged. No output file is left behind on any error.
    """
    from tqdm import tqdm

    if batch < 1:
        raise ValueError(f"batch | got {batch}; expected >= 1")
    src, dst = Path(src), Path(dst)
    inp, v_in, fmt, fps, _, _, tmp = prepare_transcode(src, dst)
    out = None
    try:
        a_in = inp.streams.audio[0] if inp.streams.audio else None
        v_in.codec_context.thread_type = "AUTO"
        out, v_out, a_out = _open_output(tmp, fmt, dst, v_in, a_in, fps, codec, crf, preset)
        with tqdm(total=v_in.frames or None, unit="frame", disable=not progress, desc=dst.name) as bar:
            frames, faces, seconds = _run(inp, v_in, a_in, out, v_out, a_out, frame_fn, batch, fps,
                                          bar, src, dst)
        os.replace(tmp, dst)
    except BaseException:
        if out is not None:
            _close_quietly(out)
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _close_quietly(inp)
    log.info("wrote %s: %d frames in %.1f s (%.1f frames/s)", dst, frames, seconds, frames / seconds)
    return VideoStats(frames=frames, faces_total=faces, seconds=seconds,
                      fps=frames / seconds if seconds else 0.0)


def prepare_transcode(src: Path, dst: Path) -> tuple[Any, Any, str, Fraction, int, int, Path]:
    """Everything that can fail before the first frame is decoded: the destination's container,
    the input's video stream and rate, an even frame size (yuv420p), and the temp file beside
    ``dst`` (same folder, so ``os.replace`` is an atomic rename).

    Returns (input container, video stream, output format, fps, width, height, temp path); the
    caller owns the input container and the temp file. On error nothing is left open or behind.
    """
    fmt = _check_destination(dst)
    inp, v_in = _open_input(src)
    try:
        fps = _frame_rate(v_in, src)
        width, height = v_in.codec_context.width, v_in.codec_context.height
        if width % 2 or height % 2:
            raise OutputError(f"output '{dst}' | input size {width}x{height} has an odd side; "
                              "yuv420p needs even width and height")
        tmp = dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:8]}.part{dst.suffix}")
        try:
            tmp.open("xb").close()
        except OSError as e:
            raise OutputError(f"output '{dst}' | cannot write in '{dst.parent}' ({e.strerror}); "
                              "expected a writable folder") from None
    except BaseException:
        inp.close()
        raise
    return inp, v_in, fmt, fps, width, height, tmp


def _close_quietly(container: Any) -> None:
    try:
        container.close()
    except Exception:  # noqa: BLE001 - closing after a failure; the first error is what matters
        log.debug("closing %s failed", container.name, exc_info=True)


def _open_output(tmp: Path, fmt: str, dst: Path, v_in: Any, a_in: Any, fps: Fraction, codec: str,
                 crf: int, preset: str) -> tuple[Any, Any, Any]:
    try:
        Codec(codec, "w")
    except (FFmpegError, ValueError):  # UnknownCodecError is a ValueError
        raise OutputError(f"output '{dst}' | encoder '{codec}' is not in this FFmpeg build; "
                          "expected an available encoder such as libx264") from None
    try:
        out = av.open(str(tmp), "w", format=fmt)
    except (FFmpegError, OSError) as e:
        raise OutputError(f"output '{dst}' | cannot be created ({_why(e)}); expected a writable path") from None
    try:
        v_out = out.add_stream(codec, rate=fps, options={"crf": str(crf), "preset": preset})
        v_out.width, v_out.height, v_out.pix_fmt = v_in.codec_context.width, v_in.codec_context.height, "yuv420p"
        # Encode in the input's time base so the input pts pass through without rounding.
        v_out.codec_context.time_base = v_in.time_base
        v_out.codec_context.thread_type = "AUTO"
        a_out = None
        if a_in is not None:
            a_out = _copy_stream(out, a_in)
    except (FFmpegError, ValueError) as e:
        _close_quietly(out)
        raise OutputError(f"output '{dst}' | cannot set up encoder '{codec}' ({_why(e)}); "
                          f"expected an encoder and audio codec that {fmt} supports") from None
    return out, v_out, a_out


def _copy_stream(out: Any, template: Any) -> Any:
    """An output stream with the template's codec parameters, for copying packets unchanged."""
    if hasattr(out, "add_stream_from_template"):  # PyAV >= 14
        return out.add_stream_from_template(template)
    return out.add_stream(template=template)  # PyAV 12-13


def _run(inp: Any, v_in: Any, a_in: Any, out: Any, v_out: Any, a_out: Any, frame_fn: FrameFn,
         batch: int, fps: Fraction, bar: Any, src: Path, dst: Path) -> tuple[int, int | None, float]:
    """Run the three stages and return (frames, faces_total, seconds); re-raise the first failure."""
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=max(QUEUE_FRAMES, 2 * batch))
    encoded: queue.Queue = queue.Queue(maxsize=max(QUEUE_FRAMES, 2 * batch))

    def decode() -> None:
        for kind, item, pts in demux_decode(inp, v_in, a_in, fps, src, convert=_to_bgr):
            if not _put(decoded, ("v", item, pts) if kind == "v" else ("a", item), stop):
                return
        _put(decoded, _DONE, stop)

    def encode() -> None:
        try:
            while (item := _get(encoded, stop)) is not _DONE:
                if item[0] == "v":
                    out.mux(v_out.encode(_to_video_frame(item[1], item[2], v_in.time_base)))
                else:
                    item[1].stream = a_out
                    out.mux(item[1])
            if not stop.is_set():
                out.mux(v_out.encode(None))  # flush the encoder's delayed frames
                out.close()
        except FFmpegError as e:
            raise OutputError(f"output '{dst}' | encoding failed ({_why(e)}); "
                              "expected a working encoder and free disk space") from None

    stages = [_Stage("fusionrt-decode", decode, stop), _Stage("fusionrt-encode", encode, stop)]
    frames, faces = 0, None
    pending: list[tuple[Frame, int]] = []
    t0 = time.perf_counter()

    def flush() -> bool:
        nonlocal frames, faces
        imgs = [f for f, _ in pending]
        results = [frame_fn(imgs[0])] if batch == 1 else list(frame_fn(imgs))
        if len(results) != len(imgs):
            raise ValueError(f"frame_fn | returned {len(results)} results for {len(imgs)} frames; "
                             "expected one per frame")
        for (img, pts), res in zip(pending, results):
            frame, n = _check_result(res, img)
            if n is not None:
                faces = (faces or 0) + int(n)
            if not _put(encoded, ("v", frame, pts), stop):
                return False
        frames += len(pending)
        bar.update(len(pending))
        pending.clear()
        return True

    try:
        for s in stages:
            s.start()
        while (item := _get(decoded, stop)) is not _DONE:
            if item[0] == "a":
                if not _put(encoded, item, stop):
                    break
                continue
            pending.append(item[1:])
            if len(pending) >= batch and not flush():
                break
        if not stop.is_set() and (not pending or flush()):
            _put(encoded, _DONE, stop)
        for s in stages:
            s.join()
    except BaseException:
        stop.set()
        for s in stages:
            if s.is_alive():
                s.join()
        raise
    for s in stages:  # the stage that failed first set `stop`; its error is the cause
        if s.error is not None:
            raise s.error
    return frames, faces, time.perf_counter() - t0
