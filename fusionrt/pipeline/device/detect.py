"""Face detection on batches of device frames: letterbox, decoding and NMS as tensor ops.

Same semantics as ``pipeline/host/detect.py`` (the CPU path) for every detector: the spec's
letterbox (``fit``: mean padding; ``facefusion``: FaceFusion's shrink-only resize on a black
canvas), the decoder the spec names (torch twins in ``decoders.py``), boxes clipped to the
frame, faces highest score first, and the any-angle retry (the rotated views of a batch run as
one larger batch; faces are mapped back upright and one NMS per frame runs across angles).
NMS is torchvision's ``batched_nms`` when torchvision imports, else a greedy NMS on one IoU
matrix (the CPU torch build here has no torchvision); both suppress IoU > threshold, as
``cv2.dnn.NMSBoxes`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from ...engines.base import Engine
from ...errors import InputError
from ..host.detect import CROSS_VIEW_COVER, DetectorSettings
from ..types import Face
from . import require_torch
from .decoders import device_decode, unrotate_boxes, unrotate_points

log = logging.getLogger(__name__)

MAX_CANDIDATES = 4096  # per batch, before NMS: bounds the IoU matrix whatever the scene


@lru_cache(maxsize=8)
def _torchvision_nms():
    try:
        from torchvision.ops import batched_nms
    except Exception:  # absent, or built for another torch: fall back to the torch version
        return None
    return batched_nms


def box_iou(a, b):
    """(K, 4) x (M, 4) boxes (x1, y1, x2, y2) → (K, M) IoU."""
    torch = require_torch()
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def nms(boxes, scores, iou_threshold: float):
    """Greedy NMS: indices of the kept boxes, highest score first. One IoU matrix on the
    device, one copy of its boolean form to the host, then a loop over K candidates there."""
    torch = require_torch()
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    over = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    removed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if not removed[i]:
            keep.append(i)
            removed |= over[i]
    return order[torch.as_tensor(keep, device=boxes.device)]


def batched_nms(boxes, scores, groups, iou_threshold: float):
    """NMS within each group (frame): the offset trick moves every group's boxes apart so one
    NMS pass handles the whole batch. Indices sorted by decreasing score."""
    tv = _torchvision_nms()
    if tv is not None and boxes.is_cuda:
        return tv(boxes, scores, groups, iou_threshold)
    if boxes.shape[0] == 0:
        return groups.new_empty(0)
    offset = groups.to(boxes.dtype)[:, None] * (boxes.max() + 1.0)
    return nms(boxes + offset, scores, iou_threshold)


def cross_view_keep(boxes, scores, frame, view, iou_threshold: float):
    """``host.detect.cross_view_keep`` within each frame on device tensors: indices kept,
    highest score first (one small boolean matrix comes to the host for the greedy loop)."""
    torch = require_torch()
    if boxes.shape[0] == 0:
        return frame.new_empty(0)
    order = torch.argsort(scores, descending=True, stable=True)
    b, f, v = boxes[order], frame[order], view[order]
    area = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    inter = (torch.minimum(b[:, None, 2:], b[None, :, 2:])
             - torch.maximum(b[:, None, :2], b[None, :, :2])).clamp(min=0).prod(-1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-9)
    cover = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-9)
    over = (f[:, None] == f[None, :]) & ((iou > iou_threshold) | (
        (v[:, None] != v[None, :]) & (cover > CROSS_VIEW_COVER)))
    over = over.cpu().numpy()
    keep: list[int] = []
    for i in range(len(order)):
        if not over[i, keep].any():
            keep.append(i)
    return order[torch.as_tensor(keep, device=boxes.device, dtype=torch.long)]


@lru_cache(maxsize=16)
def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of OpenCV's INTER_AREA down-scaling along one axis (its
    ``computeResizeAreaTab``): each output pixel averages its footprint, partial pixels at the
    footprint's ends weighted by their covered fraction. Resizing is then two matmuls."""
    scale = n_in / n_out
    a = np.zeros((n_out, n_in), np.float64)
    for x in range(n_out):
        f1 = x * scale
        f2 = f1 + scale
        s1, s2 = min(int(np.ceil(f1)), n_in), min(int(np.floor(f2)), n_in)
        cell = min(scale, n_in - f1)
        if s1 - f1 > 1e-3:
            a[x, s1 - 1] = (s1 - f1) / cell
        a[x, s1:s2] = 1.0 / cell
        if s2 < n_in and f2 - s2 > 1e-3:
            a[x, s2] = min(min(f2 - s2, 1.0), cell) / cell
    return a


@dataclass
class Detections:
    """Faces found in a batch, flat: ``frame[k]`` is the batch index of face k. Tensors on the
    device; ``faces()`` brings them to the host as ``Face`` lists (one small copy)."""

    frame: object      # (K,) int64
    boxes: object      # (K, 4) float32, frame pixels
    scores: object     # (K,)
    landmarks: object  # (K, 5, 2)

    def faces(self, n_frames: int) -> list[list[Face]]:
        torch = require_torch()
        k = int(self.frame.shape[0])
        out: list[list[Face]] = [[] for _ in range(n_frames)]
        if k == 0:
            return out
        # one device→host copy (one synchronisation) for everything
        packed = torch.cat([self.frame[:, None].to(self.boxes.dtype), self.boxes,
                            self.scores[:, None], self.landmarks.reshape(k, 10)], 1)
        rows = packed.float().cpu().numpy()
        for r in rows:
            out[int(r[0])].append(Face(box=r[1:5].copy(), score=float(r[5]),
                                       landmarks=r[6:16].reshape(5, 2).copy()))
        return out


@dataclass(frozen=True)
class RotatedViews:
    """What ``letterbox`` made with angles on: ``len(angles)`` blocks of ``n`` rows, block j
    the batch rotated ``angles[j]``° counter-clockwise, with its own (sx, sy) scale."""

    n: int
    angles: tuple[int, ...]
    scales: tuple[tuple[float, float], ...]


class GpuDetector(DetectorSettings):
    """A face detector (any detect-task zoo contract) on device tensors, any engine that takes
    and returns tensors (ort-cuda via IOBinding, torch); numpy outputs (ort-cpu) are wrapped."""

    def __init__(self, engine: Engine, device, score_threshold: float = 0.5,
                 nms_threshold: float = 0.4, input_size: int = 640,
                 angles: Sequence[int] = (0,)):
        torch = require_torch()
        super().__init__(engine, score_threshold, nms_threshold, input_size, angles)
        self.dev = device
        pre = self.preprocess
        d = device.device
        self.mean = torch.tensor(pre.mean, dtype=torch.float32, device=d).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.std, dtype=torch.float32, device=d).view(1, 3, 1, 1)
        # retinaface: the priors (the frame graph reads them); insightface: (x, y, stride)
        self.priors = None if self.anchors is None else torch.from_numpy(self.anchors).to(d)
        self.decode = device_decode(self.decoder)
        self.torch = torch
        self._area: dict = {}
        self._graph_rows = 0

    def letterbox(self, frames):
        """(N, 3, H, W) float BGR in [0, 255] → ((N, 3, S, S) input, (sx, sy) scale); with
        angles, (N * len(angles), 3, S, S) and a ``RotatedViews``."""
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
            raise InputError(f"frames | got shape {tuple(frames.shape)}; expected (N, 3, H, W) BGR")
        if self.angles == (0,):
            return self._letterbox(frames)
        torch = self.torch
        xs, scales = [], []
        for a in self.angles:
            x, sc = self._letterbox(frames if a == 0 else torch.rot90(frames, a // 90, (2, 3)))
            xs.append(x)
            scales.append(sc)
        return torch.cat(xs), RotatedViews(frames.shape[0], self.angles, tuple(scales))

    def _letterbox(self, frames):
        """One view. ``fit``: down-scaling is OpenCV's INTER_AREA as two matmuls with
        ``area_matrix`` (torch's ``mode="area"`` is adaptive pooling: other weights, and the
        landmarks it gives move the source embedding measurably), up-scaling bilinear with
        half-pixel centres (INTER_LINEAR); values are rounded as the CPU path's uint8 resize.
        ``facefusion``: shrink-only bilinear (``cv2.resize`` INTER_LINEAR has no antialias, nor
        has this), ``int()`` sizes, black padding normalised with the rest."""
        torch = require_torch()
        F = torch.nn.functional
        h, w = frames.shape[2:]
        s = self.input_size
        if self.letterbox_mode == "facefusion":
            nw, nh, r = w, h, frames
            if h > s or w > s:
                scale = min(s / h, s / w)
                nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
                r = F.interpolate(frames, size=(nh, nw), mode="bilinear",
                                  align_corners=False).round().clamp(0, 255)
            x = (F.pad(r, (0, s - nw, 0, s - nh)) - self.mean) / self.std
            return x.contiguous(), (nw / w, nh / h)
        scale = s / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        if (nw, nh) == (w, h):
            r = frames
        elif scale < 1:
            ah, aw = (self._area_weights(n, m, frames) for n, m in ((h, nh), (w, nw)))
            r = torch.matmul(ah, torch.matmul(frames, aw.T)).round()
        else:
            r = F.interpolate(frames, size=(nh, nw), mode="bilinear",
                              align_corners=False).round().clamp(0, 255)
        x = F.pad((r - self.mean) / self.std, (0, s - nw, 0, s - nh))
        return x.contiguous(), (nw / w, nh / h)

    def _area_weights(self, n_in: int, n_out: int, like):
        key = (n_in, n_out, like.dtype)
        if key not in self._area:  # uploaded once per frame size, not per batch
            self._area[key] = self.torch.from_numpy(area_matrix(n_in, n_out)).to(like)
        return self._area[key]

    def run_net(self, x):
        """The network on a prepared batch → (loc, conf, landmarks) tensors on the device in
        the decoder's layout (``gather``); a batch-1 file runs once per row."""
        torch = require_torch()
        rows = x.shape[0]
        if self.batch_one:
            heads = [self._gather(self.engine.run({self.input_name: x[i:i + 1]}))
                     for i in range(rows)]
            if rows == 1:
                return heads[0]
            # clone each row's heads: a CUDA-graph engine overwrites its outputs on the next run
            return tuple(torch.cat(parts) for parts in zip(*heads))
        if self.angles != (0,) and self.engine.config.options.get("cuda_graph"):
            # keep the captured batch: rotated views make N * len(angles) rows
            self._graph_rows = max(self._graph_rows, rows)
            if rows < self._graph_rows:
                x = torch.cat([x, x.new_zeros((self._graph_rows - rows,) + tuple(x.shape[1:]))])
        heads = self._gather(self.engine.run({self.input_name: x}))
        return heads if x.shape[0] == rows else tuple(o[:rows] for o in heads)

    def _gather(self, out) -> tuple:
        torch = self.torch
        spec = self.engine.spec
        outs = [torch.as_tensor(out[t.name]).to(self.dev.device) for t in spec.outputs]
        loc, conf, lmk = self.decoder.gather(spec, outs, self.input_size)
        return loc, conf, lmk

    def postprocess(self, loc, conf, lmk, scale, height: int, width: int) -> Detections:
        """Threshold, decode the kept anchors, scale to pixels, NMS per frame, sort; with
        angles (``scale`` a ``RotatedViews``), per view, mapped upright, NMS across views."""
        if isinstance(scale, RotatedViews):
            return self._postprocess_views(loc, conf, lmk, scale, height, width)
        torch = require_torch()
        if loc.shape[1] != self.anchor_count:
            raise ValueError(f"output 'loc' | got {loc.shape[1]} anchors; expected "
                             f"{self.anchor_count} for input {self.input_size}")
        scores = conf[..., self.decoder.score_column]
        kept = scores >= self.score_threshold if self.decoder.inclusive \
            else scores > self.score_threshold
        n_idx, a_idx = torch.nonzero(kept, as_tuple=True)
        sc = scores[n_idx, a_idx]
        if sc.numel() > MAX_CANDIDATES:
            top = torch.topk(sc, MAX_CANDIDATES).indices
            n_idx, a_idx, sc = n_idx[top], a_idx[top], sc[top]
        pri = None if self.priors is None else self.priors[a_idx]
        boxes, pts = self.decode(loc[n_idx, a_idx], lmk[n_idx, a_idx], pri)
        # FaceFusion detect_faces normalize_bounding_box: corners in order (a no-op for priors)
        boxes = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]),
                           torch.maximum(boxes[:, :2], boxes[:, 2:])], 1)
        kx, ky = self.unit / scale[0], self.unit / scale[1]  # → frame pixels
        boxes[:, 0::2] *= kx
        boxes[:, 1::2] *= ky
        pts[..., 0] *= kx
        pts[..., 1] *= ky
        keep = batched_nms(boxes, sc, n_idx, self.nms_threshold)
        keep = keep[torch.argsort(n_idx[keep], stable=True)]  # by frame, score order within
        boxes = boxes[keep]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        return Detections(n_idx[keep], boxes, sc[keep], pts[keep])

    def _postprocess_views(self, loc, conf, lmk, views: RotatedViews, height: int,
                           width: int) -> Detections:
        torch = require_torch()
        n, parts = views.n, []
        for j, (a, sc) in enumerate(zip(views.angles, views.scales)):
            rows = slice(j * n, (j + 1) * n)
            hh, ww = (height, width) if a in (0, 180) else (width, height)
            d = self.postprocess(loc[rows], conf[rows], lmk[rows], sc, hh, ww)
            parts.append((d.frame, unrotate_boxes(d.boxes, a, width, height), d.scores,
                          unrotate_points(d.landmarks, a, width, height)))
        frame, boxes, scores, pts = (torch.cat(p) for p in zip(*parts))
        view = torch.cat([torch.full_like(p[0], j) for j, p in enumerate(parts)])
        keep = cross_view_keep(boxes, scores, frame, view, self.angle_nms_threshold)
        keep = keep[torch.argsort(frame[keep], stable=True)]
        return Detections(frame[keep], boxes[keep], scores[keep], pts[keep])

    def detect(self, frames) -> Detections:
        """Faces in a batch of (N, 3, H, W) float BGR frames (all the same size)."""
        x, scale = self.letterbox(frames)
        loc, conf, lmk = self.run_net(x)
        return self.postprocess(loc, conf, lmk, scale, frames.shape[2], frames.shape[3])
