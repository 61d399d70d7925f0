"""Upright video frames: phone videos store frames as the sensor saw them, plus a display
rotation (the display-matrix side data; FFmpeg < 5 showed it as a ``rotate`` tag). A player
turns them at display time; the readers here turn the frames themselves, so faces are found
upright, and the outputs are written upright with no rotation of their own.

Where the rotation is read, by PyAV version (one place, ``display_rotation``):
  * PyAV >= 19: the stream's coded side data (``codec_context.coded_side_data``), no decoding;
  * PyAV 14-18: ``VideoFrame.rotation`` of the first frame (FFmpeg copies the stream's matrix
    onto every decoded frame), from a second, short-lived open of the file;
  * PyAV 12-13: the first frame's DISPLAYMATRIX side data, else a ``rotate`` tag.
Mirroring in the matrix (front cameras can flag it) is not applied; rotation only.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from typing import Any

import av
import cv2
import numpy as np

from ..image_io import MAX_PIXELS

log = logging.getLogger(__name__)

# counter-clockwise degrees the display asks for → the cv2.rotate code that applies them
_CV2_CODES = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180,
              270: cv2.ROTATE_90_CLOCKWISE}


def matrix_rotation(data: bytes) -> float | None:
    """FFmpeg's ``av_display_rotation_get``: the counter-clockwise degrees of a display matrix
    (9 native-endian int32, 16.16 fixed point in the 2x2 part); None for a degenerate one."""
    if len(data) < 36:
        return None
    m = struct.unpack("=9i", bytes(data[:36]))
    a, b, c, d = (v / 65536.0 for v in (m[0], m[1], m[3], m[4]))
    sx, sy = math.hypot(a, c), math.hypot(b, d)
    if sx == 0 or sy == 0:
        return None
    return -math.degrees(math.atan2(b / sy, a / sx))


def quarter(degrees: float | None) -> int:
    """Counter-clockwise degrees → 0, 90, 180 or 270 (the nearest quarter turn)."""
    if degrees is None or not math.isfinite(degrees):
        return 0
    q = int(round(degrees / 90.0)) % 4 * 90
    if abs(((degrees - q) + 180) % 360 - 180) > 1:
        log.warning("video rotation %.1f degrees is not a quarter turn; using %d", degrees, q)
    return q


def _stream_matrix(stream: Any) -> bytes | None:
    try:  # PyAV >= 19
        data = stream.codec_context.coded_side_data
    except Exception:  # noqa: BLE001 - older PyAV: no such attribute
        return None
    return data.get("display_matrix") if isinstance(data, dict) else None


def _frame_rotation(frame: Any) -> float | None:
    rot = getattr(frame, "rotation", None)  # PyAV >= 14
    if rot is not None:
        return float(rot)
    try:  # PyAV 12-13: the raw side data
        from av.sidedata.sidedata import Type
        sd = frame.side_data.get(Type.DISPLAYMATRIX)
    except Exception:  # noqa: BLE001 - no side data API or none attached
        return None
    return matrix_rotation(bytes(sd)) if sd is not None else None


def _first_frame_rotation(path: str | os.PathLike) -> float | None:
    """The first decoded frame's rotation, from its own open of ``path``; None when the file
    cannot be read this way (the caller's own decode reports a broken file)."""
    try:
        with av.open(str(path), "r") as container:
            for frame in container.decode(video=0):
                return _frame_rotation(frame)
    except Exception as e:  # noqa: BLE001 - FFmpegError, OSError, …: unknown, the decode says
        log.debug("video '%s' | rotation not read from the first frame (%s)", path, e)
    return None


def display_rotation(path: str | os.PathLike, stream: Any) -> int:
    """Counter-clockwise quarter turns (0, 90, 180, 270) that make ``stream``'s frames upright."""
    data = _stream_matrix(stream)
    if data is not None:
        return quarter(matrix_rotation(data))
    cc = stream.codec_context
    # older PyAV: decode one frame, unless the header declares frames over the pixel budget
    # (a caller without a budget, e.g. ``probe``, must not decode a huge frame to learn this)
    ask_frame = not hasattr(cc, "coded_side_data") and cc.width * cc.height <= MAX_PIXELS
    rot = _first_frame_rotation(path) if ask_frame else None
    if rot is None:
        tag = (stream.metadata or {}).get("rotate")  # clockwise degrees (FFmpeg < 5)
        try:
            rot = -float(tag) if tag is not None else None
        except ValueError:
            rot = None
    return quarter(rot)


def upright_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """(width, height) of frames after ``rotation``."""
    return (height, width) if rotation in (90, 270) else (width, height)


def rotate_array(arr: np.ndarray, rotation: int, fmt: str) -> np.ndarray:
    """A frame in ``fmt`` (``bgr24`` (H, W, 3) or packed ``yuv420p`` (H * 3 / 2, W)) turned
    ``rotation`` degrees counter-clockwise; a new contiguous array."""
    if rotation == 0:
        return arr
    code = _CV2_CODES[rotation]
    if fmt == "bgr24":
        return cv2.rotate(arr, code)
    if fmt != "yuv420p":
        raise ValueError(f"frame format '{fmt}' | unknown; expected bgr24 or yuv420p")
    w = arr.shape[1]
    h = arr.shape[0] * 2 // 3
    flat = arr.reshape(-1)
    y = arr[:h]
    u = flat[h * w:h * w * 5 // 4].reshape(h // 2, w // 2)
    v = flat[h * w * 5 // 4:h * w * 3 // 2].reshape(h // 2, w // 2)
    planes = [cv2.rotate(np.ascontiguousarray(p), code) for p in (y, u, v)]
    oh, ow = planes[0].shape
    out = np.empty((oh * 3 // 2, ow), np.uint8)
    out[:oh] = planes[0]
    rest = out.reshape(-1)[oh * ow:]
    rest[:oh * ow // 4] = planes[1].reshape(-1)
    rest[oh * ow // 4:] = planes[2].reshape(-1)
    return out


def upright(frame: Any, rotation: int, fmt: str) -> np.ndarray:
    """A decoded ``av.VideoFrame`` as an upright array in ``fmt`` (the video loop's frame
    formats: ``bgr24`` or ``yuv420p``)."""
    arr = frame.to_ndarray(format=fmt)
    return rotate_array(arr, rotation, fmt)
