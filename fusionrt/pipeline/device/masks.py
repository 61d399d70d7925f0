"""FaceFusion 3.8.1's face masks on device tensors, for all K faces of a batch at once: the
host module's masks (``host/masks.py``, which cites ``facefusion/face_masker.py``) as torch ops.

OpenCV's kernels, reproduced:
* ``cv2.GaussianBlur(m, (0, 0), sigma)`` on float32: a separable convolution with
  ``cv2.getGaussianKernel(round(8 sigma + 1) | 1, sigma, CV_32F)`` (the kernel OpenCV builds
  for float images) and OpenCV's default border, reflect-101 (any kernel size: the border index
  is folded as ``borderInterpolate`` folds it). Equal to OpenCV within float rounding (~1e-6).
* ``cv2.resize`` INTER_LINEAR: ``F.interpolate(bilinear, align_corners=False,
  antialias=False)`` (OpenCV's linear resize does not antialias when shrinking either).
  Equal for float images (~1e-5); OpenCV's uint8 resize is fixed point, so the occluder's
  input (FaceFusion resizes the uint8 target crop) is rounded here and may differ from OpenCV's
  by one level on some pixels.
* ``cv2.fillConvexPoly(cv2.convexHull(points))`` (LINE_8, shift 0): the hull's edges are the
  point pairs that all points lie left of; the fill is OpenCV's scan line with its 16.16
  fixed-point edge steps from each edge's upper vertex (the last row left to the outline, as
  OpenCV's loop does), the outline OpenCV's 8-connected Bresenham lines drawn left to right
  after its ``clipLine``. Pixel-exact against OpenCV on random hulls, inside and across the
  crop's border (tests/test_masks.py); no host round trip.

So the device masks equal the host masks to float rounding, except the occluder's (one input
level on some pixels; the tests hold both within 2/255). Landmarks are not checked for NaN on
the device (that would be a host sync); the host path checks them.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from ...engines.base import Engine
from ...errors import InputError, ModelError
from ..host.masks import (AREAS, DEFAULT_BLUR, DEFAULT_PADDING, PARSER_CLASSES, REGIONS,
                          SOFTEN_SIGMA, check_model, area_points, check_blur, check_regions,
                          normalize_padding)
from . import require_torch
from .batching import StaticBatches

_KERNELS: dict = {}
FIX = 65536  # OpenCV drawing.cpp XY_ONE: 16.16 fixed point




# -- OpenCV's filters ---------------------------------------------------------------------------

def gaussian_kernel(sigma: float) -> np.ndarray:
    """The 1-D kernel ``cv2.GaussianBlur`` uses on float32 images for ``sigma`` (ksize (0, 0):
    round(sigma * 8 + 1) | 1 taps)."""
    n = int(round(float(sigma) * 8 + 1)) | 1
    return cv2.getGaussianKernel(n, float(sigma), cv2.CV_32F).ravel()


def reflect101(n: int, pad: int) -> np.ndarray:
    """Source index of each of n + 2 pad positions under OpenCV's BORDER_REFLECT_101."""
    idx = np.arange(-pad, n + pad)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.remainder(idx, period)
    return np.where(idx >= n, period - idx, idx)


def blur_matrix(n: int, sigma: float, device):
    """(n, n) float64 ``B`` with ``B @ v`` = OpenCV's 1-D Gaussian pass over a length-n line,
    border folded in (reflect-101), on ``device``, cached."""
    key = (int(n), float(sigma), str(device))
    if key not in _KERNELS:
        k = gaussian_kernel(sigma).astype(np.float64)
        p = k.size // 2
        src = reflect101(n, p)
        b = np.zeros((n, n), np.float64)
        for t, w in enumerate(k):  # output i reads padded position i + t
            np.add.at(b, (np.arange(n), src[t:t + n]), w)
        _KERNELS[key] = require_torch().from_numpy(b).to(device)
    return _KERNELS[key]


def gaussian_blur(x, sigma: float):
    """(K, H, W) float32 -> ``cv2.GaussianBlur(x[k], (0, 0), sigma)`` for every k.

    As two float64 matrix products with the border folded into banded matrices (``B_h x
    B_w^T``), not convolutions: a convolution's shape changes with K, and cuDNN's autotuner
    (on for the engines) would time it again for every new face count; float64 keeps TF32
    out and matches OpenCV's float32 result within its rounding."""
    _, h, w = x.shape
    bh, bw = blur_matrix(h, sigma, x.device), blur_matrix(w, sigma, x.device)
    return (bh @ x.to(bh.dtype) @ bw.T).float()


def resize(x, size: tuple[int, int]):
    """(K, C, H, W) -> (K, C, size) bilinear as ``cv2.resize`` INTER_LINEAR (size = (h, w))."""
    torch = require_torch()
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear",
                                           align_corners=False, antialias=False)


def soften(m):
    """host ``soften`` on (K, S, S): (blur(clip(m, 0, 1), 5).clip(0.5, 1) - 0.5) * 2."""
    return (gaussian_blur(m.clamp(0, 1), SOFTEN_SIGMA).clamp(0.5, 1) - 0.5) * 2


# -- box ---------------------------------------------------------------------------------------

def box_mask_tensor(size: int, blur: float = DEFAULT_BLUR,
                    padding: Sequence[int] = DEFAULT_PADDING, device: Any = "cpu"):
    """host ``box_mask`` (face_masker.py ``create_box_mask``) as a (size, size) tensor."""
    torch = require_torch()
    blur, pad, s = check_blur(blur), normalize_padding(padding), int(size)
    if s < 1:
        raise InputError(f"mask size {size} | expected a positive crop side")
    amount = int(s * 0.5 * blur)
    area = max(amount // 2, 1)
    m = torch.ones((s, s), dtype=torch.float32, device=device)
    m[:max(area, int(s * pad[0] / 100)), :] = 0
    m[-max(area, int(s * pad[2] / 100)):, :] = 0
    m[:, :max(area, int(s * pad[3] / 100))] = 0
    m[:, -max(area, int(s * pad[1] / 100)):] = 0
    return gaussian_blur(m[None], amount * 0.25)[0] if amount > 0 else m


def _check_crops(crops) -> int:
    if crops.dim() != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3] \
            or crops.shape[0] == 0:
        raise InputError(f"mask crops | got shape {tuple(crops.shape)}; expected (K, 3, S, S) "
                         "float BGR crops in [0, 255], K >= 1")
    return int(crops.shape[-1])


# -- occlusion ---------------------------------------------------------------------------------

class DeviceOccluder:
    """host ``Occluder`` on (K, 3, S, S) float BGR crops in [0, 255]: all K through each model
    in ``batching.StaticBatches`` calls of at most ``max_batch`` (''many'' = the minimum over
    the xseg models)."""

    def __init__(self, engine: Engine | Sequence[Engine], max_batch: int = 32,
                 device: Any = "cpu") -> None:
        self.engines = [engine] if isinstance(engine, Engine) else list(engine)
        if not self.engines:
            raise ModelError("occluder | got no engine; expected one or more xseg engines")
        for e in self.engines:
            check_model(e, "occlude", "face occluder (xseg)")
        self.calls = [StaticBatches(e, max_batch, device) for e in self.engines]

    def prepare(self, crops, engine: Engine):
        """(K, h, w, 3) model input: resized, rounded like the uint8 crop FaceFusion resizes,
        / 255, NHWC BGR."""
        w, h = engine.spec.preprocess.size
        x = resize(crops.float(), (h, w)).round().clamp(0, 255) / 255.0
        return x.permute(0, 2, 3, 1).contiguous()

    def raw(self, crops):
        """(K, S, S) minimum over the models of the clipped, resized masks (before ``soften``)."""
        torch = require_torch()
        size, out = _check_crops(crops), None
        for e, calls in zip(self.engines, self.calls):
            w, h = e.spec.preprocess.size
            y = calls.run({e.inputs[0].name: self.prepare(crops, e)})
            if tuple(y.shape) != (crops.shape[0], h, w, 1):
                raise ModelError(f"output '{e.outputs[0].name}' | got shape {tuple(y.shape)}; "
                                 f"expected {(crops.shape[0], h, w, 1)}")
            m = resize(y.clamp(0, 1).permute(0, 3, 1, 2), (size, size))[:, 0]
            out = m if out is None else torch.minimum(out, m)
        return out

    def masks(self, crops):
        """(K, S, S) float32 occlusion masks of K target crops."""
        return soften(self.raw(crops))


# -- region ------------------------------------------------------------------------------------

class DeviceFaceParser:
    """host ``FaceParser`` on (K, 3, S, S) float BGR crops in [0, 255], in
    ``batching.StaticBatches`` calls."""

    def __init__(self, engine: Engine, regions: Iterable[str] | str = tuple(REGIONS),
                 max_batch: int = 32, device: Any = "cpu") -> None:
        check_model(engine, "parse", "face parser (bisenet)")
        self.engine = engine
        self.calls = StaticBatches(engine, max_batch, device)
        self.regions = check_regions(regions)
        self.class_ids = tuple(REGIONS[r] for r in self.regions)
        p = engine.spec.preprocess
        self.mean = tuple(float(v) for v in (np.asarray(p.mean, np.float64) / 255.0)
                          .astype(np.float32))
        self.std = tuple(float(v) for v in (np.asarray(p.std, np.float64) / 255.0)
                         .astype(np.float32))

    def prepare(self, crops):
        """(K, 3, 512, 512): resized (float, as FaceFusion's swapped crop is), RGB, / 255,
        ImageNet mean / std."""
        torch = require_torch()
        _check_crops(crops)
        w, h = self.engine.spec.preprocess.size
        x = resize(crops.float(), (h, w)).flip(1) / 255.0
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()

    def labels(self, crops):
        """(K, 512, 512) class index per pixel."""
        x = self.prepare(crops)
        y = self.calls.run({self.engine.inputs[0].name: x})
        if y.dim() != 4 or y.shape[0] != x.shape[0] or tuple(y.shape[2:]) != tuple(x.shape[2:]) \
                or y.shape[1] < PARSER_CLASSES:
            raise ModelError(f"output '{self.engine.outputs[0].name}' | got shape "
                             f"{tuple(y.shape)}; expected "
                             f"{(x.shape[0], PARSER_CLASSES, *x.shape[2:])}")
        return y.argmax(1)

    def masks(self, crops):
        """(K, S, S) float32 region masks of K swapped crops."""
        torch = require_torch()
        size = _check_crops(crops)
        labels = self.labels(crops)
        ids = torch.tensor(self.class_ids, dtype=labels.dtype, device=labels.device)
        sel = torch.isin(labels, ids).to(torch.float32)
        return soften(resize(sel[:, None], (size, size))[:, 0])


# -- area --------------------------------------------------------------------------------------

def _tdiv(a, b):
    return require_torch().div(a, b, rounding_mode="trunc")


def clip_lines(x1, y1, x2, y2, w: int, h: int):
    """OpenCV drawing.cpp ``clipLine`` on int64 tensors, elementwise (in its order: the first
    end is clipped first and the second end's step uses the moved first end):
    (x1, y1, x2, y2, visible)."""
    torch = require_torch()
    right, bottom = w - 1, h - 1
    f64 = torch.float64

    def code(x, y):
        return (x < 0).long() + (x > right).long() * 2 + (y < 0).long() * 4 \
            + (y > bottom).long() * 8

    def step(num, factor, den):  # (int64)((double)num * factor / den)
        return (num.to(f64) * factor.to(f64) / den.to(f64)).trunc().long()

    c1, c2 = code(x1, y1), code(x2, y2)
    act = ((c1 & c2) == 0) & ((c1 | c2) != 0)
    m = act & ((c1 & 12) != 0)
    a = torch.where(c1 < 8, torch.zeros_like(c1), torch.full_like(c1, bottom))
    x1 = torch.where(m, x1 + step(a - y1, x2 - x1, torch.where(m, y2 - y1, 1)), x1)
    y1 = torch.where(m, a, y1)
    c1 = torch.where(m, (x1 < 0).long() + (x1 > right).long() * 2, c1)
    m = act & ((c2 & 12) != 0)
    a = torch.where(c2 < 8, torch.zeros_like(c2), torch.full_like(c2, bottom))
    x2 = torch.where(m, x2 + step(a - y2, x2 - x1, torch.where(m, y2 - y1, 1)), x2)
    y2 = torch.where(m, a, y2)
    c2 = torch.where(m, (x2 < 0).long() + (x2 > right).long() * 2, c2)
    act = act & ((c1 & c2) == 0) & ((c1 | c2) != 0)
    m = act & (c1 != 0)
    a = torch.where(c1 == 1, torch.zeros_like(c1), torch.full_like(c1, right))
    y1 = torch.where(m, y1 + step(a - x1, y2 - y1, torch.where(m, x2 - x1, 1)), y1)
    x1 = torch.where(m, a, x1)
    c1 = torch.where(m, torch.zeros_like(c1), c1)
    m = act & (c2 != 0)
    a = torch.where(c2 == 1, torch.zeros_like(c2), torch.full_like(c2, right))
    y2 = torch.where(m, y2 + step(a - x2, y2 - y1, torch.where(m, x2 - x1, 1)), y2)
    x2 = torch.where(m, a, x2)
    c2 = torch.where(m, torch.zeros_like(c2), c2)
    return x1, y1, x2, y2, (c1 | c2) == 0


def hull_edges(points):
    """(K, N, 2) int64 -> (i, j, valid) of shape (K, N): the convex hull's directed edges
    (every point on or left of i -> j, collinear points inside the segment; OpenCV's hull drops
    collinear and repeated points, so repeats are skipped), padded to N slots."""
    torch = require_torch()
    k, n = points.shape[:2]
    same = (points[:, :, None, :] == points[:, None, :, :]).all(-1)  # (K, N, N)
    earlier = torch.ones(n, n, dtype=torch.bool, device=points.device).tril(-1)
    repeat = (same & earlier).any(-1)  # a copy of an earlier point
    d = points[:, None, :, :] - points[:, :, None, :]  # (K, i, j, 2) = P_j - P_i
    rel = points[:, None, None, :, :] - points[:, :, None, None, :]  # (K, i, 1, k, 2)
    cross = d[..., 0, None] * rel[..., 1] - d[..., 1, None] * rel[..., 0]  # (K, i, j, k)
    dot = d[..., 0, None] * rel[..., 0] + d[..., 1, None] * rel[..., 1]
    len2 = (d * d).sum(-1)
    edge = ((cross > 0) | ((cross == 0) & (dot >= 0) & (dot <= len2[..., None]))).all(-1)
    edge &= (len2 > 0) & ~repeat[:, :, None] & ~repeat[:, None, :]
    flat = edge.flatten(1)
    order = torch.argsort(flat.to(torch.int8), dim=1, descending=True, stable=True)[:, :n]
    return order // n, order % n, flat.gather(1, order)


def fill_convex_hulls(points, size: int):
    """(K, N, 2) integer crop points -> (K, size, size) float32: ``cv2.fillConvexPoly(m,
    cv2.convexHull(points[k]), 1)`` on zeros for every k (see the module docstring)."""
    torch = require_torch()
    p = points.to(torch.int64)
    k, n = p.shape[:2]
    s, dev = int(size), p.device
    i, j, valid = hull_edges(p)
    count = valid.sum(1)
    pick = lambda idx: p.gather(1, idx[..., None].expand(-1, -1, 2))  # noqa: E731
    a, b = pick(i), pick(j)  # (K, E, 2)
    # a hull of one point is that pixel: a zero-length "edge" at point 0
    alone = (count == 0)[:, None]
    a = torch.cat([a, p[:, :1]], 1)
    b = torch.cat([b, p[:, :1]], 1)
    valid = torch.cat([valid, alone], 1)
    xi, yi, xj, yj = a[..., 0], a[..., 1], b[..., 0], b[..., 1]

    # scan-line fill: per edge, OpenCV's DDA from the upper vertex, rounded (x + 0.5)
    rows = torch.arange(s, device=dev)
    dy = yj - yi
    down = dy > 0
    xu, yu = torch.where(down, xi, xj), torch.where(down, yi, yj)
    xl, yl = torch.where(down, xj, xi), torch.where(down, yj, yi)
    den = torch.where(dy != 0, 2 * (yl - yu), torch.ones_like(dy))
    dxf = _tdiv(2 * (xl - xu) * FIX + (yl - yu), den)
    bound = torch.div(xu[..., None] * FIX + (rows - yu[..., None]) * dxf[..., None] + FIX // 2,
                      FIX, rounding_mode="floor")  # (K, E, S)
    big = 1 << 40
    right = torch.where((valid & down)[..., None], bound, big).amin(1)  # (K, S)
    left = torch.where((valid & (dy < 0))[..., None], bound, -big).amax(1)
    ymin, ymax = p[..., 1].amin(1, keepdim=True), p[..., 1].amax(1, keepdim=True)
    row_ok = (rows >= ymin) & ((rows < ymax) | (ymax > s - 1)) & (count >= 3)[:, None]
    cols = torch.arange(s, device=dev)
    fill = row_ok[..., None] & (cols >= left[..., None]) & (cols <= right[..., None])

    # outline: 8-connected Bresenham of each clipped edge, left to right
    x1, y1, x2, y2, vis = clip_lines(xi, yi, xj, yj, s, s)
    swap = x2 < x1
    x1, y1, x2, y2 = (torch.where(swap, x2, x1), torch.where(swap, y2, y1),
                      torch.where(swap, x1, x2), torch.where(swap, y1, y2))
    ddx, ddy = x2 - x1, y2 - y1
    sy = torch.where(ddy < 0, -1, 1)
    ady = ddy.abs()
    steep = ady > ddx
    major = torch.where(steep, ady, ddx)[..., None]
    minor = torch.where(steep, ddx, ady)[..., None]
    t = torch.arange(s, device=dev)
    off = torch.div(2 * minor * t + major - 1, (2 * major).clamp(min=1), rounding_mode="floor")
    off = torch.where(major > 0, off, torch.zeros_like(off))
    px = torch.where(steep[..., None], x1[..., None] + off, x1[..., None] + t)
    py = torch.where(steep[..., None], y1[..., None] + sy[..., None] * t,
                     y1[..., None] + sy[..., None] * off)
    on = (valid & vis)[..., None] & (t <= major) & (px >= 0) & (px < s) & (py >= 0) & (py < s)
    face = torch.arange(k, device=dev).view(k, 1, 1)
    flat = torch.where(on, face * s * s + py * s + px, torch.full_like(px, k * s * s))
    line = torch.zeros(k * s * s + 1, dtype=torch.float32, device=dev)
    line.scatter_(0, flat.flatten(), 1.0)
    return torch.maximum(fill.to(torch.float32), line[:-1].view(k, s, s))


def area_masks(size: int, landmarks68, areas: Iterable[str] | str = tuple(AREAS)):
    """host ``area_mask`` for K faces: (K, 68, 2) crop landmarks (tensor) -> (K, S, S)."""
    torch = require_torch()
    lm = torch.as_tensor(landmarks68)
    if lm.dim() != 3 or tuple(lm.shape[1:]) != (68, 2):
        raise InputError(f"landmarks68 | got shape {tuple(lm.shape)}; expected (K, 68, 2) crop "
                         "coordinates")
    idx = torch.tensor(area_points(areas), device=lm.device)
    pts = lm[:, idx].to(torch.int64)  # numpy astype(int32): truncation toward zero
    return soften(fill_convex_hulls(pts, size))


def to_crop(landmarks, matrices):
    """(K, N, 2) frame points through (K, 2, 3) frame->crop matrices (``cv2.transform``)."""
    torch = require_torch()
    m = torch.as_tensor(matrices).to(torch.float64)
    pts = torch.as_tensor(landmarks).to(m.device, torch.float64)
    return pts @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]


# -- combination -------------------------------------------------------------------------------

def combine(masks: Sequence[Any]):
    """``numpy.minimum.reduce(masks).clip(0, 1)`` on same-shape tensors ((S, S) or (K, S, S);
    an (S, S) mask broadcasts over K)."""
    torch = require_torch()
    masks = list(masks)
    if not masks:
        raise InputError("masks | got none to combine; expected one or more")
    out = masks[0].float()
    for m in masks[1:]:
        try:
            out = torch.minimum(out, m.float())
        except RuntimeError:
            raise InputError(f"masks | got shapes {[tuple(x.shape) for x in masks]}; expected "
                             "one shape, or (S, S) with (K, S, S)") from None
    return out.clamp(0, 1)
