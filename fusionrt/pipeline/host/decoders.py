"""Detector decoders: the one registry from a detector spec's ``extra["decoder"]`` to its
anchors, its output layout and its decode, on the host (numpy, here) and on the device (the
torch twins in ``pipeline/device/decoders.py``, named by ``Decoder.device``).

Every decoder turns a model's outputs into one batch-first triple ``(loc, conf, lmk)`` with
all anchors of all strides on one axis (``gather``), so thresholding, NMS, letterbox mapping
and the any-angle retry are shared by every detector:

* ``retinaface_priors`` (``retinaface_mnet025``): Pytorch_Retinaface prior boxes and variances;
  loc/landmarks relative to the priors, boxes normalised to the input; conf is a softmax, column
  1 = P(face), kept when ``>`` the threshold.
* ``insightface_anchors`` (FaceFusion's ``scrfd_2.5g``, ``retinaface_10g``): 9 outputs
  (scores, box distances, landmark offsets per stride 8/16/32, two anchors per cell, no batch
  axis); FaceFusion 3.8.1 ``face_detector.py`` ``detect_with_scrfd``/``detect_with_retinaface``
  with ``face_helper.py`` ``create_static_anchors``, ``distance_to_bounding_box``,
  ``distance_to_face_landmark_5``; input pixels; scores kept when ``>=`` the threshold.
* ``yolo`` (FaceFusion's ``yoloface_8n``): one (1, 20, A) output, decoded in the graph;
  ``detect_with_yolo_face``: cx, cy, w, h, score, 5 x (x, y, visibility); input pixels; ``>``.

FaceFusion's decode skips a stride when the only anchor over the threshold is anchor 0
(``if numpy.any(keep_indices)`` is False for ``[0]``); fusionrt keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from ...errors import InputError, ModelError
from ...models.spec import ModelSpec

# Pytorch_Retinaface cfg_mnet: steps, min_sizes, variance.
STRIDES = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
ANCHOR_TOTAL = 2  # FaceFusion detect_with_scrfd / detect_with_retinaface: anchors per cell
INSIGHTFACE_WIDTHS = (1, 4, 10)  # score, box distances, landmark offsets per anchor
YOLO_CHANNELS = 20  # cx, cy, w, h, score, 5 x (x, y, visibility)


# -- retinaface_priors ----------------------------------------------------------------------

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


def _gather_retinaface(spec: ModelSpec, outs: Sequence, size: int) -> tuple:
    a = len(priors(size))
    for t, o, width in zip(spec.outputs, outs, (4, 2, 10)):
        if tuple(o.shape[1:]) != (a, width):
            raise ModelError(f"output '{t.name}' | got shape {tuple(o.shape)}; expected "
                             f"(N, {a}, {width}) for a {size}x{size} input")
    return tuple(outs)


# -- insightface_anchors --------------------------------------------------------------------

def insightface_counts(size: int) -> tuple[int, ...]:
    """Anchors per stride for a ``size``×``size`` input: 2 per cell of (size // stride)²."""
    return tuple(ANCHOR_TOTAL * (size // s) ** 2 for s in STRIDES)


@lru_cache(maxsize=8)
def insightface_anchors(size: int) -> np.ndarray:
    """(A, 3) anchors (x, y, stride) in input pixels: ``create_static_anchors`` per stride —
    each cell's top-left corner (col * stride, row * stride), row-major, twice (anchor_total 2)."""
    out = []
    for s in STRIDES:
        n = size // s
        x, y = np.mgrid[:n, :n]  # FaceFusion's mgrid[:stride_width, :stride_height]
        cells = (np.stack((y, x), axis=-1) * s).reshape(-1, 2)
        cells = np.stack([cells] * ANCHOR_TOTAL, axis=1).reshape(-1, 2)
        out.append(np.concatenate([cells, np.full((len(cells), 1), s)], 1))
    return np.concatenate(out).astype(np.float32)


def decode_insightface(loc: np.ndarray, lmk: np.ndarray, anc: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Distances (in strides) → boxes (x1, y1, x2, y2) and landmarks (K, 5, 2), input pixels
    (``distance_to_bounding_box`` / ``distance_to_face_landmark_5`` of raw * stride)."""
    s = anc[:, 2:3]
    d = loc * s
    boxes = np.concatenate([anc[:, :2] - d[:, :2], anc[:, :2] + d[:, 2:]], 1)
    pts = anc[:, None, :2] + (lmk * s).reshape(-1, 5, 2)
    return boxes, pts


def _gather_insightface(spec: ModelSpec, outs: Sequence, size: int) -> tuple:
    """One frame's 9 outputs (by index, as FaceFusion reads them) → batch-1 (loc, conf, lmk)."""
    counts = insightface_counts(size)
    if len(outs) != 3 * len(STRIDES):
        raise ModelError(f"model '{spec.name}' | got {len(outs)} outputs; expected "
                         f"{3 * len(STRIDES)} (scores, boxes, landmarks per stride 8/16/32)")
    for i, o in enumerate(outs):
        want = (counts[i % 3], INSIGHTFACE_WIDTHS[i // 3])
        if tuple(o.shape) != want:
            name = spec.outputs[i].name if i < len(spec.outputs) else str(i)
            raise ModelError(f"output '{name}' (index {i}) | got shape {tuple(o.shape)}; "
                             f"expected {want} for a {size}x{size} input")
    cat = _concat(outs[0])
    conf, loc, lmk = (cat(outs[j:j + 3])[None] for j in (0, 3, 6))
    return loc, conf, lmk


def _concat(like) -> Callable:
    """np.concatenate, or torch.cat for tensors (the device path gathers with the same code)."""
    if isinstance(like, np.ndarray):
        return np.concatenate
    import torch
    return torch.cat


# -- yolo ------------------------------------------------------------------------------------

def yolo_count(size: int) -> int:
    """Anchors of a YOLOv8 head on a ``size``×``size`` input: 8400 at 640."""
    return sum((size // s) ** 2 for s in STRIDES)


def decode_yolo(loc: np.ndarray, lmk: np.ndarray, anc: None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(cx, cy, w, h) → (x1, y1, x2, y2); (x, y, visibility) x 5 → (K, 5, 2); input pixels."""
    half = loc[:, 2:] / 2
    boxes = np.concatenate([loc[:, :2] - half, loc[:, :2] + half], 1)
    return boxes, lmk.reshape(-1, 5, 3)[:, :, :2]


def _gather_yolo(spec: ModelSpec, outs: Sequence, size: int) -> tuple:
    """(N, 20, A) → (N, A, 20) split into box, score, landmarks (``numpy.split(.., [4, 5])``)."""
    o = outs[0]
    want = (YOLO_CHANNELS, yolo_count(size))
    if o.ndim != 3 or tuple(o.shape[1:]) != want:
        raise ModelError(f"output '{spec.outputs[0].name}' (index 0) | got shape "
                         f"{tuple(o.shape)}; expected (1, {want[0]}, {want[1]}) for a "
                         f"{size}x{size} input")
    t = o.swapaxes(1, 2)  # numpy and torch alike
    return t[..., :4], t[..., 4:5], t[..., 5:]


# -- the registry ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Decoder:
    """How one family of detectors is decoded.

    Attributes:
        anchors: the anchor table for an S×S input (None: decoded in the graph).
        count: anchors for an S×S input (the output length the contract's "A" axes take).
        gather: (spec, outputs in spec order, S) → batch-first (loc, conf, lmk); raises
            ``ModelError`` for outputs of the wrong shape. numpy or torch alike.
        decode: (loc, lmk, anchors) of the kept anchors → boxes (K, 4), landmarks (K, 5, 2).
        units: "normalised" (× S for input pixels) or "pixels".
        score_column / inclusive: conf[..., column] is the score; kept if ``>=`` (inclusive)
            or ``>`` the threshold.
        multiple: S must be a multiple of this (None: any).
        device: the torch twin of ``decode`` in ``pipeline/device/decoders.py``.
    """

    name: str
    anchors: Callable[[int], np.ndarray | None]
    count: Callable[[int], int]
    gather: Callable[[ModelSpec, Sequence, int], tuple]
    decode: Callable
    units: str
    score_column: int
    inclusive: bool
    multiple: int | None
    device: str

    def dims(self, spec: ModelSpec, size: int) -> dict[str, int]:
        """Symbolic output axes → their length for an S×S input (``with_anchor_count``)."""
        self.check_size(spec, size)
        if self.name == "insightface_anchors":
            return {f"A{s}": n for s, n in zip(STRIDES, insightface_counts(size))}
        return {"A": self.count(size)}

    def check_size(self, spec: ModelSpec, size: int) -> None:
        """``InputError`` for a detector input side this model cannot take."""
        fixed = [d for d in spec.inputs[0].shape[2:] if isinstance(d, int)]
        if fixed and any(d != size for d in fixed):
            raise InputError(f"det_size {size} | detector '{spec.name}' takes a fixed "
                             f"{fixed[0]}x{fixed[-1]} input; expected det_size {fixed[0]}")
        if size < 32 or (self.multiple and size % self.multiple):
            raise InputError(f"det_size {size} | detector '{spec.name}' needs a multiple of "
                             f"{self.multiple or 32} (its strides are 8, 16, 32), >= 32")


DECODERS: dict[str, Decoder] = {
    "retinaface_priors": Decoder("retinaface_priors", priors, lambda s: len(priors(s)),
                                 _gather_retinaface, decode, "normalised", 1, False, None,
                                 "decode_retinaface"),
    "insightface_anchors": Decoder("insightface_anchors", insightface_anchors,
                                   lambda s: sum(insightface_counts(s)), _gather_insightface,
                                   decode_insightface, "pixels", 0, True, 32,
                                   "decode_insightface"),
    "yolo": Decoder("yolo", lambda s: None, yolo_count, _gather_yolo, decode_yolo, "pixels",
                    0, False, 32, "decode_yolo"),
}


def decoder_for(spec: ModelSpec) -> Decoder:
    """The decoder ``spec.extra["decoder"]`` names; a one-line ``ModelError`` otherwise."""
    name = spec.extra.get("decoder")
    if spec.task != "detect" or name not in DECODERS:
        raise ModelError(f"model '{spec.name}' | decoder {name!r} (task '{spec.task}') is not a "
                         f"detector decoder; expected extra['decoder'] in: {', '.join(DECODERS)}")
    return DECODERS[name]


def batch_one(spec: ModelSpec) -> bool:
    """The file takes one frame per call (FaceFusion's detectors: a fixed batch of 1)."""
    return isinstance(spec.inputs[0].shape[0], int)
