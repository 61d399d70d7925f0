"""Face detection on the host: letterbox, run, decode (``decoders.py``), NMS, any angle.

The same code serves every detector and engine: the spec's ``extra["decoder"]`` picks the
decode (RetinaFace priors, insightface anchors, YOLO) and ``extra["letterbox"]`` how a frame
becomes the square input:

* ``fit`` (``retinaface_mnet025``): scaled so its longer side is the input side (INTER_AREA
  down, INTER_LINEAR up), top-left, padding = the mean (zero after normalisation), so frames of
  any size batch together.
* ``facefusion`` (FaceFusion's detectors): FaceFusion 3.8.1 ``vision.py`` ``restrict_frame``
  (shrunk only if larger, ``int()`` sizes, INTER_LINEAR, never enlarged) and
  ``face_detector.py`` ``prepare_detect_frame`` + ``normalize_detect_frame`` (pasted top-left on
  a black canvas, the whole canvas normalised): the tensor FaceFusion feeds, value for value.

Any angle (FaceFusion ``face_creator.py`` ``get_many_faces`` / ``face_detector.py``
``detect_faces_by_angle``): with ``angles`` other than ``(0,)`` each frame is also detected
rotated counter-clockwise by 90/180/270° (``np.rot90``; FaceFusion's ``cv2.warpAffine`` of
``create_rotation_matrix_and_size`` is the same rotation shifted by one pixel, its first row
black), boxes and landmarks are mapped back into the upright frame, and one NMS over every
angle's faces keeps one face per place (``cross_view_keep``: FaceFusion's IoU rule, plus one
against a rotated view's false positive around a real face). The 5 landmarks then carry the
face's rotation, so the similarity warp aligns it and paste-back lands it in place. Boxes are
clipped to the frame on every path (FaceFusion leaves them unclipped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ...engines.base import Engine
from ...errors import InputError, ModelError
from ..types import Face
from .decoders import MIN_SIZES, STRIDES, VARIANCES, batch_one, decode, decoder_for, priors

log = logging.getLogger(__name__)

__all__ = ["ANGLES", "Detector", "DetectorSettings", "Letterbox", "MIN_SIZES", "STRIDES",
           "VARIANCES", "check_angles", "decode", "priors", "unrotate_points"]

LETTERBOXES = ("fit", "facefusion")
ANGLES = (0, 90, 180, 270)  # FaceFusion choices.py face_detector_angles
# FaceFusion face_helper.py get_nms_threshold: its one NMS over every angle's boxes is the
# stricter the more angles run; fusionrt uses it (or the user's, if lower) after each view's
# own NMS at the user's threshold.
ANGLE_NMS = {1: 0.4, 2: 0.3, 3: 0.2, 4: 0.1}
CROSS_VIEW_COVER = 0.5  # see cross_view_keep


def overlaps(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 4) boxes → (IoU, intersection over the smaller area), both (K, K)."""
    wh = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None)
    area = wh[:, 0] * wh[:, 1]
    lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-9)
    return iou, inter / np.maximum(np.minimum(area[:, None], area[None, :]), 1e-9)


def cross_view_keep(boxes: np.ndarray, views: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS over faces sorted by decreasing score (indices kept, in that order): a face
    goes if its IoU with a kept one exceeds ``iou_threshold`` (FaceFusion's one NMS over all
    angles), or, when they come from different views, if it covers more than
    ``CROSS_VIEW_COVER`` of the smaller box — a rotated view's false positive around a real
    face (the astronaut photo at 90°: a 0.52 "face" over the whole head and shoulders, which
    ``select="largest"`` would then pick; FaceFusion keeps it)."""
    iou, cover = overlaps(boxes)
    over = (iou > iou_threshold) | ((views[:, None] != views[None, :]) & (cover > CROSS_VIEW_COVER))
    keep: list[int] = []
    for i in range(len(boxes)):
        if not any(over[i, j] for j in keep):
            keep.append(i)
    return keep


def check_angles(angles: Sequence[int]) -> tuple[int, ...]:
    """Distinct angles out of 0/90/180/270 as a tuple of ints; ``InputError`` otherwise."""
    got = (angles,) if isinstance(angles, (str, int)) else tuple(angles)
    if not got or len(set(got)) != len(got) or any(
            isinstance(a, (bool, str)) or a not in ANGLES for a in got):
        raise InputError(f"detector angles {got} | expected distinct values out of "
                         f"{', '.join(map(str, ANGLES))}")
    return tuple(int(a) for a in got)


def unrotate_points(points: np.ndarray, angle: int, width: int, height: int) -> np.ndarray:
    """(..., 2) points of the frame rotated ``angle``° counter-clockwise (``np.rot90(frame,
    angle // 90)``) → the upright ``width``×``height`` frame (pixel edges at integers)."""
    x, y = points[..., 0], points[..., 1]
    k = angle // 90 % 4
    if k == 0:
        return points
    up = {1: (width - y, x), 2: (width - x, height - y), 3: (y, height - x)}[k]
    return np.stack(up, -1).astype(points.dtype)


def unrotate_box(box: np.ndarray, angle: int, width: int, height: int) -> np.ndarray:
    """A box of the rotated frame → the upright frame's box around its four corners (FaceFusion
    ``transform_bounding_box``)."""
    corners = np.asarray(box)[[0, 1, 2, 1, 2, 3, 0, 3]].reshape(4, 2)
    p = unrotate_points(corners, angle, width, height)
    return np.concatenate([p.min(0), p.max(0)]).astype(np.float32)


def rotate(image: np.ndarray, angle: int) -> np.ndarray:
    """``image`` rotated ``angle``° counter-clockwise, contiguous (OpenCV needs it)."""
    return image if angle == 0 else np.ascontiguousarray(np.rot90(image, angle // 90))


@dataclass(frozen=True)
class Letterbox:
    """How a frame was placed in the square input: scaled by (sx, sy), at the top-left corner."""

    sx: float
    sy: float
    width: int
    height: int


class DetectorSettings:
    """What the CPU and GPU detectors share: the engine, thresholds, input size, angles, the
    spec's decoder and letterbox, and the check that the model takes BGR."""

    def __init__(self, engine: Engine, score_threshold: float = 0.5, nms_threshold: float = 0.4,
                 input_size: int = 640, angles: Sequence[int] = (0,)):
        self.engine = engine
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.input_size = int(input_size)
        spec = engine.spec
        self.decoder = decoder_for(spec)
        self.preprocess = spec.preprocess
        if self.preprocess.channel_order != "BGR":
            raise ValueError(f"model '{spec.name}' | channel order "
                             f"{self.preprocess.channel_order}; the detector expects BGR")
        self.decoder.check_size(spec, self.input_size)
        self.letterbox_mode = spec.extra.get("letterbox", "fit")
        if self.letterbox_mode not in LETTERBOXES:
            raise ModelError(f"model '{spec.name}' | letterbox '{self.letterbox_mode}' unknown; "
                             f"expected one of: {', '.join(LETTERBOXES)}")
        self.angles = check_angles(angles)
        self.batch_one = batch_one(spec)  # FaceFusion's files: one frame per call
        self.input_name = spec.inputs[0].name
        self.anchors = self.decoder.anchors(self.input_size)
        self.anchor_count = self.decoder.count(self.input_size)
        # input units → pixels of the letterboxed input
        self.unit = self.input_size if self.decoder.units == "normalised" else 1.0

    @property
    def angle_nms_threshold(self) -> float:
        """The IoU above which a face found at another angle is the same face."""
        return min(self.nms_threshold, ANGLE_NMS[len(self.angles)])


RetinaFaceSettings = DetectorSettings  # the name before FaceFusion's detectors came


class Detector(DetectorSettings):
    """A face detector on any engine honouring a detect-task zoo contract.

    Args:
        engine: a loaded (or loadable) engine for a detector spec (``extra["decoder"]``).
        score_threshold: minimum face score kept.
        nms_threshold: IoU above which a lower-scored box is dropped.
        input_size: side of the square network input; frames are letterboxed into it.
        angles: also detect on the frame rotated by these angles (0, 90, 180, 270).
    """

    def __init__(self, engine: Engine, score_threshold: float = 0.5, nms_threshold: float = 0.4,
                 input_size: int = 640, angles: Sequence[int] = (0,)):
        super().__init__(engine, score_threshold, nms_threshold, input_size, angles)
        self.mean = np.asarray(self.preprocess.mean, np.float32)
        self.std = np.asarray(self.preprocess.std, np.float32)

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """BGR uint8 (H, W, 3) → (3, S, S) float32 input, per the spec's letterbox."""
        if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise InputError(f"image | got shape {image.shape}; expected (H, W, 3) BGR")
        if self.letterbox_mode == "facefusion":
            return self._letterbox_facefusion(image)
        h, w = image.shape[:2]
        s = self.input_size
        scale = s / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=interp)
        canvas = np.zeros((s, s, 3), np.float32)
        canvas[:nh, :nw] = (resized.astype(np.float32) - self.mean) / self.std
        return canvas.transpose(2, 0, 1), Letterbox(nw / w, nh / h, w, h)

    def _letterbox_facefusion(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """``restrict_frame`` → ``prepare_detect_frame`` → ``normalize_detect_frame``."""
        h, w = image.shape[:2]
        s = self.input_size
        nw, nh = w, h
        if h > s or w > s:
            scale = min(s / h, s / w)
            nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
            image = cv2.resize(image, (nw, nh))
        canvas = np.zeros((s, s, 3), np.float32)
        canvas[:nh, :nw] = image
        return ((canvas - self.mean) / self.std).transpose(2, 0, 1), Letterbox(nw / w, nh / h,
                                                                                w, h)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one BGR frame, highest score first."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces in several frames (sizes may differ), at every angle asked for."""
        if not images:
            return []
        if self.angles == (0,):
            return self._detect(images)
        for im in images:
            if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.size == 0:
                raise InputError(f"image | got shape {getattr(im, 'shape', None)}; "
                                 "expected (H, W, 3) BGR")
        views = [(i, a) for i in range(len(images)) for a in self.angles]
        found = self._detect([rotate(images[i], a) for i, a in views])
        merged: list[list[tuple[Face, int]]] = [[] for _ in images]
        for (i, a), faces in zip(views, found):
            h, w = images[i].shape[:2]
            merged[i].extend((Face(box=unrotate_box(f.box, a, w, h), score=f.score,
                                   landmarks=unrotate_points(f.landmarks, a, w, h)), a)
                             for f in faces)
        return [self._dedupe(faces) for faces in merged]

    def _dedupe(self, tagged: list[tuple[Face, int]]) -> list[Face]:
        """One face per place across views (``cross_view_keep``), highest score first."""
        if not tagged:
            return []
        order = sorted(range(len(tagged)), key=lambda i: -tagged[i][0].score)
        boxes = np.stack([tagged[i][0].box for i in order]).astype(np.float64)
        views = np.array([tagged[i][1] for i in order])
        keep = cross_view_keep(boxes, views, self.angle_nms_threshold)
        return [tagged[order[i]][0] for i in keep]

    def _detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        packed = [self.letterbox(im) for im in images]
        heads = self.run_net([p[0] for p in packed])
        return [self._postprocess(*h, lb) for h, (_, lb) in zip(heads, packed)]

    def run_net(self, inputs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
        """Prepared (3, S, S) inputs → per frame (loc, conf, lmk) in the decoder's layout (one
        engine call per batch, or per frame for a batch-1 file)."""
        spec, size = self.engine.spec, self.input_size
        if self.batch_one:
            out = []
            for x in inputs:
                res = self.engine.run({self.input_name: np.ascontiguousarray(x[None])})
                loc, conf, lmk = self.decoder.gather(spec, [res[t.name] for t in spec.outputs],
                                                     size)
                out.append((loc[0], conf[0], lmk[0]))
            return out
        batch = np.ascontiguousarray(np.stack(inputs))
        res = self.engine.run({self.input_name: batch})
        loc, conf, lmk = self.decoder.gather(spec, [res[t.name] for t in spec.outputs], size)
        return [(loc[i], conf[i], lmk[i]) for i in range(len(inputs))]

    def _postprocess(self, loc: np.ndarray, conf: np.ndarray, lmk: np.ndarray,
                     lb: Letterbox) -> list[Face]:
        dec = self.decoder
        scores = conf[:, dec.score_column]  # retinaface: softmax column 1 is P(face)
        keep = np.flatnonzero(scores >= self.score_threshold if dec.inclusive
                              else scores > self.score_threshold)
        if keep.size == 0:
            return []
        anc = None if self.anchors is None else self.anchors[keep]
        boxes, pts = dec.decode(loc[keep], lmk[keep], anc)
        # FaceFusion detect_faces normalize_bounding_box: corners in order (a no-op for priors)
        boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                                np.maximum(boxes[:, :2], boxes[:, 2:])], 1)
        # input units → frame pixels
        k = self.unit / np.array([lb.sx, lb.sy], np.float32)
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
