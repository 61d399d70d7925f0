"""Request limits: admission (the bounded queue), upload sizes, image header checks before
decoding, and clear HTTP errors.

Every refusal is an ``ApiError`` (status + one-line message naming the field, the problem and
what was expected); the app turns it into ``{"error": ..., "request_id": ...}``.
"""

from __future__ import annotations

import io
import logging
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from .metrics import Metrics

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# As pipeline.image_io.read_image: IMREAD_COLOR turns the image upright by its EXIF orientation
# (IMREAD_UNCHANGED does not: phone photos came out sideways) and gives BGR for grey and alpha
# images; ANYDEPTH keeps 16-bit, scaled to 8-bit below.
IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH


try:  # an HTTPException, so FastAPI's body parsing passes one raised while reading through
    from starlette.exceptions import HTTPException as _HTTPError
except ImportError:  # no FastAPI: create_app says which extra to install
    _HTTPError = Exception


class ApiError(_HTTPError):
    """An HTTP error with a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status, message, headers)
        self.status, self.message, self.headers = status, message, headers or {}

    def __str__(self) -> str:
        return self.message


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def too_large(field: str, size: int, limit: int) -> ApiError:
    return ApiError(413, f"upload '{field}' | {mb(size)}; expected at most {mb(limit)}")


async def read_limited(upload, field: str, limit: int) -> bytes:
    """The whole upload, refusing more than ``limit`` bytes (413) and empty files (400)."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise too_large(field, len(data), limit)
    if not data:
        raise ApiError(400, f"upload '{field}' | empty file; expected an image")
    return data


async def save_limited(upload, field: str, dest: Path, limit: int) -> int:
    """Copy an upload to ``dest`` in chunks, refusing more than ``limit`` bytes (413)."""
    n = 0
    with open(dest, "wb") as f:
        while chunk := await upload.read(CHUNK):
            n += len(chunk)
            if n > limit:
                raise too_large(field, n, limit)
            f.write(chunk)
    if n == 0:
        raise ApiError(400, f"upload '{field}' | empty file; expected a video")
    return n


def _header_size(data: bytes, field: str) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding pixels (Pillow, if installed):
    a small file can declare a huge image, and decoding it first is how servers run out of
    memory. PNG chunks' CRCs are verified here too."""
    try:
        from PIL import Image
    except ImportError:
        return None
    Image.MAX_IMAGE_PIXELS = None  # our own side limit applies, with a clearer message
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            im.verify()
    except Image.UnidentifiedImageError:  # its message is a repr of our BytesIO
        raise ApiError(400, f"upload '{field}' | not an image format Pillow knows; expected "
                            "PNG/JPEG/BMP/WebP/TIFF") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
        raise ApiError(400, f"upload '{field}' | not a valid image ({type(e).__name__}: "
                            f"{e}); expected an intact PNG/JPEG/BMP/WebP/TIFF") from None
    return size


def decode_image(data: bytes, field: str, max_side: int) -> np.ndarray:
    """Bytes → BGR uint8 (H, W, 3), upright by its EXIF orientation; 400 for corrupt or
    unsupported files, 422 for oversize ones."""
    size = _header_size(data, field)
    if size is not None and max(size) > max_side:
        raise ApiError(422, f"image '{field}' | {size[0]}x{size[1]} pixels; expected at most "
                            f"{max_side} pixels per side")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:]:
        # OpenCV decodes a cut-off JPEG with a grey bottom and only a warning
        raise ApiError(400, f"upload '{field}' | JPEG is truncated (no end marker); "
                            "expected a complete file")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), IMREAD_FLAGS)
    except cv2.error:  # e.g. over OpenCV's own size cap
        img = None
    if img is None or img.size == 0:
        raise ApiError(400, f"upload '{field}' | not a decodable image; expected "
                            "PNG/JPEG/BMP/WebP/TIFF")
    h, w = img.shape[:2]
    if max(h, w) > max_side:
        raise ApiError(422, f"image '{field}' | {w}x{h} pixels; expected at most {max_side} "
                            "pixels per side")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ApiError(422, f"image '{field}' | pixel type {img.dtype}; expected 8- or 16-bit")
    if min(h, w) < 16:
        raise ApiError(422, f"image '{field}' | {w}x{h} pixels; expected at least 16 per side")
    return np.ascontiguousarray(img)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Admission:
    """At most ``limit`` swap/identity requests accepted and unanswered (the bounded queue)."""

    def __init__(self, limit: int, metrics: Metrics, retry_after: int):
        self.limit, self.metrics, self.retry_after = limit, metrics, retry_after
        self.count = 0
        self._lock = threading.Lock()

    @contextmanager
    def admit(self):
        with self._lock:
            if self.count >= self.limit:
                self.metrics.rejected.labels("queue_full").inc()
                raise ApiError(429, f"queue | full ({self.limit} requests in progress); retry "
                                    f"after {self.retry_after} s", {"Retry-After": str(self.retry_after)})
            self.count += 1
            self.metrics.inflight.inc()
        try:
            yield
        finally:
            with self._lock:
                self.count -= 1
                self.metrics.inflight.dec()
