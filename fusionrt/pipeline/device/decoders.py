"""The torch twins of the host decoders (``pipeline/host/decoders.py``, where the registry
lives: each ``Decoder.device`` names its function here). Same formulas, same operation order
as the numpy versions; inputs are the kept anchors' rows, outputs boxes (K, 4) and landmarks
(K, 5, 2) in the decoder's units."""

from __future__ import annotations

from typing import Callable

from ..host.decoders import VARIANCES, Decoder
from . import require_torch


def decode_retinaface(l, lm, pri):
    """Pytorch_Retinaface decode against priors (cx, cy, w, h), normalised units."""
    torch = require_torch()
    v0, v1 = VARIANCES
    cxcy = pri[:, :2] + l[:, :2] * v0 * pri[:, 2:]
    wh = pri[:, 2:] * torch.exp(l[:, 2:] * v1)
    boxes = torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1)
    pts = pri[:, None, :2] + lm.view(-1, 5, 2) * v0 * pri[:, None, 2:]
    return boxes, pts


def decode_insightface(l, lm, anc):
    """FaceFusion ``distance_to_bounding_box`` / ``distance_to_face_landmark_5`` of raw * stride
    against anchors (x, y, stride); input pixels."""
    torch = require_torch()
    s = anc[:, 2:3]
    d = l * s
    boxes = torch.cat([anc[:, :2] - d[:, :2], anc[:, :2] + d[:, 2:]], 1)
    pts = anc[:, None, :2] + (lm * s).reshape(-1, 5, 2)
    return boxes, pts


def decode_yolo(l, lm, anc=None):
    """(cx, cy, w, h) → corners; (x, y, visibility) x 5 → points; input pixels."""
    torch = require_torch()
    half = l[:, 2:] / 2
    boxes = torch.cat([l[:, :2] - half, l[:, :2] + half], 1)
    return boxes, lm.reshape(-1, 5, 3)[:, :, :2]


def device_decode(decoder: Decoder) -> Callable:
    """The torch decode for ``decoder``."""
    return globals()[decoder.device]


def unrotate_points(pts, angle: int, width: int, height: int):
    """Torch twin of ``host.detect.unrotate_points``: (..., 2) points of the frame rotated
    ``angle``° counter-clockwise → the upright ``width``×``height`` frame."""
    torch = require_torch()
    x, y = pts[..., 0], pts[..., 1]
    k = angle // 90 % 4
    if k == 0:
        return pts
    up = {1: (width - y, x), 2: (width - x, height - y), 3: (y, height - x)}[k]
    return torch.stack(up, -1)


def unrotate_boxes(boxes, angle: int, width: int, height: int):
    """(K, 4) boxes of the rotated frame → upright boxes (the min/max of the mapped corners)."""
    torch = require_torch()
    a = unrotate_points(boxes[:, :2], angle, width, height)
    b = unrotate_points(boxes[:, 2:], angle, width, height)
    return torch.cat([torch.minimum(a, b), torch.maximum(a, b)], 1)
