"""The classic swapper: no neural weights, so ``fusionrt swap`` works out of the box.

Both faces are aligned to one canonical template (FFHQ-style, 256²) by their 5 landmarks; in
that space the source face already sits where the target's is, so the swapped crop is the
source crop, colour-matched to the target's skin (LAB mean/std), with an elliptical feathered
face mask. Paste-back warps it onto the target's landmarks. It keeps the source's expression
and lighting (a generator would re-render them); it is the reference output neural swappers are
compared against, and the fallback when none is installed.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from .align import warp_face
from .paste import color_transfer_lab, feather_mask
from .swap import SwapResult
from ..types import Face, Identity

log = logging.getLogger(__name__)

# Face oval in the ffhq_512 template, as fractions of the crop side: centred between the eyes
# and mouth, spanning eyebrows to chin and cheek to cheek (checked on both example photos).
OVAL_CENTER = (0.5, 0.60)
OVAL_AXES = (0.205, 0.255)


def face_oval_mask(size: int, feather: float = 0.06) -> np.ndarray:
    """(size, size) float32 weights: 1 inside the face oval, feathered to 0 at its edge."""
    m = np.zeros((size, size), np.float32)
    center = (int(round(OVAL_CENTER[0] * size)), int(round(OVAL_CENTER[1] * size)))
    axes = (int(round(OVAL_AXES[0] * size)), int(round(OVAL_AXES[1] * size)))
    cv2.ellipse(m, center, axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    return feather_mask(m, feather)


class ClassicSwapper:
    """Landmark-aligned face transplant with colour matching; no model, no engine."""

    name = "classic"
    needs_embedding = False

    def __init__(self, size: int = 256, template: str = "ffhq_512", feather: float = 0.06,
                 color_match: bool = True):
        self.size = int(size)
        self.template = template
        self.color_match = color_match
        self.mask = face_oval_mask(self.size, feather)
        self._source: Identity | None = None
        self._source_crop: np.ndarray | None = None

    def source_crop(self, source: Identity) -> np.ndarray:
        """The source face in canonical space (cached: a video reuses one source)."""
        if source is not self._source:
            self._source_crop = warp_face(source.image, source.face.landmarks,
                                          self.template, self.size)[0]
            self._source = source
        return self._source_crop

    def swap(self, frame: np.ndarray, face: Face, source: Identity) -> SwapResult:
        target, m = warp_face(frame, face.landmarks, self.template, self.size)
        crop = self.source_crop(source)
        if self.color_match:
            # measure skin, not background: statistics only inside the oval
            crop = color_transfer_lab(crop, target, self.mask)
        return SwapResult(crop, m, self.mask)
