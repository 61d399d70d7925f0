"""Video in and out with PyAV: probe, frame iteration, what every video loop needs before its
first frame (destination checks, the temp file), stop-aware queue operations, and
``process_video``, the frame-function front of the one video loop (``loop.transcode``).

Output goes to a temp file next to the destination and is renamed only on success: a failed run
leaves no partial file. The audio stream is remuxed packet by packet, never re-encoded.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import av
import numpy as np
from av.error import FFmpegError

from ..._fs import part_path
from ...errors import InputError, OutputError
from ..image_io import MAX_PIXELS
from .orient import display_rotation, upright, upright_size

if TYPE_CHECKING:
    from .loop import VideoStats

log = logging.getLogger(__name__)

Frame = np.ndarray  # BGR uint8, shape (H, W, 3)
FrameResult = Union[Frame, tuple[Frame, int]]
FrameFn = Callable[[Any], Any]  # batch=1: Frame -> FrameResult; batch>1: list[Frame] -> list[FrameResult]

CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe")
# process_video's frames in flight per queue (decode -> upload -> frame_fn -> encode): enough to
# hide jitter, bounded memory, and few enough that a file cut mid-way fails while frame_fn runs.
QUEUE_FRAMES = 4
POLL_S = 0.1           # how often a blocked thread checks whether another one failed
DONE = object()        # end-of-stream marker passed down the queues


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` finds in a video file. ``width``/``height`` are the upright frame size
    (what the readers yield), after ``rotation``: the counter-clockwise degrees the file's
    display rotation asks for (0, 90, 180 or 270; phone videos)."""

    width: int
    height: int
    fps: Fraction
    frames: int
    duration: float
    codec: str
    has_audio: bool
    audio_codec: str | None = None
    audio_rate: int | None = None
    rotation: int = 0


def reserve_part(dst: Path) -> Path:
    """``part_path(dst)``, created empty now: an unwritable folder fails before any work.

    Raises:
        OutputError: the folder is missing or not writable.
    """
    dst = Path(dst)
    tmp = part_path(dst)
    try:
        tmp.open("xb").close()
    except OSError as e:
        raise OutputError(f"output '{dst}' | cannot write in '{dst.parent}' ({e.strerror}); "
                          "expected a writable folder") from None
    return tmp


def _open_input(path: str | os.PathLike) -> tuple[Any, Any]:
    """Open ``path`` and return (container, first video stream) or raise InputError."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"video '{p}' | not found; expected an existing video file")
    try:
        container = av.open(str(p), "r")
    except (FFmpegError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"video '{p}' | cannot be opened ({why(e)}); expected a readable video file") from None
    if container.format.name in IMAGE_FORMATS or not container.streams.video:
        kind = "an image" if container.format.name in IMAGE_FORMATS else "a file without a video stream"
        container.close()
        raise InputError(f"video '{p}' | is {kind}; expected a video file")
    return container, container.streams.video[0]


def _check_pixels(path: str | os.PathLike, width: int, height: int,
                  max_pixels: int | None) -> None:
    """The images' pixel budget (``image_io.MAX_PIXELS``, ``--max-pixels``) on one frame, from
    the stream header: a small file can declare frames that decode to gigabytes each."""
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(f"video '{path}' | frames of {width}x{height} are over the limit of "
                         f"{max_pixels} pixels; raise it with --max-pixels N if this video is "
                         "meant")


def check_frame_pixels(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> None:
    """Refuse a video whose frames are over ``max_pixels`` (None: no limit), from the header:
    nothing is decoded, so a front end can check before it loads models.

    Raises:
        InputError: not a readable video, or frames over the budget.
    """
    container, stream = _open_input(path)
    try:
        _check_pixels(path, stream.codec_context.width, stream.codec_context.height, max_pixels)
    finally:
        container.close()


def why(e: BaseException) -> str:
    """FFmpeg's reason without the errno and file name PyAV adds."""
    return getattr(e, "strerror", None) or str(e)


def _truncated(path: str | os.PathLike, promised: int, packets: int) -> InputError | None:
    """The error for a file whose index promises more frames than could be read (a cut-off file).

    Counts packets, not decoded frames: an edit list may legally hide some decoded frames.
    Containers without a frame count (Matroska, ``promised`` 0) cannot be checked this way.
    """
    if promised and packets < promised:
        return InputError(f"video '{path}' | ends after {packets} of {promised} frames; "
                          "expected an intact (not truncated) video")
    return None


def _duration_tag(stream: Any) -> float | None:
    """A Matroska/WebM track's DURATION tag ("HH:MM:SS.nnnnnnnnn": the track's end time), in s."""
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    try:
        h, m, sec = str(tag).split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except (ValueError, TypeError):
        return None


def _cut_short(path: str | os.PathLike, container: Any, stream: Any, fps: Fraction,
               first_pts: int | None, last_pts: int | None) -> InputError | None:
    """The error for a file without a frame count (Matroska, WebM) whose video ends well before
    the duration its header promises (a cut-off file): the track's DURATION tag (its end time),
    else the stream's duration, else the container's (both from the start)."""
    if stream.frames or last_pts is None or not stream.time_base:
        return None  # counted files are checked by _truncated
    tb, frame_s = float(stream.time_base), 1 / float(fps)
    end = last_pts * tb + frame_s
    # The tag is this track's own end time: an intact file ends within a frame of it (1.5 for
    # a longer last frame). The durations from the start can include other streams (an audio
    # tail) and a start offset: 3 frames. Both at least 2% (rounded tags of long files). A flat
    # 0.1 s floor let a 10 fps clip lose 3 of its 8 frames (the reader fuzz test's finding).
    slack = 1.5 * frame_s
    if (expected := _duration_tag(stream)) is None:
        slack = 3 * frame_s
        start = (first_pts or 0) * tb
        end -= start
        if stream.duration:
            expected = float(stream.duration * stream.time_base)
        elif container.duration:
            expected = container.duration / av.time_base
        else:
            return None
    if expected - end > max(slack, 0.02 * expected):
        return InputError(f"video '{path}' | ends at {end:.2f} s of {expected:.2f} s; "
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
    first_pts = last_pts = None  # of video packets, for files without a frame count
    streams = [v_in] + ([a_in] if a_in is not None else [])
    try:
        for packet in inp.demux(streams):
            if packet.stream is v_in:
                packets += packet.size > 0
                if packet.size and packet.pts is not None:
                    first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                    last_pts = packet.pts if last_pts is None else max(last_pts, packet.pts)
                for frame in packet.decode():
                    pts = frame.pts if frame.pts is not None else round(n / (fps * v_in.time_base))
                    yield "v", convert(frame) if convert else frame, pts
                    n += 1
            elif packet.size and packet.dts is not None:
                yield "a", packet, None
    except FFmpegError as e:
        raise InputError(f"video '{src}' | decode failed after {n} frames ({why(e)}); "
                         "expected an intact video") from None
    if (err := _truncated(src, v_in.frames, packets)) is not None:
        raise err
    if (err := _cut_short(src, inp, v_in, fps, first_pts, last_pts)) is not None:
        raise err


def _frame_rate(stream: Any, path: str | os.PathLike) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise InputError(f"video '{path}' | has no frame rate; expected a constant-rate video")
    return Fraction(rate)


def probe(path: str | os.PathLike, max_pixels: int | None = None) -> VideoInfo:
    """Read the upright size, rate, frame count (demuxed and counted when the container does not
    say), audio and display rotation; with ``max_pixels``, refuse larger frames first.

    Raises:
        InputError: missing, not a video, unreadable, or frames over ``max_pixels``.
    """
    container, stream = _open_input(path)
    try:
        cc = stream.codec_context
        _check_pixels(path, cc.width, cc.height, max_pixels)
        rotation = display_rotation(path, stream)
        width, height = upright_size(cc.width, cc.height, rotation)
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
            width=width, height=height, fps=fps, frames=frames, duration=duration,
            codec=cc.name, has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio else None,
            audio_rate=audio.codec_context.sample_rate if audio else None, rotation=rotation)
    except FFmpegError as e:
        raise InputError(f"video '{path}' | unreadable ({why(e)}); expected a valid video file") from None
    finally:
        container.close()


def to_bgr(frame: Any) -> Frame:
    """A decoded ``av.VideoFrame`` as a writeable BGR uint8 (H, W, 3) array (frame functions
    may draw in place)."""
    arr = frame.to_ndarray(format="bgr24")
    return arr if arr.flags.writeable else arr.copy()


def iter_frames(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> Iterator[Frame]:
    """Yield the video's frames in presentation order as upright BGR uint8 (H, W, 3) arrays
    (turned by the file's display rotation).

    Raises:
        InputError: frames over ``max_pixels`` (None: no limit), decoding failed mid-file, or
            the file ends before the frames its index promises (checked while the container is
            open: PyAV >= 19 refuses to read a closed container's streams).
    """
    container, stream = _open_input(path)
    n = packets = 0
    first_pts = last_pts = None
    try:
        _check_pixels(path, stream.codec_context.width, stream.codec_context.height, max_pixels)
        rotation = display_rotation(path, stream)
        stream.codec_context.thread_type = "AUTO"
        promised = stream.frames
        for packet in container.demux(stream):
            packets += packet.size > 0
            if packet.size and packet.pts is not None:
                first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                last_pts = packet.pts if last_pts is None else max(last_pts, packet.pts)
            for frame in packet.decode():
                n += 1
                yield upright(frame, rotation, "bgr24") if rotation else to_bgr(frame)
        if (err := _truncated(path, promised, packets)) is not None:
            raise err
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if rate and (err := _cut_short(path, container, stream, Fraction(rate),
                                       first_pts, last_pts)) is not None:
            raise err
    except FFmpegError as e:
        raise InputError(f"video '{path}' | decode failed after {n} frames ({why(e)}); "
                         "expected an intact video") from None
    finally:
        container.close()


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


def prepare_transcode(src: Path, dst: Path, max_pixels: int | None = MAX_PIXELS
                      ) -> tuple[Any, Any, str, Fraction, int, int, Path, int]:
    """Everything that can fail before the first frame is decoded: the destination's container,
    the input's video stream and rate, the pixel budget, an even frame size (yuv420p), and the
    temp file beside ``dst`` (same folder, so ``os.replace`` is an atomic rename).

    Returns (input container, video stream, output format, fps, width, height, temp path,
    rotation): width and height are upright, after ``rotation`` (counter-clockwise degrees the
    decoded frames must be turned, ``orient.upright``). The caller owns the input container and
    the temp file. On error nothing is left open or behind.
    """
    fmt = _check_destination(dst)
    inp, v_in = _open_input(src)
    try:
        fps = _frame_rate(v_in, src)
        _check_pixels(src, v_in.codec_context.width, v_in.codec_context.height, max_pixels)
        rotation = display_rotation(src, v_in)
        width, height = upright_size(v_in.codec_context.width, v_in.codec_context.height,
                                     rotation)
        if width % 2 or height % 2:
            raise OutputError(f"output '{dst}' | input size {width}x{height} has an odd side; "
                              "yuv420p needs even width and height")
        tmp = reserve_part(dst)
    except BaseException:
        inp.close()
        raise
    return inp, v_in, fmt, fps, width, height, tmp, rotation


def close_quietly(container: Any) -> None:
    """Close after a failure; the first error is what matters, not the close's."""
    try:
        container.close()
    except Exception:  # noqa: BLE001
        log.debug("closing %s failed", getattr(container, "name", container), exc_info=True)


def copy_stream(out: Any, template: Any) -> Any:
    """An output stream with the template's codec parameters, for copying packets unchanged."""
    if hasattr(out, "add_stream_from_template"):  # PyAV >= 14
        return out.add_stream_from_template(template)
    return out.add_stream(template=template)  # PyAV 12-13


# -- stop-aware queue operations: every thread of a loop blocks only ``POLL_S`` at a time ----

def put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put unless another thread failed; False means stop."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            pass
    return False


def get(q: queue.Queue, stop: threading.Event) -> Any:
    """Get the next item, or ``DONE`` once another thread failed."""
    while not stop.is_set():
        try:
            return q.get(timeout=POLL_S)
        except queue.Empty:
            pass
    return DONE


# -- the frame-function front of the video loop ----------------------------------------------

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

    Runs ``loop.transcode`` with a ``FrameFnStage`` and one encoder: decoding, the BGR
    conversion and encoding overlap ``frame_fn`` in background threads. Frame order and
    timestamps are kept; the first audio stream is copied without re-encoding; other streams
    (subtitles, data) are dropped. The GIL switch interval is left alone (``frame_fn`` may share
    the process with a server).

    Raises:
        InputError: ``src`` missing, not a video, or corrupt (also when it breaks mid-video).
        OutputError: ``dst`` not writable, or the encoder/muxer fails.
        Whatever ``frame_fn`` raises, unchanged. No output file is left behind on any error.
    """
    # both build on this module, so they are imported here rather than at the top
    from .frame_fn import FrameFnStage
    from .loop import VideoConfig, transcode

    stage = FrameFnStage(frame_fn, batch)
    config = VideoConfig(batch=batch, queue_batches=max(2, QUEUE_FRAMES // batch), encoders=1,
                         crf=crf, preset=preset, codec=codec, progress=progress,
                         switch_interval_s=None)
    return transcode(src, dst, stage, config)
