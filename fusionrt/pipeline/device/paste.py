"""Paste-back on the device: inverse warp of the generated crops, feathered mask, colour transfer.

Semantics of ``pipeline.paste.paste_back`` (the CPU path): the crop is warped back with the
inverse of the frame→crop matrix (bilinear, edge-replicated), the mask with zeros outside, and
``round(face · a + frame · (1 - a))`` is written where a > 0; faces of one frame are pasted one
after another, each on the previous result. Where a = 0 the frame keeps its exact values.

Colour transfer (Reinhard, LAB mean/std), when asked for, runs in frame space as on the CPU
path: the warped face's statistics are matched to the frame's where the warped mask > 0.5.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import require_torch
from .frames import const, to_device
from .warp import invert_affine, sampling_theta, similarity_batch, slot_layout

# sRGB (D65) → XYZ, OpenCV's constants for COLOR_BGR2Lab on 8-bit images.
_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169),
                 (0.019334, 0.119193, 0.950227))
_RGB_FROM_XYZ = tuple(tuple(float(v) for v in r) for r in np.linalg.inv(_XYZ_FROM_RGB))
_WHITE = (0.950456, 1.0, 1.088754)
_EPS = 0.008856


def paste_boxes(matrices, size: int, height: int, width: int) -> np.ndarray:
    """Frame pixels each pasted crop can touch: (K, 4) int ``x0, y0, x1, y1`` (end exclusive),
    clipped to the frame, from frame→crop ``matrices`` (a host tensor or array; a device tensor
    is read back, which synchronises).

    A bilinear sample of the mask (zeros outside) is non-zero only at crop coordinates in
    (-1, size), so the box bounds those four corners mapped into the frame, one pixel wider.
    Outside it the paste weight is 0 and the frame keeps its exact values."""
    torch = require_torch()
    m = torch.as_tensor(np.asarray(matrices.detach().cpu() if hasattr(matrices, "detach")
                                   else matrices, np.float64)).reshape(-1, 2, 3)
    inv = invert_affine(m).numpy()  # crop→frame; a singular fit gives inf / nan
    corners = np.array([[-1.0, -1.0], [size, -1.0], [-1.0, size], [size, size]])
    with np.errstate(all="ignore"):
        pts = np.einsum("kij,cj->kci", inv[:, :, :2], corners) + inv[:, None, :, 2]  # (K, 4, 2)
        lo = np.floor(pts.min(1)) - 1
        hi = np.ceil(pts.max(1)) + 2
    lo = np.nan_to_num(lo, nan=0.0, posinf=0.0, neginf=0.0)  # a degenerate fit: whole frame
    hi = np.nan_to_num(hi, nan=1e9, posinf=1e9, neginf=1e9)
    box = np.stack([lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]], 1)
    return np.clip(box, 0, [width, height, width, height]).astype(np.int64)


def fit_on_host(landmarks, template, size: int, height: int, width: int, device):
    """Similarity fits of K faces' 5 points (host array) onto ``template`` (a CPU tensor), made
    on the host where the landmarks are → (frame→crop matrices on ``device``, their
    ``paste_boxes``): the paste windows need no read-back, the upload no stream sync."""
    torch = require_torch()
    host = similarity_batch(torch.as_tensor(np.asarray(landmarks), dtype=torch.float64), template)
    return (to_device(host.numpy(), device), paste_boxes(host, size, height, width))


def paste_faces(frames, crops, matrices, frame_idx: Sequence[int], mask,
                color: bool = False, boxes: np.ndarray | None = None):
    """Blend K crops back into their frames, in place.

    Args:
        frames: (N, 3, H, W) float BGR in [0, 255]; changed in place.
        crops: (K, 3, S, S) float BGR in [0, 255], the generated faces.
        matrices: (K, 2, 3) frame→crop maps the crops were made with.
        frame_idx: batch index of each face (host ints).
        mask: (S, S) weights in [0, 1] for every face, or (K, S, S): one per face.
        color: colour-transfer each warped face to its frame first (``paste_back``'s
            ``color_transfer``).
        boxes: ``paste_boxes(matrices, S, H, W)`` when the caller has the matrices on the host
            (no synchronisation); else computed here from ``matrices``.

    Only a window around each face is sampled and blended, not the whole frame (a 1080p frame
    per face was most of the paste's time): every face of a call gets a window of one size,
    the largest box of the call, placed over its box inside the frame.

    Returns:
        (N, 1, H, W) union of the pasted weights (0 where the frame is untouched).
    """
    torch = require_torch()
    F = torch.nn.functional
    n, _, h, w = frames.shape
    union = frames.new_zeros((n, 1, h, w))
    k, size = crops.shape[0], crops.shape[-1]
    if k == 0:
        return union
    box = paste_boxes(matrices, size, h, w) if boxes is None else np.asarray(boxes, np.int64)
    rw = max(int((box[:, 2] - box[:, 0]).max()), 1)
    rh = max(int((box[:, 3] - box[:, 1]).max()), 1)
    x0 = np.clip(box[:, 0], 0, w - rw)
    y0 = np.clip(box[:, 1], 0, h - rh)
    # the window's pixel q is frame pixel q + (x0, y0): crop = A q + (A (x0, y0) + t)
    m64 = matrices.to(torch.float64)
    off = to_device(np.stack([x0, y0], 1).astype(np.float64), frames.device, torch.float64)
    shifted = torch.cat([m64[:, :, :2], (m64[:, :, 2] + (m64[:, :, :2] @ off[:, :, None])[..., 0])
                         [..., None]], 2)
    theta = sampling_theta(shifted, (size, size), (rh, rw))
    m = (mask if mask.dim() == 3 else mask[None]).to(frames.dtype)[:, None].expand(k, 1, size, size)
    rows_all = to_device(y0, frames.device)[:, None] + torch.arange(rh, device=frames.device)
    cols_all = to_device(x0, frames.device)[:, None] + torch.arange(rw, device=frames.device)
    slots, n_slots = slot_layout(frame_idx)
    for s in range(n_slots):  # faces of one slot hit distinct frames: one batched pass each
        sel = [i for i in range(k) if slots[i] == s]
        fi = to_device([frame_idx[i] for i in sel], frames.device)[:, None, None]
        si = to_device(sel, frames.device)
        rows, cols = rows_all[si][:, :, None], cols_all[si][:, None, :]
        grid = F.affine_grid(theta[si], [len(sel), 1, rh, rw], align_corners=False)
        face = F.grid_sample(crops[si], grid, mode="bilinear", padding_mode="border",
                             align_corners=False)
        a = F.grid_sample(m[si], grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False).clamp_(0.0, 1.0)
        base = frames[fi, :, rows, cols].permute(0, 3, 1, 2)  # (k, 3, rh, rw)
        if color:
            face = color_transfer(face.round(), base, a)
        out = torch.round(face * a + base * (1.0 - a)).clamp_(0.0, 255.0)
        frames[fi, :, rows, cols] = out.permute(0, 2, 3, 1)
        union[fi, 0, rows, cols] = torch.maximum(union[fi, 0, rows, cols], a[:, 0])
    return union


# -- colour transfer --------------------------------------------------------------------------

def _f(t):
    torch = require_torch()
    return torch.where(t > _EPS, t.clamp(min=1e-12) ** (1.0 / 3.0), 7.787 * t + 16.0 / 116.0)


def _f_inv(t):
    torch = require_torch()
    return torch.where(t > 6.0 / 29.0, t ** 3, (t - 16.0 / 116.0) / 7.787)


def bgr_to_lab(bgr):
    """(K, 3, h, w) BGR in [0, 255] → LAB in OpenCV's 8-bit scaling (L·255/100, a+128, b+128)."""
    torch = require_torch()
    c = bgr.flip(1) / 255.0
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,kjhw->kihw", const(_XYZ_FROM_RGB, bgr), lin)
    xyz = xyz / const(_WHITE, bgr).view(1, 3, 1, 1)
    fx, fy, fz = _f(xyz).unbind(1)
    y = xyz[:, 1]
    light = torch.where(y > _EPS, 116.0 * fy - 16.0, 903.3 * y)
    return torch.stack([light * 255.0 / 100.0, 500.0 * (fx - fy) + 128.0,
                        200.0 * (fy - fz) + 128.0], 1)


def lab_to_bgr(lab):
    """Inverse of ``bgr_to_lab`` → BGR in [0, 255] (not clipped)."""
    torch = require_torch()
    light, a, b = lab[:, 0] * 100.0 / 255.0, lab[:, 1] - 128.0, lab[:, 2] - 128.0
    fy = (light + 16.0) / 116.0
    xyz = torch.stack([_f_inv(fy + a / 500.0), _f_inv(fy), _f_inv(fy - b / 200.0)], 1)
    xyz = xyz * const(_WHITE, lab).view(1, 3, 1, 1)
    lin = torch.einsum("ij,kjhw->kihw", const(_RGB_FROM_XYZ, lab), xyz).clamp(0.0, 1.0)
    c = torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1.0 / 2.4) - 0.055)
    return (c * 255.0).flip(1)


def color_transfer(src, ref, mask):
    """Match each ``src`` image's LAB mean/std to its ``ref``'s, measured where ``mask``
    ((K, 1, h, w) or (h, w)) > 0.5 → BGR in [0, 255], rounded as the CPU path's uint8 result.
    Images with fewer than 16 such pixels are returned unchanged (as on the CPU path)."""
    sel = (mask > 0.5).to(src.dtype).expand(src.shape[0], 1, *src.shape[2:])
    n = sel.sum((2, 3), keepdim=True)
    # cv2 converts to uint8 LAB before the statistics are taken: so does this
    s = bgr_to_lab(src).round().clamp(0, 255)
    r = bgr_to_lab(ref).round().clamp(0, 255)

    def stats(x):
        mu = (x * sel).sum((2, 3), keepdim=True) / n.clamp(min=1)
        var = (((x - mu) ** 2) * sel).sum((2, 3), keepdim=True) / n.clamp(min=1)
        return mu, var.sqrt() + 1e-6

    (ms, ss), (mr, sr) = stats(s), stats(r)
    out = ((s - ms) * (sr / ss) + mr).clamp(0, 255).floor()  # numpy astype(uint8) truncates
    out = lab_to_bgr(out).round().clamp(0, 255)
    return out.where(n >= 16, src)
