"""Batched alignment on the device: similarity fits for many faces at once, and aligned crops
with ``affine_grid``/``grid_sample``.

Conventions match OpenCV's ``warpAffine`` (the CPU path): pixel centres at integer coordinates,
bilinear, zeros outside the frame. A (2, 3) matrix ``M`` maps frame pixels to crop pixels, as
``align.estimate_matrix`` returns it.
"""

from __future__ import annotations

from typing import Sequence

from ..host.align import get_template
from . import require_torch
from .frames import to_device


def similarity_batch(src, dst):
    """Least-squares similarity (rotation, uniform scale, translation) from ``src`` (K, P, 2)
    onto ``dst`` (P, 2) or (K, P, 2) → (K, 2, 3), float64.

    In 2-D a rotation with a positive scale is multiplication by one complex number ``a``, so
    the fit is linear: ``a = sum(conj(s) d) / sum(|s|^2)`` on centred points. That is the same
    optimum as Umeyama's SVD solution with its reflection guard (``align.estimate_similarity``,
    whose scale ``(s1 - s2) / var`` is never negative), without a batched SVD.
    """
    torch = require_torch()
    s = src.to(torch.float64)
    d = dst.to(torch.float64).expand_as(s)
    mu_s, mu_d = s.mean(1, keepdim=True), d.mean(1, keepdim=True)
    s0, d0 = s - mu_s, d - mu_d
    # Detected landmarks never coincide; a clamp instead of a check keeps this free of a
    # device→host synchronisation (``align.estimate_similarity`` raises for that case).
    var = (s0 ** 2).sum((1, 2)).clamp_min(1e-12)
    re = (s0[..., 0] * d0[..., 0] + s0[..., 1] * d0[..., 1]).sum(1) / var
    im = (s0[..., 0] * d0[..., 1] - s0[..., 1] * d0[..., 0]).sum(1) / var
    a = torch.stack([torch.stack([re, -im], 1), torch.stack([im, re], 1)], 1)  # (K, 2, 2)
    t = mu_d[:, 0] - (a @ mu_s[:, 0, :, None])[..., 0]
    return torch.cat([a, t[..., None]], 2)


def template_points(template, size: int, device):
    """The named template's 5 points at ``size`` as a (5, 2) float64 device tensor."""
    torch = require_torch()
    return to_device(get_template(template).at(size), device, torch.float64)


def invert_affine(m):
    """(K, 2, 3) → (K, 2, 3) inverse affine maps, in closed form (``torch.linalg.inv`` checks
    its result on the host: a synchronisation per call)."""
    torch = require_torch()
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    tx, ty = m[:, 0, 2], m[:, 1, 2]
    return torch.stack([torch.stack([ia, ib, -(ia * tx + ib * ty)], 1),
                        torch.stack([ic, id_, -(ic * tx + id_ * ty)], 1)], 1)


def sampling_theta(out_to_in, in_hw: tuple[int, int], out_hw: tuple[int, int]):
    """``affine_grid`` theta for an output image whose pixel p samples the input at
    ``out_to_in`` · p (both in pixels) → (K, 2, 3) float32.

    grid_sample's coordinates (align_corners=False) are n = s·p + o per axis with
    s = 2 / size and o = 1 / size - 1, so theta = N_in · out_to_in · N_out⁻¹, written out
    with Python scalars (no constant tensors to copy to the device)."""
    torch = require_torch()
    (h_in, w_in), (h_out, w_out) = in_hw, out_hw
    s_in, o_in = (2.0 / w_in, 2.0 / h_in), (1.0 / w_in - 1.0, 1.0 / h_in - 1.0)
    s_out, o_out = (2.0 / w_out, 2.0 / h_out), (1.0 / w_out - 1.0, 1.0 / h_out - 1.0)
    a = out_to_in
    rows = []
    for i in range(2):
        lin = [a[:, i, j] * (s_in[i] / s_out[j]) for j in range(2)]
        shift = a[:, i, 2] - a[:, i, 0] * (o_out[0] / s_out[0]) - a[:, i, 1] * (o_out[1] / s_out[1])
        rows.append(torch.stack(lin + [shift * s_in[i] + o_in[i]], 1))
    return torch.stack(rows, 1).to(torch.float32)


def slot_layout(frame_idx: Sequence[int]) -> tuple[list[int], int]:
    """Per face its slot within its frame (0 for the first face of a frame, 1 for the next…)
    and the number of slots: faces of one slot touch each frame at most once."""
    seen: dict[int, int] = {}
    slots = []
    for f in frame_idx:
        slots.append(seen.get(f, 0))
        seen[f] = slots[-1] + 1
    return slots, max(seen.values(), default=0)


def crop_faces(frames, frame_idx: Sequence[int], matrices, size: int, round_values: bool = True):
    """Aligned ``size``×``size`` crops of K faces from a batch of frames.

    Args:
        frames: (N, C, H, W) float.
        frame_idx: batch index of each face (host ints).
        matrices: (K, 2, 3) frame→crop pixel maps.
        round_values: round like a uint8 ``warpAffine`` result, so generators see what the CPU
            path feeds them.

    One ``grid_sample`` over the batch: face k's grid sits in rows slot·size… of its frame's
    grid and the unused slots point outside the frame; no frame is copied per face.
    """
    torch = require_torch()
    F = torch.nn.functional
    n, c, h, w = frames.shape
    k = len(frame_idx)
    if k == 0:
        return frames.new_zeros((0, c, size, size))
    slots, n_slots = slot_layout(frame_idx)
    theta = sampling_theta(invert_affine(matrices), (h, w), (size, size))
    grids = F.affine_grid(theta, [k, c, size, size], align_corners=False)
    big = frames.new_full((n, n_slots, size, size, 2), 4.0)  # 4.0: outside [-1, 1] → zeros
    fi = to_device(list(frame_idx), frames.device)
    si = to_device(slots, frames.device)
    big[fi, si] = grids
    out = F.grid_sample(frames, big.view(n, n_slots * size, size, 2), mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    crops = out.view(n, c, n_slots, size, size)[fi, :, si]
    return crops.round().clamp(0, 255) if round_values else crops


def implode_tiles(crops, total: int):
    """(K, C, B, B) → (K * total², C, B / total, B / total): FaceFusion's pixel-boost tiles,
    tile i·total + j holding pixels (y·total + i, x·total + j) (``host.swap.implode_pixel_boost``
    on tensors)."""
    k, c, b = crops.shape[0], crops.shape[1], crops.shape[2]
    s = b // total
    t = crops.reshape(k, c, s, total, s, total).permute(0, 3, 5, 1, 2, 4)
    return t.reshape(k * total * total, c, s, s)


def explode_tiles(tiles, total: int):
    """The inverse of ``implode_tiles``."""
    n, c, s = tiles.shape[0], tiles.shape[1], tiles.shape[2]
    k = n // (total * total)
    t = tiles.reshape(k, total, total, c, s, s).permute(0, 3, 4, 1, 5, 2)
    return t.reshape(k, c, s * total, s * total)
