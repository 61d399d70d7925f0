"""RetinaFace on batches of device frames: letterbox, prior decoding and NMS as tensor ops.

Same constants and semantics as ``pipeline.detect`` (the CPU path): frames are letterboxed into
the top-left of one square input with the mean as padding, priors are Pytorch_Retinaface's,
boxes are clipped to the frame, faces come highest score first. NMS is torchvision's
``batched_nms`` when torchvision imports, else a greedy NMS on one IoU matrix (the CPU torch
build here has no torchvision); both suppress IoU > threshold, as ``cv2.dnn.NMSBoxes`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...engines.base import Engine
from ...errors import InputError
from ..host.detect import VARIANCES, RetinaFaceSettings, priors
from ..types import Face
from . import require_torch

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


class GpuDetector(RetinaFaceSettings):
    """RetinaFace (``retinaface_mnet025`` contract) on device tensors, any engine that takes
    and returns tensors (ort-cuda via IOBinding, torch); numpy outputs (ort-cpu) are wrapped."""

    def __init__(self, engine: Engine, device, score_threshold: float = 0.5,
                 nms_threshold: float = 0.4, input_size: int = 640):
        torch = require_torch()
        super().__init__(engine, score_threshold, nms_threshold, input_size)
        self.dev = device
        pre = self.preprocess
        d = device.device
        self.mean = torch.tensor(pre.mean, dtype=torch.float32, device=d).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.std, dtype=torch.float32, device=d).view(1, 3, 1, 1)
        self.priors = torch.from_numpy(priors(self.input_size)).to(d)
        self.torch = torch
        self._area: dict = {}

    def letterbox(self, frames):
        """(N, 3, H, W) float BGR in [0, 255] → ((N, 3, S, S) input, (sx, sy) scale).

        Down-scaling is OpenCV's INTER_AREA as two matmuls with ``area_matrix`` (torch's
        ``mode="area"`` is adaptive pooling: other weights, and the landmarks it gives move the
        source embedding measurably), up-scaling bilinear with half-pixel centres
        (INTER_LINEAR); values are rounded as the CPU path's uint8 resize."""
        torch = require_torch()
        F = torch.nn.functional
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
            raise InputError(f"frames | got shape {tuple(frames.shape)}; expected (N, 3, H, W) BGR")
        h, w = frames.shape[2:]
        s = self.input_size
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
        """The network on a prepared batch → (loc, conf, landmarks) tensors on the device."""
        torch = require_torch()
        out = self.engine.run({"input": x})
        return tuple(torch.as_tensor(out[k]).to(self.dev.device)
                     for k in ("loc", "conf", "landmarks"))

    def postprocess(self, loc, conf, lmk, scale, height: int, width: int) -> Detections:
        """Threshold, decode the kept priors, scale to pixels, NMS per frame, sort."""
        torch = require_torch()
        if loc.shape[1] != self.priors.shape[0]:
            raise ValueError(f"output 'loc' | got {loc.shape[1]} anchors; expected "
                             f"{self.priors.shape[0]} for input {self.input_size}")
        scores = conf[..., 1]
        n_idx, a_idx = torch.nonzero(scores > self.score_threshold, as_tuple=True)
        sc = scores[n_idx, a_idx]
        if sc.numel() > MAX_CANDIDATES:
            top = torch.topk(sc, MAX_CANDIDATES).indices
            n_idx, a_idx, sc = n_idx[top], a_idx[top], sc[top]
        pri = self.priors[a_idx]
        v0, v1 = VARIANCES
        l = loc[n_idx, a_idx]
        cxcy = pri[:, :2] + l[:, :2] * v0 * pri[:, 2:]
        wh = pri[:, 2:] * torch.exp(l[:, 2:] * v1)
        kx, ky = self.input_size / scale[0], self.input_size / scale[1]  # → frame pixels
        boxes = torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1)
        boxes[:, 0::2] *= kx
        boxes[:, 1::2] *= ky
        pts = pri[:, None, :2] + lmk[n_idx, a_idx].view(-1, 5, 2) * v0 * pri[:, None, 2:]
        pts[..., 0] *= kx
        pts[..., 1] *= ky
        keep = batched_nms(boxes, sc, n_idx, self.nms_threshold)
        keep = keep[torch.argsort(n_idx[keep], stable=True)]  # by frame, score order within
        boxes = boxes[keep]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        return Detections(n_idx[keep], boxes, sc[keep], pts[keep])

    def detect(self, frames) -> Detections:
        """Faces in a batch of (N, 3, H, W) float BGR frames (all the same size)."""
        x, scale = self.letterbox(frames)
        loc, conf, lmk = self.run_net(x)
        return self.postprocess(loc, conf, lmk, scale, frames.shape[2], frames.shape[3])
