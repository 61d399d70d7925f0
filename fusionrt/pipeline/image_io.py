"""Image files in and out: clear errors on bad input, atomic writes (never half a file)."""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, OutputError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

# Pixel budget checked from the file header before decoding: 50 megapixels covers 8K UHD
# (7680x4320, 33 MP), 8K DCI (8192x4320) and a 50 MP phone photo (8160x6120), and bounds a decode
# at ~150 MB of BGR. A tiny file can declare a huge image (a 20000x20000 1-bit PNG is a few KB
# and would decode to 1.2 GB): ``fusionrt swap --max-pixels N`` raises the budget.
MAX_PIXELS = 50_000_000
# IMREAD_COLOR applies the EXIF orientation (IMREAD_UNCHANGED does not); ANYDEPTH keeps 16-bit
# so it is scaled below as before. Grey and alpha come back as BGR.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH


def _header_pixels(p: Path) -> tuple[str, int] | None:
    """("WxH", pixels) from the header, without decoding; None when Pillow can't tell."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        return None
    try:
        with warnings.catch_warnings():
            # only the size is read here: Pillow's warnings about a damaged file (bombs, corrupt
            # EXIF, TIFF tags past the end) would reach the user as stray lines; OpenCV decides
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                w, h = im.size
        return f"{w}x{h}", w * h
    except Image.DecompressionBombError as e:  # Pillow's own cap (~179 MP) hit on open
        m = re.search(r"\((\d+) pixels\)", str(e))
        n = int(m.group(1)) if m else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1
        return f"{n} pixels", n
    except Exception:  # noqa: BLE001 - unknown to Pillow: OpenCV decides below
        return None


def read_image(path: str | os.PathLike, role: str = "image",
               max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """BGR uint8 (H, W, 3), upright by its EXIF orientation. Grey and alpha images are
    converted; 16-bit is scaled to 8-bit. ``max_pixels`` (None: no limit) is checked from the
    header before decoding.

    Raises:
        InputError: missing, unreadable, empty, undecodable or over-budget file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{role} '{p}' | file not found")
    if max_pixels is not None and (size := _header_pixels(p)) is not None and size[1] > max_pixels:
        raise InputError(f"{role} '{p}' | {size[0]} is over the limit of {max_pixels} pixels; "
                         f"raise it with --max-pixels N if this image is meant")
    try:
        data = np.fromfile(p, np.uint8)  # imread can't report why; reading bytes can
    except OSError as e:
        raise InputError(f"{role} '{p}' | cannot read: {e.strerror}") from None
    try:
        img = cv2.imdecode(data, _IMREAD_FLAGS) if data.size else None
    except cv2.error:  # e.g. over OpenCV's own size cap
        img = None
    if img is None or img.size == 0:
        raise InputError(f"{role} '{p}' | not a decodable image; expected PNG/JPEG/BMP/WebP/TIFF")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise InputError(f"{role} '{p}' | pixel type {img.dtype}; expected 8- or 16-bit")
    if img.ndim == 2:  # IMREAD_COLOR gives BGR already; kept for safety
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
