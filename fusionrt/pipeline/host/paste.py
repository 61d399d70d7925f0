"""Paste-back: put a generated (aligned) face crop back into the frame it came from.

Only the pixels under the warped mask's support are written: everything else in the returned
frame is bit-identical to the input (the work happens in the support's bounding rectangle, and
inside it a pixel whose mask weight is 0 keeps its input value).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from .align import invert

log = logging.getLogger(__name__)


def box_mask(size: int, feather: float = 0.1) -> np.ndarray:
    """(size, size) float32 weight: 1 in the middle, falling to 0 over ``feather``·size at the
    edges (erode, then Gaussian blur), so the crop's square border never shows."""
    m = np.ones((size, size), np.float32)
    return feather_mask(m, feather)


def feather_mask(mask: np.ndarray, feather: float = 0.1) -> np.ndarray:
    """Soften a [0, 1] mask: erode by ``feather``·side, blur over the same width. The result
    reaches 0 before the original mask's edge, so no hard seam survives."""
    m = np.asarray(mask, np.float32).copy()
    side = max(m.shape[:2])
    k = int(round(feather * side))
    if k < 1:
        return np.clip(m, 0, 1)
    m[:k // 2 + 1, :] = 0  # the crop's border is the warp's edge: never keep it
    m[-(k // 2 + 1):, :] = 0
    m[:, :k // 2 + 1] = 0
    m[:, -(k // 2 + 1):] = 0
    m = cv2.erode(m, np.ones((k, k), np.uint8))
    m = cv2.GaussianBlur(m, (0, 0), sigmaX=k / 3.0, borderType=cv2.BORDER_CONSTANT)
    m[m < 1e-3] = 0  # blur tails would otherwise widen the support by a few faint pixels
    return np.clip(m, 0, 1)


def color_transfer_lab(src: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Reinhard colour transfer: match ``src``'s per-channel LAB mean/std to ``ref``'s,
    measured where ``mask`` > 0.5 (both images the same size, BGR uint8)."""
    s = cv2.cvtColor(src, cv2.COLOR_BGR2LAB).astype(np.float32)
    r = cv2.cvtColor(ref, cv2.COLOR_BGR2LAB).astype(np.float32)
    sel = (mask > 0.5) if mask is not None else np.ones(src.shape[:2], bool)
    if sel.sum() < 16:
        return src
    ms, ss = s[sel].mean(0), s[sel].std(0) + 1e-6
    mr, sr = r[sel].mean(0), r[sel].std(0) + 1e-6
    out = (s - ms) * (sr / ss) + mr
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


def _roi(frame_shape: tuple[int, ...], crop_size: tuple[int, int], inv: np.ndarray
         ) -> tuple[int, int, int, int] | None:
    """Frame rectangle (x0, y0, x1, y1) covering the warped crop, clipped; None if outside."""
    w, h = crop_size
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64)
    pts = corners @ inv[:, :2].T + inv[:, 2]
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    H, W = frame_shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    return None if x0 >= x1 or y0 >= y1 else (x0, y0, x1, y1)


def paste_back(frame: np.ndarray, crop: np.ndarray, M: np.ndarray, *,
               mask: np.ndarray | None = None, feather: float = 0.1,
               color_transfer: bool = False, poisson: bool = False) -> np.ndarray:
    """Blend ``crop`` (made from ``frame`` with frame→crop matrix ``M``) back into a copy of
    ``frame``.

    Args:
        frame: BGR uint8 (H, W, 3).
        crop: BGR uint8 (h, w, 3), the generated face in the aligned space of ``M``.
        M: (2, 3) frame→crop affine matrix (from ``align.warp_face``).
        mask: (h, w) weights in [0, 1] in crop space; default a feathered box (``feather``).
            A given mask is used as is (feather it with ``feather_mask`` if it has hard edges).
        feather: width of the default mask's soft edge, as a fraction of the crop side.
        color_transfer: match the crop's LAB mean/std to the frame region it replaces.
        poisson: gradient-domain blend (``cv2.seamlessClone``) inside the mask.

    Returns:
        A new frame; pixels where the warped mask is 0 are bit-identical to ``frame``.
    """
    h, w = crop.shape[:2]
    if mask is None:
        mask = box_mask(max(h, w), feather)[:h, :w]
    if mask.shape[:2] != (h, w):
        raise ValueError(f"mask | got shape {mask.shape}; expected ({h}, {w})")
    out = frame.copy()
    inv = invert(M)
    roi = _roi(frame.shape, (w, h), inv)
    if roi is None:
        return out
    x0, y0, x1, y1 = roi
    inv_roi = inv.copy()
    inv_roi[:, 2] -= (x0, y0)  # warp straight into the rectangle, not the whole frame
    size = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(crop, inv_roi, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask.astype(np.float32), inv_roi, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = np.clip(alpha, 0, 1)
    support = alpha > 0
    if not support.any():
        return out
    base = frame[y0:y1, x0:x1]
    if color_transfer:
        face = color_transfer_lab(face, base, alpha)
    if poisson:
        face = _poisson(face, base, alpha)
    a = alpha[..., None]
    blended = np.rint(face.astype(np.float32) * a + base.astype(np.float32) * (1 - a))
    region = out[y0:y1, x0:x1]
    region[support] = np.clip(blended, 0, 255).astype(np.uint8)[support]
    return out


def _poisson(face: np.ndarray, base: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """seamlessClone the face into ``base`` where alpha > 0.5; same-size images, no offset."""
    m = (alpha > 0.5).astype(np.uint8) * 255
    m[0, :] = m[-1, :] = 0  # seamlessClone needs the mask off the image border
    m[:, 0] = m[:, -1] = 0
    if m.sum() == 0:
        return face
    x, y, bw, bh = cv2.boundingRect(m)
    # seamlessClone centres the mask's bounding box at ``center``: this keeps it in place.
    center = (x + bw // 2, y + bh // 2)
    try:
        return cv2.seamlessClone(face, base, m, center, cv2.NORMAL_CLONE)
    except cv2.error as e:  # degenerate masks (thin slivers at the frame edge)
        log.debug("paste | seamlessClone failed (%s); using the alpha blend", e)
        return face
