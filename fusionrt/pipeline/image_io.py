"""Image files in and out: clear errors on bad input, atomic writes (never half a file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, OutputError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | os.PathLike, role: str = "image") -> np.ndarray:
    """BGR uint8 (H, W, 3). Grey and alpha images are converted; 16-bit is scaled to 8-bit.

    Raises:
        InputError: missing, unreadable, empty or undecodable file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{role} '{p}' | file not found")
    try:
        data = np.fromfile(p, np.uint8)  # imread can't report why; reading bytes can
    except OSError as e:
        raise InputError(f"{role} '{p}' | cannot read: {e.strerror}") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None or img.size == 0:
        raise InputError(f"{role} '{p}' | not a decodable image; expected PNG/JPEG/BMP/WebP/TIFF")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise InputError(f"{role} '{p}' | pixel type {img.dtype}; expected 8- or 16-bit")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(img)


def encode_image(img: np.ndarray, ext: str) -> bytes:
    """Encode to the format named by ``ext`` (".png", ".jpg", …)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext.lower() in (".jpg", ".jpeg") else []
    try:
        ok, buf = cv2.imencode(ext, img, params)
    except cv2.error:
        ok = False
    if not ok:
        raise OutputError(f"output '{ext}' | cannot encode an image in this format; "
                          f"expected one of {', '.join(IMAGE_EXTS)}")
    return buf.tobytes()


def write_image(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Encode ``img`` (BGR uint8) by the path's extension and write it atomically.

    The bytes go to a temp file in the target folder, then ``os.replace``: a reader sees the old
    file or the new one, and a failure leaves nothing behind.

    Raises:
        OutputError: unknown extension, missing or unwritable folder.
    """
    p = Path(path)
    if p.suffix.lower() not in IMAGE_EXTS:
        raise OutputError(f"output '{p}' | unknown image extension '{p.suffix}'; expected one "
                          f"of {', '.join(IMAGE_EXTS)}")
    data = encode_image(img, p.suffix)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output '{p}' | folder '{parent}' does not exist or is not a folder")
    if p.is_dir():
        raise OutputError(f"output '{p}' | is a folder; expected a file path")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; an image is an ordinary readable file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except OSError as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"output '{p}' | cannot write: {e.strerror or e}") from None
    return p
