"""Weight-free building blocks of the classic swapper (classic.py): pose from 5 landmarks, a
landmark-shaped face mask, colour/shading transfer measured inside the face only, sharpness
matching and multi-band (Laplacian pyramid) blending.

Everything works on a frame rectangle (ROI) around the target face, in float32; nothing here
knows about swappers or SwapResults. Landmark order: left eye, right eye, nose, left mouth
corner, right mouth corner (image left/right, as RetinaFace gives them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# -- pose ------------------------------------------------------------------------------------

# Depth of the nose tip in front of the eyes, over half the inter-ocular distance, on a mean
# adult head (pupils ~63 mm apart, nose tip ~25-28 mm in front of the corneas, mouth corners a
# few mm behind them): the nose's offset from the eye-mouth midline is K·tan(yaw) half-IODs.
NOSE_DEPTH_RATIO = 0.88
# Beyond this |yaw| a similarity warp cannot map one face onto the other (the far cheek is
# hidden, the near one stretched): the classic swapper leaves the face unchanged.
POSE_LIMIT_DEG = 45.0


@dataclass(frozen=True)
class FaceFrame:
    """A face's own axes from its 5 landmarks: ``origin`` the eye midpoint, ``eye`` the
    left→right eye vector, ``down`` the eye-midpoint→mouth-midpoint vector, ``nose_offset`` the
    nose tip's signed distance (pixels, along the eye line) from that midline."""

    origin: np.ndarray
    eye: np.ndarray
    down: np.ndarray
    nose_offset: float

    @property
    def iod(self) -> float:
        return float(np.hypot(*self.eye))


def face_frame(landmarks: np.ndarray) -> FaceFrame:
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    le, re, nose, lmo, rmo = lm
    origin = (le + re) / 2
    eye = re - le
    down = (lmo + rmo) / 2 - origin
    iod = float(np.hypot(*eye))
    if iod < 1e-6:
        return FaceFrame(origin, eye, down, float("inf"))
    u = eye / iod
    v = np.array([-u[1], u[0]])
    dv = float(down @ v)
    t = float((nose - origin) @ v) / dv if abs(dv) > 1e-6 else 0.0
    mid = origin + t * down  # the eye-mouth midline at the nose's height
    return FaceFrame(origin, eye, down, float((nose - mid) @ u))


def estimate_yaw(landmarks: np.ndarray) -> float:
    """Yaw in degrees from 5 landmarks (0 frontal, sign: the nose points to image +x).

    The nose tip stands in front of the eye/mouth plane, so turning the head moves it off the
    eye-mouth midline by ``NOSE_DEPTH_RATIO``·tan(yaw) half inter-ocular distances (roll and
    pitch do not move it along the eye line). Accurate to ~±10° on real faces (head shapes
    vary); collapsed eyes (a profile) read as ±90°."""
    f = face_frame(landmarks)
    iod = f.iod
    if not math.isfinite(f.nose_offset) or iod < 1e-6:
        return 90.0
    ratio = f.nose_offset / (iod / 2)
    return math.degrees(math.atan2(ratio, NOSE_DEPTH_RATIO))


# -- face mask -------------------------------------------------------------------------------

# The face hull from 5 points, in the face's own axes: x in inter-ocular distances along the
# eye line from the eye midpoint, y in eye→mouth distances downwards, z an estimated depth (mm,
# + towards the camera, eyes at 0) that shifts the point sideways with yaw as much as the nose
# is shifted (z / 26 mm of the nose offset). Above the brows, inside the cheeks' edge, above
# the chin's tip: the band that is the same skin on every face, so neither face's hair or
# background comes in. Checked on both example photos (docs/images/classic_before_after.png).
NOSE_DEPTH_MM = 26.0
HULL_5 = np.array([
    (0.00, -0.60, 8), (0.32, -0.57, 6), (0.62, -0.46, -4), (0.90, -0.18, -15),
    (0.92, 0.30, -20), (0.86, 0.85, -20), (0.66, 1.28, -10), (0.32, 1.55, 0), (0.00, 1.61, 0),
    (-0.32, 1.55, 0), (-0.66, 1.28, -10), (-0.86, 0.85, -20), (-0.92, 0.30, -20),
    (-0.90, -0.18, -15), (-0.62, -0.46, -4), (-0.32, -0.57, 6)], np.float64)


def hull_from_5(landmarks: np.ndarray) -> np.ndarray:
    """(16, 2) frame-pixel polygon of the inner face, estimated from 5 landmarks."""
    f = face_frame(landmarks)
    iod = max(f.iod, 1e-6)
    u = f.eye / iod
    off = f.nose_offset if math.isfinite(f.nose_offset) else 0.0
    x, y, z = HULL_5.T
    pts = f.origin + x[:, None] * f.eye + y[:, None] * f.down
    return pts + ((z / NOSE_DEPTH_MM) * off)[:, None] * u


def hull_from_68(landmarks68: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
    """Polygon from iBUG-68 points: the jaw line (0-16) and the brows (17-26) raised by a
    quarter inter-ocular distance so the brows are inside (68-point brows mark their middle)."""
    p = np.asarray(landmarks68, np.float64).reshape(68, 2)
    f = face_frame(landmarks5)
    iod = max(f.iod, 1e-6)
    u = f.eye / iod
    up = -np.array([-u[1], u[0]])
    brows = p[17:27] + 0.25 * iod * up
    hull = cv2.convexHull(np.concatenate([p[:17], brows]).astype(np.float32))
    return hull[:, 0].astype(np.float64)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def signed_distance(region: np.ndarray) -> np.ndarray:
    """Pixels to the edge of a binary region: + inside, - outside (±0.5 at the edge)."""
    r = (np.asarray(region) > 0).astype(np.uint8)
    d_in = cv2.distanceTransform(r, cv2.DIST_L2, 5)
    d_out = cv2.distanceTransform(1 - r, cv2.DIST_L2, 5)
    return np.where(r > 0, d_in - 0.5, 0.5 - d_out).astype(np.float32)


def region_alpha(region: np.ndarray, falloff: float, inset: float = 0.0) -> np.ndarray:
    """Soft mask from a binary region: smoothstep of the signed distance to its edge, 0.5 at
    ``inset`` pixels inside the edge, rising from 0 to 1 over ``falloff`` pixels (so with
    ``inset`` 0 the support reaches falloff/2 outside the region; with ``inset`` falloff/2 it
    ends at the region's edge)."""
    sd = signed_distance(region)
    a = smoothstep(0.5 + (sd - inset) / max(falloff, 1e-3)).astype(np.float32)
    a[a < 1e-3] = 0
    return a


def fill_polygon(shape: tuple[int, int], poly: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """uint8 {0,1} of ``shape`` with the polygon (frame pixels) filled, ROI origin ``offset``;
    8× sub-pixel precision."""
    m = np.zeros(shape, np.uint8)
    pts = np.round((np.asarray(poly, np.float64) - offset) * 8).astype(np.int32)
    cv2.fillPoly(m, [pts], 1, cv2.LINE_8, shift=3)
    return m


# -- colour and shading ----------------------------------------------------------------------

def to_lab(bgr: np.ndarray) -> np.ndarray:
    """uint8/float BGR (0-255) → float32 LAB (L 0-100, a/b about ±127): no 8-bit rounding."""
    return cv2.cvtColor(np.asarray(bgr, np.float32) / 255.0, cv2.COLOR_BGR2LAB)


def from_lab(lab: np.ndarray) -> np.ndarray:
    """float32 LAB → float32 BGR 0-255 (not rounded)."""
    return cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2BGR) * 255.0


def masked_lowpass(img: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of ``img`` using only pixels where ``weight`` > 0 (normalised
    convolution: blur(img·w) / blur(w)); far from any weight it tends to the weighted mean,
    so hair and background never enter."""
    w = np.asarray(weight, np.float32)
    x = img.astype(np.float32)
    ww = w if x.ndim == 2 else w[..., None]
    tot = float(w.sum())
    mean = (x * ww).sum((0, 1)) / tot if tot > 0 else x.mean((0, 1))
    h, wd = w.shape[:2]
    f = min(1.0, 4.0 / sigma) if sigma > 4 else 1.0  # a wide blur is done small: same result

    def blur(z):
        if f < 1:
            small = cv2.resize(z, (max(1, round(wd * f)), max(1, round(h * f))),
                               interpolation=cv2.INTER_AREA)
            small = cv2.GaussianBlur(small, (0, 0), sigma * f, borderType=cv2.BORDER_CONSTANT)
            return cv2.resize(small, (wd, h), interpolation=cv2.INTER_LINEAR)
        return cv2.GaussianBlur(z, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    num, den = blur(x * ww), blur(w)
    if x.ndim == 3:
        den = den[..., None]
    eps = 1e-2
    return (num + eps * mean) / (den + eps)


SKIN_TOL_MIN = (10.0, 4.0, 4.0)   # LAB tolerance around the skin median, at least ...
SKIN_TOL_MAX = (25.0, 12.0, 12.0)  # ... and at most (shading spans ~±20 L on a lit face)


def skin(lab: np.ndarray, inner: np.ndarray, region: np.ndarray | None = None,
         k: float = 2.5, shading_sigma: float | None = None) -> np.ndarray:
    """Pixels of ``region`` (default ``inner``) whose LAB colour is within ``k`` robust
    standard deviations (1.4826·MAD, clamped to ``SKIN_TOL_MIN``..``SKIN_TOL_MAX``) of the
    inner face's median: the skin, without glasses frames, eyes, brows, lips, hair or
    background (the clamp keeps a face with many dark pixels from widening it past them).

    With ``shading_sigma`` the lightness is judged against its own low-pass over the inner
    face (that sigma): a cheek in shadow is still skin, a dark frame on a lit cheek is not."""
    sel = np.asarray(inner) > 0
    reg = sel if region is None else np.asarray(region) > 0
    if sel.sum() < 16:
        return reg
    if shading_sigma:
        lab = lab.copy()
        lab[..., 0] -= masked_lowpass(lab[..., 0], sel.astype(np.float32), shading_sigma)
    px = _sample(lab[sel])
    med = np.median(px, 0)
    tol = np.clip(k * 1.4826 * np.median(np.abs(px - med), 0), SKIN_TOL_MIN, SKIN_TOL_MAX)
    return reg & (np.abs(lab - med) <= tol).all(-1)


DETAIL_RATIO = (0.1, 3.0)  # source lightness over its skin shading: pupils ~0.15, highlights ~1.4


def transfer_color(src_lab: np.ndarray, tgt_lab: np.ndarray, inner: np.ndarray,
                   shading_sigma: float, region: np.ndarray | None = None,
                   std_clamp: tuple[float, float] = (0.6, 1.6)) -> np.ndarray:
    """Make the source's skin the target's, from the skin (``skin``) of each face only.

    * a/b (chroma): per-channel mean/std (Reinhard) over each face's skin inside ``inner``,
      the std ratio clamped to ``std_clamp``: an unclamped ratio blows up across skin tones
      (a low-chroma face onto a saturated one multiplies noise into blotches), and glasses,
      lips or background in the statistics pull the mean off the skin.
    * L (lightness): the target's low-pass skin shading times the source's detail relative
      to its own: ``L = L_src / lowpass(L_src) * lowpass(L_tgt)`` (ratio clamped to
      ``DETAIL_RATIO``; a ratio, so a darker face's detail keeps its relative contrast on a
      lighter one), each low-pass over that face's skin in
      ``region`` (default ``inner``; pass the whole mask support so the shading at the mask's
      edge is the target's there), so the source's lighting and brightness do not come along
      and the target's dark glasses or brows do not darken the source's skin.
    """
    sel = np.asarray(inner) > 0
    out = src_lab.astype(np.float32).copy()
    if sel.sum() < 16:
        return out
    reg = sel if region is None else np.asarray(region) > 0
    skin_s = skin(src_lab, sel, reg, shading_sigma=2 * shading_sigma)
    skin_t = skin(tgt_lab, sel, reg, shading_sigma=2 * shading_sigma)
    in_s, in_t = skin_s & sel, skin_t & sel
    if in_s.sum() < 16 or in_t.sum() < 16:
        in_s = in_t = skin_s = skin_t = sel
    for c in (1, 2):
        ms, ss = src_lab[in_s, c].mean(), src_lab[in_s, c].std() + 1e-3
        mt, st = tgt_lab[in_t, c].mean(), tgt_lab[in_t, c].std() + 1e-3
        ratio = float(np.clip(st / ss, *std_clamp))
        out[..., c] = (src_lab[..., c] - ms) * ratio + mt
    lp_s = masked_lowpass(src_lab[..., 0], skin_s.astype(np.float32), shading_sigma)
    lp_t = masked_lowpass(tgt_lab[..., 0], skin_t.astype(np.float32), shading_sigma)
    detail = np.clip(src_lab[..., 0] / np.maximum(lp_s, 1.0), *DETAIL_RATIO)
    out[..., 0] = np.clip(detail * lp_t, 0, 100)
    return out


# -- sharpness -------------------------------------------------------------------------------

def hf_energy(gray: np.ndarray, weight: np.ndarray | None = None) -> float:
    """RMS of the 3×3 Laplacian (high-frequency energy), weighted by ``weight``."""
    lap = cv2.Laplacian(np.asarray(gray, np.float32), cv2.CV_32F, ksize=3)
    if weight is None:
        return float(np.sqrt((lap ** 2).mean()))
    w = np.asarray(weight, np.float32)
    # the Laplacian at the weight's edge sees outside pixels: measure one pixel inside it
    w = cv2.erode(w, np.ones((3, 3), np.uint8))
    tot = float(w.sum())
    return float(np.sqrt((lap ** 2 * w).sum() / tot)) if tot > 0 else 0.0


@dataclass(frozen=True)
class SharpnessMatch:
    before: float  # source HF energy
    target: float  # target HF energy
    after: float
    amount: float  # unsharp amount used (0: none)
    blur: float    # Gaussian sigma used (0: none)


def match_sharpness(gray: np.ndarray, target_energy: float, weight: np.ndarray, *,
                    radius: float = 1.0, max_amount: float = 2.5, max_blur: float = 2.0,
                    tolerance: float = 0.05) -> tuple[np.ndarray, SharpnessMatch]:
    """Unsharp-mask (a soft, upsampled source) or blur (a crisper source than the target)
    ``gray`` until its HF energy inside ``weight`` matches ``target_energy``, within the caps.

    Both are monotone in their parameter, so 14 bisection steps find it; deterministic."""
    g = np.asarray(gray, np.float32)
    e0 = hf_energy(g, weight)
    if target_energy <= 0 or e0 <= 0 or abs(e0 / target_energy - 1) <= tolerance:
        return g, SharpnessMatch(e0, target_energy, e0, 0.0, 0.0)
    if e0 < target_energy:
        detail = g - cv2.GaussianBlur(g, (0, 0), radius)
        f = lambda k: g + k * detail  # noqa: E731
        lo, hi = 0.0, max_amount
        if hf_energy(f(hi), weight) <= target_energy:
            lo = hi
        else:
            for _ in range(14):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if hf_energy(f(mid), weight) < target_energy else (lo, mid)
        out = f(lo)
        return out, SharpnessMatch(e0, target_energy, hf_energy(out, weight), lo, 0.0)
    f = lambda s: cv2.GaussianBlur(g, (0, 0), s) if s > 0.05 else g  # noqa: E731
    lo, hi = 0.0, max_blur
    if hf_energy(f(hi), weight) >= target_energy:
        lo = hi
    else:
        for _ in range(14):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if hf_energy(f(mid), weight) > target_energy else (lo, mid)
    out = f(lo)
    return out, SharpnessMatch(e0, target_energy, hf_energy(out, weight), 0.0, lo)


# -- multi-band blending ---------------------------------------------------------------------

def pyramid_levels(shape: tuple[int, int], band: float, max_levels: int = 6) -> int:
    """How many pyramid levels: the coarsest band is ~2^levels px across, which should stay
    about ``band`` px (a fraction of the face); the ROI must stay >= 8 px there."""
    side = min(shape[:2])
    if side < 16:
        return 0
    n = int(math.floor(math.log2(max(band, 1.0))))
    return max(0, min(n, max_levels, int(math.floor(math.log2(side / 8)))))


def band_masks(alpha: np.ndarray, falloff: float, levels: int, spread: float = 2.5
               ) -> list[np.ndarray]:
    """One full-resolution mask per band of ``multiband_blend`` (``levels`` + 1), all with
    ``alpha``'s support: band k ramps from 0 at the support's edge to 1 over
    max(``falloff``, ``spread``·2^k) px inwards, so band 0 (fine detail) uses ``alpha``
    itself and coarse bands fade in over a wider strip, inside the face, never past it.

    ``alpha`` must be a ``region_alpha(region, falloff)`` (support edge falloff/2 outside the
    region: its signed distance is recovered from it)."""
    a = np.asarray(alpha, np.float32)
    if levels <= 0:
        return [a]
    support = a > 0
    # distance inwards from the support's edge
    d = cv2.distanceTransform(support.astype(np.uint8), cv2.DIST_L2, 5)
    masks = [a]
    for k in range(1, levels + 1):
        w = max(falloff, spread * (1 << k))
        m = smoothstep(d / w).astype(np.float32)
        m[~support] = 0
        masks.append(np.minimum(m, np.where(support, 1.0, 0.0)).astype(np.float32))
    return masks


def laplacian_bands(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid of ``img`` (cv2.pyrDown), each band at full resolution:
    band k = P_k - P_(k+1) with P_k the Gaussian level k brought back up (P_0 = ``img``),
    then the low-pass residual P_levels. They telescope: the bands sum to ``img`` exactly
    (whatever the upsampling), so an all-ones mask set returns the foreground unchanged.
    Upsampling is one bicubic resize per level, not k pyrUps: same smoothness, a fraction of
    the cost on a large face."""
    x = img.astype(np.float32)
    h, w = x.shape[:2]
    g, ups = x, [x]
    for _ in range(levels):
        g = cv2.pyrDown(g)
        ups.append(cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC))
    return [ups[k] - ups[k + 1] for k in range(levels)] + [ups[levels]]


def multiband_blend(fg: np.ndarray, bg: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Multi-band blend (Burt & Adelson 1983) of ``fg`` into ``bg``: the difference
    fg - bg split into Laplacian bands (``laplacian_bands``, ``len(masks) - 1`` levels),
    band k weighted by ``masks[k]``, added to ``bg``. Fine detail switches over the first
    mask's short falloff (no half-transparent ghosts), shading over the wider coarse masks.

    Unlike the textbook version (Gaussian pyramid of one mask, which spreads the coarse bands
    past the mask), each band's mask is given at full resolution: with masks that are 0
    somewhere (``band_masks``), the output there is ``bg`` exactly. With one mask for every
    band it is exactly the alpha blend (the bands sum to fg - bg). float32 (h, w, c) out."""
    f, b = fg.astype(np.float32), bg.astype(np.float32)
    bands = laplacian_bands(f - b, len(masks) - 1)
    out = b.copy()
    for band, m in zip(bands, masks):
        out += band * (m[..., None] if band.ndim == 3 else m)
    return out


def _sample(px: np.ndarray, n: int = 40000) -> np.ndarray:
    """At most ``n`` rows of ``px``, evenly strided (medians of a big face need not see all)."""
    step = max(1, len(px) // n)
    return px[::step]
