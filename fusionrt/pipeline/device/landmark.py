"""The landmark stage on device tensors: FaceFusion's 2dfan4 pre/post (``host/landmark.py``,
which cites it) for every face of a batch in one engine call, frames staying on the device.

The crops are two batched ``grid_sample`` warps (box translation, then the upright turn, which
for multiples of 90 degrees samples whole pixels: an exact permutation). FaceFusion's
``conditional_optimize_contrast`` is a round trip through OpenCV's 8-bit Lab, which moves
~41 % of the pixels of a photo by 1-14 levels; it is a pure function of each pixel's three
bytes, so it runs here as one lookup in a 2^24-entry table made with OpenCV itself (64 MiB on the
device, built once per process in ~1.5 s), exact. The table also holds the Lab L byte, so the
"dark crop" test is exact too; a dark crop (mean L < 30, rare) gets FaceFusion's CLAHE on the
host. Host round trips: the per-crop mean L (K floats) and the result, (K, 68, 2) points and
(K, 68) heatmap maxima; the faces are host dataclasses.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import cv2
import numpy as np

from ...engines.base import Engine
from ...errors import InputError
from ..host.landmark import (DARK_L, LANDMARKER_SCORE, Landmarker, check_faces,
                             check_output_shapes, face_angle, optimize_contrast, rotation_matrix,
                             translation_matrix)
from ..types import Face
from . import require_torch
from .frames import to_device
from .warp import crop_faces


@lru_cache(maxsize=1)
def contrast_table() -> np.ndarray:
    """(2^24, 4) uint8: for every 3-byte pixel (index c0 << 16 | c1 << 8 | c2, channels in
    memory order) the bytes OpenCV's RGB2Lab → Lab2RGB round trip gives, and its L byte."""
    v = np.arange(256, dtype=np.uint8)
    img = np.empty((256, 256, 256, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = v[:, None, None], v[None, :, None], v[None, None, :]
    img = img.reshape(4096, 4096, 3)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab)
    table = np.empty((1 << 24, 4), np.uint8)
    table[:, :3] = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB).reshape(-1, 3)
    table[:, 3] = lab[..., 0].reshape(-1)
    return table


class GpuLandmarker:
    """A ``landmark`` model on device frames; same semantics as ``host.landmark.Landmarker``
    (whose checks, decoding and 5-point rule it uses)."""

    def __init__(self, engine: Engine, device: Any, threshold: float = LANDMARKER_SCORE):
        self.torch = require_torch()
        self.host = Landmarker(engine, threshold)
        self.engine, self.dev, self.size = engine, device, self.host.size
        self._table = None

    def contrast(self, crops):
        """(K, 3, S, S) whole-valued float crops → ``conditional_optimize_contrast`` of each."""
        torch = self.torch
        if self._table is None:  # on first use: 64 MiB, once per landmarker
            self._table = torch.from_numpy(contrast_table()).to(crops.device)
        c = crops.to(torch.int64)
        v = self._table[(c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]]  # (K, S, S, 4) uint8
        out = v[..., :3].permute(0, 3, 1, 2).to(crops.dtype)
        dark = (v[..., 3].double().mean((1, 2)) < DARK_L).cpu().numpy()
        for k in np.flatnonzero(dark):  # CLAHE has no tensor version here: those go to the host
            host = crops[k].permute(1, 2, 0).to(torch.uint8).cpu().numpy()
            out[k] = torch.from_numpy(optimize_contrast(host)).permute(2, 0, 1).to(out)
        return out

    def prepare(self, frames, frame_idx: Sequence[int], faces: Sequence[Face]
                ) -> tuple[Any, list[tuple[np.ndarray, np.ndarray]]]:
        """(K, 3, S, S) float32 model input of the faces (``frame_idx[k]``: the batch frame of
        face k) and each face's (translation, rotation) matrices."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise InputError(f"frames | got shape {tuple(frames.shape)}; expected (N, 3, H, W) "
                             "BGR")
        check_faces(faces)
        s, d = self.size, frames.device
        mats = [(translation_matrix(f.box, s), rotation_matrix(face_angle(f.landmarks), s)[0])
                for f in faces]
        crops = crop_faces(frames, frame_idx, to_device(np.stack([m for m, _ in mats]), d), s)
        crops = crop_faces(crops, range(len(faces)),
                           to_device(np.stack([r for _, r in mats]), d), s)
        return (self.contrast(crops) / 255.0).to(self.torch.float32).contiguous(), mats

    def run(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(K, 68, 2) grid points and (K, 68) heatmap maxima on the host (one small copy)."""
        torch, h = self.torch, self.host
        out = self.engine.run({h.input_name: x})
        pts, heat = (torch.as_tensor(out[n]).to(x.device) for n in (h.points_name,
                                                                    h.heatmaps_name))
        k = int(x.shape[0])
        check_output_shapes(self.engine.spec, pts.shape, heat.shape, k)
        packed = torch.cat([pts[..., :2].reshape(k, -1), heat.amax(dim=(2, 3))], 1)
        packed = packed.float().cpu().numpy()
        return packed[:, :136].reshape(k, 68, 2), packed[:, 136:]

    def refine(self, frames, rows: Sequence[int], faces: Sequence[Sequence[Face]]
               ) -> list[list[Face]]:
        """``faces[i]`` are faces of batch frame ``rows[i]``; all refined in one engine call."""
        if len(rows) != len(faces):
            raise InputError(f"landmarks | got {len(rows)} rows and {len(faces)} face lists; "
                             "expected one list per row")
        flat = [f for fl in faces for f in fl]
        if not flat:
            return [list(fl) for fl in faces]
        idx = [r for r, fl in zip(rows, faces) for _ in fl]
        x, mats = self.prepare(frames, idx, flat)
        grid_points, peaks = self.run(x)
        refined = iter(self.host.apply(flat, *self.host.decode(grid_points, peaks, mats)))
        return [[next(refined) for _ in fl] for fl in faces]
