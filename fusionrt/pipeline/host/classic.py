"""The classic swapper: no neural weights, so ``fusionrt swap`` works out of the box.

``style="v2"`` (default): the source photo is warped straight into a rectangle (ROI) of the
target frame by the similarity that maps its 5 landmarks onto the target's (one resampling,
at the target's resolution), then, inside a landmark-shaped mask (blend.py):

* colour: the target's skin chroma (LAB a/b mean/std, std ratio clamped) and the target's
  low-frequency lightness with the source's detail on top (masked low-pass, so the source's
  lighting does not come along), statistics taken inside the inner face (mask > 0.8) of both;
* sharpness: the source's high-frequency (Laplacian) energy matched to the target's inner
  face — unsharp when a small source was upsampled, blur when the target is the softer one;
* multi-band blending (Laplacian pyramid) into the ROI, so fine detail switches over the
  mask's short falloff (no half-transparent ghosts) and shading over a wider one;
* a face turned beyond ``POSE_LIMIT_DEG`` (yaw from 5 landmarks), in the source or the
  target, is left unchanged with one warning per swapper: a similarity warp cannot turn a
  face, so pasting would smear a frontal face over a profile.

The result is returned as a ``SwapResult`` whose crop is the finished ROI, its matrix the
frame→ROI translation and its mask 1 exactly where pixels changed, so ``paste_back`` (an
integer-shift warp and a 0/1 mask) writes the blend unchanged and nothing outside it; a
skipped face has an all-zero mask (paste writes nothing).

``style="v1"``: the previous method, kept for comparison (benchmarks/scripts/
classic_quality.py): both faces aligned to the FFHQ 256² template, the crop colour-matched in
LAB inside an elliptical feathered oval, alpha-pasted by ``paste_back``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .align import estimate_similarity, transform_points, warp_face
from .blend import (POSE_LIMIT_DEG, SharpnessMatch, band_masks, estimate_yaw, face_frame,
                    fill_polygon, from_lab, hf_energy, hull_from_5, hull_from_68,
                    match_sharpness, multiband_blend, pyramid_levels, region_alpha, skin,
                    to_lab, transfer_color)
from .paste import color_transfer_lab, feather_mask
from .swap import SwapResult
from ..types import Face, Identity

log = logging.getLogger(__name__)

STYLES = ("v1", "v2")
# The coarsest blend band spans about this many inter-ocular distances (2^levels px): its mask
# ramps over 2.5·2^levels px inside the face, so it must stay well under the face's width.
LEVEL_BAND = 0.2

# Face oval in the ffhq_512 template, as fractions of the crop side: centred between the eyes
# and mouth, spanning eyebrows to chin and cheek to cheek (checked on both example photos).
OVAL_CENTER = (0.5, 0.60)
OVAL_AXES = (0.205, 0.255)


def face_oval_mask(size: int, feather: float = 0.06) -> np.ndarray:
    """(size, size) float32 weights: 1 inside the face oval, feathered to 0 at its edge."""
    m = np.zeros((size, size), np.float32)
    center = (int(round(OVAL_CENTER[0] * size)), int(round(OVAL_CENTER[1] * size)))
    axes = (int(round(OVAL_AXES[0] * size)), int(round(OVAL_AXES[1] * size)))
    cv2.ellipse(m, center, axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    return feather_mask(m, feather)


def uses_68(face: Face) -> bool:
    """Whether the face's ``landmarks68`` shape its mask: present, and a plausible face — the
    hull holds all 5 landmarks and has 0.5-3× the area of the 5-point estimate (a stand-in
    landmarker's random points fall back to the 5-point hull)."""
    lm68 = getattr(face, "landmarks68", None)
    if lm68 is None:
        return False
    p = np.asarray(lm68, np.float64)
    if p.shape != (68, 2) or not np.isfinite(p).all():
        return False
    hull = hull_from_68(p, face.landmarks).astype(np.float32)
    if any(cv2.pointPolygonTest(hull, (float(x), float(y)), False) < 0
           for x, y in np.asarray(face.landmarks, np.float64)):
        return False
    ratio = cv2.contourArea(hull) / max(cv2.contourArea(hull_from_5(face.landmarks)
                                                        .astype(np.float32)), 1e-6)
    return 0.5 <= ratio <= 3.0


def face_hull(face: Face) -> np.ndarray:
    """The face's mask polygon (frame pixels): from ``landmarks68`` when the face has usable
    ones (``uses_68``), else estimated from the 5 landmarks."""
    if uses_68(face):
        return hull_from_68(face.landmarks68, face.landmarks)
    return hull_from_5(face.landmarks)


@dataclass(frozen=True)
class ClassicBlend:
    """One v2 swap, with what it measured (benchmarks and tests read these).

    ``roi`` (x0, y0, x1, y1) frame rectangle; ``pixels`` the finished ROI (uint8, the input
    where ``support`` is False); ``alpha`` the face mask in the ROI; ``support`` where pixels
    may change (alpha > 0)."""

    roi: tuple[int, int, int, int]
    pixels: np.ndarray
    alpha: np.ndarray
    support: np.ndarray
    yaw_source: float
    yaw_target: float
    scale: float           # target size / source size (>1: the source was upsampled)
    levels: int
    sharpness: SharpnessMatch | None


class ClassicSwapper:
    """Landmark-aligned face transplant with colour, shading and sharpness matching and
    multi-band blending; no model, no engine."""

    name = "classic"
    needs_embedding = False

    def __init__(self, size: int = 256, template: str = "ffhq_512", feather: float = 0.06,
                 color_match: bool = True, *, style: str = "v2",
                 pose_limit: float = POSE_LIMIT_DEG, falloff: float = 0.2,
                 multiband: bool = True, sharpen: bool = True, shading: float = 0.3):
        """``size``, ``template``, ``feather``: the v1 crop, template and oval feather.
        ``falloff``: v2 mask edge width in inter-ocular distances; ``shading``: the low-pass
        sigma of the lightness transfer, in inter-ocular distances; ``pose_limit``: |yaw| in
        degrees above which a face is skipped."""
        if style not in STYLES:
            raise ValueError(f"classic style '{style}' | unknown; expected one of: "
                             f"{', '.join(STYLES)}")
        self.size = int(size)
        self.template = template
        self.color_match = color_match
        self.style = style
        self.pose_limit = float(pose_limit)
        self.falloff = float(falloff)
        self.multiband = multiband
        self.sharpen = sharpen
        self.shading = float(shading)
        self.mask = face_oval_mask(self.size, feather)
        self.skipped = 0  # faces left unchanged for their pose, over this swapper's life
        self._warned = False
        self._source: Identity | None = None
        self._source_crop: np.ndarray | None = None
        self._source_yaw: tuple[Identity | None, float] = (None, 0.0)

    # -- v1 -----------------------------------------------------------------------------------
    def source_crop(self, source: Identity) -> np.ndarray:
        """The source face in canonical space (cached: a video reuses one source)."""
        if source is not self._source:
            self._source_crop = warp_face(source.image, source.face.landmarks,
                                          self.template, self.size)[0]
            self._source = source
        return self._source_crop

    def _swap_v1(self, frame: np.ndarray, face: Face, source: Identity) -> SwapResult:
        target, m = warp_face(frame, face.landmarks, self.template, self.size)
        crop = self.source_crop(source)
        if self.color_match:
            # measure skin, not background: statistics only inside the oval
            crop = color_transfer_lab(crop, target, self.mask)
        return SwapResult(crop, m, self.mask)

    # -- v2 -----------------------------------------------------------------------------------
    def swap(self, frame: np.ndarray, face: Face, source: Identity) -> SwapResult:
        if self.style == "v1":
            return self._swap_v1(frame, face, source)
        b = self.blend(frame, face, source)
        if b is None:
            return SwapResult(np.zeros((1, 1, 3), np.uint8), np.array([[1.0, 0, 0], [0, 1.0, 0]]),
                              np.zeros((1, 1), np.float32))
        x0, y0 = b.roi[:2]
        shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
        return SwapResult(b.pixels, shift, b.support.astype(np.float32))

    def yaw_of_source(self, source: Identity) -> float:
        if self._source_yaw[0] is not source:
            self._source_yaw = (source, estimate_yaw(source.face.landmarks))
        return self._source_yaw[1]

    def _skip(self, which: str, yaw: float, face: Face) -> None:
        self.skipped += 1
        x1, y1, x2, y2 = (float(v) for v in face.box)
        msg = (f"classic | {which} face at ({x1:.0f}, {y1:.0f})-({x2:.0f}, {y2:.0f}) is turned "
               f"{abs(yaw):.0f}° (limit {self.pose_limit:.0f}°): a similarity warp cannot "
               f"swap it, left unchanged")
        if not self._warned:
            log.warning("%s (further skips are logged at debug level)", msg)
            self._warned = True
        else:
            log.debug(msg)

    def blend(self, frame: np.ndarray, face: Face, source: Identity) -> ClassicBlend | None:
        """The v2 swap of one face; None when a pose is beyond ``pose_limit`` (warned)."""
        yaw_s = self.yaw_of_source(source)
        if abs(yaw_s) > self.pose_limit:
            self._skip("source", yaw_s, source.face)
            return None
        yaw_t = estimate_yaw(face.landmarks)
        if abs(yaw_t) > self.pose_limit:
            self._skip("target", yaw_t, face)
            return None

        # source frame → target frame: one resampling, at the target's resolution
        A = estimate_similarity(source.face.landmarks, face.landmarks)
        scale = math.sqrt(abs(np.linalg.det(A[:, :2])))
        iod = max(face_frame(face.landmarks).iod, 1.0)
        width = max(self.falloff * iod, 2.0)
        hull_t = face_hull(face)
        hull_s = transform_points(face_hull(source.face), A)
        levels_max = pyramid_levels((1 << 12, 1 << 12), LEVEL_BAND * iod)
        pad = width / 2 + (2 << levels_max) + 2
        pts = np.concatenate([hull_t, hull_s])
        H, W = frame.shape[:2]
        x0, y0 = (max(0, int(math.floor(v - pad))) for v in pts.min(0))
        x1 = min(W, int(math.ceil(pts[:, 0].max() + pad)))
        y1 = min(H, int(math.ceil(pts[:, 1].max() + pad)))
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        size = (x1 - x0, y1 - y0)
        shape = (size[1], size[0])
        A_roi = A.copy()
        A_roi[:, 2] -= (x0, y0)

        img = source.image
        if scale < 0.7:  # shrinking: low-pass first, warpAffine does not anti-alias
            img = cv2.GaussianBlur(img, (0, 0), 0.45 / scale)
        interp = cv2.INTER_CUBIC if scale > 1.2 else cv2.INTER_LINEAR
        warped = cv2.warpAffine(img, A_roi, size, flags=interp, borderMode=cv2.BORDER_REPLICATE)
        valid = cv2.warpAffine(np.ones(img.shape[:2], np.uint8), A_roi, size,
                               flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        r = int(math.ceil(width / 2)) + 2
        valid = cv2.erode(valid, np.ones((2 * r + 1, 2 * r + 1), np.uint8))

        # a 68-point hull is the face's outline: the falloff goes inside it, so the mask's
        # support ends at the jaw line; the 5-point hull is an inner one, centred on its edge
        edge = np.ones((2 * r - 3, 2 * r - 3), np.uint8)

        def fill(poly, f):
            m = fill_polygon(shape, poly, (x0, y0))
            return cv2.erode(m, edge) if uses_68(f) else m
        region = fill(hull_t, face) & fill(hull_s, source.face) & valid
        alpha = region_alpha(region, width)
        alpha *= valid  # never past where the source photo ends
        support = alpha > 0
        if not support.any():
            return None
        inner = alpha > 0.8

        base = frame[y0:y1, x0:x1]
        src_lab, tgt_lab = to_lab(warped), to_lab(base)
        if self.color_match:
            src_lab = transfer_color(src_lab, tgt_lab, inner, self.shading * iod, support)
        sharp = None
        if self.sharpen:
            # measured on skin: glasses rims, eyes and brows are content, not sharpness
            sig = 2 * self.shading * iod
            w_s = skin(src_lab, inner, shading_sigma=sig).astype(np.float32)
            w_t = skin(tgt_lab, inner, shading_sigma=sig).astype(np.float32)
            radius = float(np.clip(0.5 * scale, 0.8, 2.5))
            L, sharp = match_sharpness(src_lab[..., 0], hf_energy(tgt_lab[..., 0], w_t), w_s,
                                       radius=radius)
            src_lab[..., 0] = np.clip(L, 0, 100)
        fg = from_lab(src_lab)
        bg = base.astype(np.float32)
        # the source's surroundings must not enter the pyramid: outside the support fg = bg
        fg = np.where(support[..., None], fg, bg)
        levels = pyramid_levels(shape, LEVEL_BAND * iod) if self.multiband else 0
        out = multiband_blend(fg, bg, band_masks(alpha, width, levels))
        pixels = base.copy()
        pixels[support] = np.clip(np.rint(out), 0, 255).astype(np.uint8)[support]
        return ClassicBlend((x0, y0, x1, y1), pixels, alpha, support, yaw_s, yaw_t, scale,
                            levels, sharp)
