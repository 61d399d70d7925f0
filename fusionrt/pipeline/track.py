"""``--detect-every N``: faces between detections, and landmark smoothing at each detection.

Detection runs on every N-th frame; the frames in between reuse the faces of the last
detection. At each detection, a face is matched to the tracked face whose box overlaps it most
(IoU >= ``min_iou``) and its landmarks and box become ``smoothing * old + (1 - smoothing) * new``
so that the crop does not jitter from detection to detection; unmatched faces start fresh,
tracked faces not seen again are dropped.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .types import Face


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class LandmarkTracker:
    """Holds the current faces of one video (one tracker per video, frames in order)."""

    def __init__(self, smoothing: float = 0.5, min_iou: float = 0.3):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing | got {smoothing}; expected 0 <= smoothing < 1")
        self.smoothing = float(smoothing)
        self.min_iou = float(min_iou)
        self.faces: list[Face] = []

    def update(self, detected: list[Face]) -> list[Face]:
        """New detections in; the smoothed faces to use for this frame out."""
        taken: set[int] = set()
        out = []
        for face in detected:
            best, best_iou = None, self.min_iou
            for j, old in enumerate(self.faces):
                if j in taken:
                    continue
                iou = _iou(face.box, old.box)
                if iou >= best_iou:
                    best, best_iou = j, iou
            if best is None or self.smoothing == 0.0:
                out.append(face)
                continue
            taken.add(best)
            old, w = self.faces[best], self.smoothing
            out.append(replace(face,
                               box=(w * old.box + (1 - w) * face.box).astype(np.float32),
                               landmarks=(w * old.landmarks + (1 - w) * face.landmarks)
                               .astype(np.float32),
                               landmarks68=face.landmarks68 if old.landmarks68 is None
                               or face.landmarks68 is None else
                               (w * old.landmarks68 + (1 - w) * face.landmarks68)
                               .astype(np.float32)))
        self.faces = out
        return list(out)

    def current(self) -> list[Face]:
        """The faces to use on a frame without detection."""
        return list(self.faces)

    def reset(self) -> None:
        self.faces = []
