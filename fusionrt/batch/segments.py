"""Split a long video at keyframes into segments that workers swap in parallel, and stitch the
swapped segments back in order with the source's audio.

Splitting is a stream copy of the compressed packets between two keyframes (decode order), so
each cut starts on a keyframe and decodes on its own; nothing is re-encoded until the worker
swaps faces in it. Stitching is a remux as well: the segments' video packets are concatenated
(timestamps shifted to run on) and the source's first audio stream is copied packet by packet,
so the stitched file costs no second encode and the audio is bit-identical to the source.

Closed-GOP streams (x264/x265/NVENC defaults) split exactly. An open-GOP stream, whose
keyframes have leading frames that reference the previous GOP, would lose those frames: the
stitch counts frames and refuses (OutputError naming ``--segment-seconds 0``) rather than write
a short video.
"""

from __future__ import annotations

import heapq
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
from av.error import FFmpegError

from .._fs import part_path
from ..errors import InputError, OutputError
from ..pipeline.video.io import CONTAINERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Keyframes:
    """Where a video's keyframes are: packet indices (decode order) and times in seconds."""

    indices: tuple[int, ...]
    times: tuple[float, ...]
    packets: int  # video packets with data: the frame count of an ordinary stream


@dataclass(frozen=True)
class Segment:
    """Video packets ``[start, end)`` in decode order; ``end=None`` runs to the end."""

    index: int
    start: int
    end: int | None
    start_s: float
    frames: int


def scan_keyframes(path: str | os.PathLike) -> Keyframes:
    """Demux (no decoding) the first video stream and list its keyframes.

    Raises:
        InputError: the file cannot be opened or demuxed, or has no video stream.
    """
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise InputError(f"video '{path}' | has no video stream; expected a video file")
            v = c.streams.video[0]
            idx, times, n = [], [], 0
            for pkt in c.demux(v):
                if not pkt.size:
                    continue
                if pkt.is_keyframe:
                    idx.append(n)
                    t = pkt.pts if pkt.pts is not None else pkt.dts
                    times.append(float(t * pkt.time_base) if t is not None else 0.0)
                n += 1
    except (FFmpegError, OSError) as e:
        raise InputError(f"video '{path}' | cannot be demuxed ({getattr(e, 'strerror', None) or e}); "
                         "expected a readable video") from None
    return Keyframes(tuple(idx), tuple(times), n)


def plan_segments(keys: Keyframes, segment_seconds: float) -> list[Segment]:
    """Cut at the first keyframe at least ``segment_seconds`` after the previous cut.

    A video with fewer keyframes than that gives one segment (the whole video).
    """
    if segment_seconds <= 0:
        raise ValueError(f"segment_seconds | got {segment_seconds}; expected > 0")
    cuts = [(0, keys.times[0] if keys.times else 0.0)]
    for i, t in zip(keys.indices, keys.times):
        if i > 0 and t - cuts[-1][1] >= segment_seconds:
            cuts.append((i, t))
    segs = []
    for k, (start, t) in enumerate(cuts):
        end = cuts[k + 1][0] if k + 1 < len(cuts) else None
        segs.append(Segment(k, start, end, t, (end if end is not None else keys.packets) - start))
    return segs


def _container_for(path: Path) -> str:
    return CONTAINERS.get(path.suffix.lower(), "matroska")


def cut_segment(src: str | os.PathLike, seg: Segment, dst: str | os.PathLike) -> Path:
    """Copy the video packets of ``seg`` (no audio, no re-encode) into ``dst``."""
    dst = Path(dst)
    try:
        with av.open(str(src)) as inp, av.open(str(dst), "w", format=_container_for(dst)) as out:
            v_in = inp.streams.video[0]
            v_out = _copy_stream(out, v_in)
            n = 0
            for pkt in inp.demux(v_in):
                if not pkt.size:
                    continue
                if seg.end is not None and n >= seg.end:
                    break
                if n >= seg.start:
                    pkt.stream = v_out
                    out.mux(pkt)
                n += 1
    except FFmpegError as e:
        dst.unlink(missing_ok=True)
        raise InputError(f"video '{src}' | segment {seg.index} cannot be cut "
                         f"({getattr(e, 'strerror', None) or e}); expected an intact video") from None
    return dst


def _copy_stream(out: Any, template: Any) -> Any:
    if hasattr(out, "add_stream_from_template"):  # PyAV >= 14
        return out.add_stream_from_template(template)
    return out.add_stream(template=template)  # PyAV 12-13


def _video_packets(parts: list[Path], tb: Fraction) -> Iterator[tuple[Fraction, int, Any]]:
    """The parts' video packets in order, timestamps (in ``tb``) shifted so each part runs on
    from the previous one: pts continue after the previous part's last frame, and dts stay
    strictly increasing across the joint (a part encoded with B-frames starts with dts < pts)."""
    end_pts, last_dts = None, None
    for part in parts:
        with av.open(str(part)) as c:
            v = c.streams.video[0]
            pkts = [p for p in c.demux(v) if p.size]
            if not pkts:
                continue
            conv = [(_in_tb(p.pts, p.time_base, tb), _in_tb(p.dts, p.time_base, tb),
                     _in_tb(p.duration, p.time_base, tb)) for p in pkts]
            first_pts = min(pts for pts, _, _ in conv)
            first_dts = conv[0][1]
            shift = 0 if end_pts is None else end_pts - first_pts
            if last_dts is not None and first_dts + shift <= last_dts:
                shift = last_dts + 1 - first_dts
            for p, (pts, dts, dur) in zip(pkts, conv):
                p.pts, p.dts, p.time_base = pts + shift, dts + shift, tb
                last_dts = p.dts
                yield Fraction(p.dts) * tb, 0, p
            step = max((d for _, _, d in conv), default=0) or 1
            end_pts = max(pts for pts, _, _ in conv) + shift + step


def _in_tb(value: int | None, src_tb: Fraction, tb: Fraction) -> int:
    return 0 if value is None else round(Fraction(value) * src_tb / tb)


def _audio_packets(src: Path) -> Iterator[tuple[Fraction, int, Any]]:
    with av.open(str(src)) as c:
        if not c.streams.audio:
            return
        a = c.streams.audio[0]
        for p in c.demux(a):
            if p.size and p.dts is not None:
                yield Fraction(p.dts) * p.time_base, 1, p


def stitch(parts: list[str | os.PathLike], src: str | os.PathLike, dst: str | os.PathLike,
           expected_frames: int | None = None) -> int:
    """Concatenate the swapped segment files in order, add ``src``'s first audio stream, and
    write ``dst`` atomically (temp file + rename). Returns the number of video frames written.

    Raises:
        OutputError: a part is missing/unreadable, the frame count differs from
            ``expected_frames``, or the muxer fails. No ``dst`` is left behind.
    """
    parts, src, dst = [Path(p) for p in parts], Path(src), Path(dst)
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise OutputError(f"output '{dst}' | segment files missing: {', '.join(missing)}")
    tmp = part_path(dst)
    frames = 0
    try:
        with av.open(str(parts[0])) as first:
            v_tmpl = first.streams.video[0]
            tb = Fraction(v_tmpl.time_base)
            with av.open(str(src)) as s, av.open(str(tmp), "w", format=_container_for(dst)) as out:
                v_out = _copy_stream(out, v_tmpl)
                a_out = _copy_stream(out, s.streams.audio[0]) if s.streams.audio else None
                streams = (v_out, a_out)
                # merge by decode time so the file is interleaved like a normal recording
                for _, which, pkt in heapq.merge(_video_packets(parts, tb), _audio_packets(src),
                                                 key=lambda x: (x[0], x[1])):
                    pkt.stream = streams[which]
                    out.mux(pkt)
                    frames += which == 0
        if expected_frames is not None and frames != expected_frames:
            raise OutputError(f"output '{dst}' | segments hold {frames} frames, the source "
                              f"{expected_frames} (open-GOP keyframes?); expected equal counts: "
                              "rerun with --segment-seconds 0 to process it whole")
        os.replace(tmp, dst)
    except FFmpegError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"output '{dst}' | stitching failed ({getattr(e, 'strerror', None) or e}); "
                          "expected readable segment files and a writable folder") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("stitched %d segments into %s (%d frames)", len(parts), dst, frames)
    return frames
