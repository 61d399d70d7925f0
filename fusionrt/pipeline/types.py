"""Data that flows between stages: frame → faces → aligned crops → swapped crops → frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Face:
    """One detected face in frame pixel coordinates.

    Attributes:
        box: (x1, y1, x2, y2) float32.
        score: detector confidence in [0, 1].
        landmarks: (5, 2) float32 — left eye, right eye, nose, left mouth, right mouth
            (image left/right, the RetinaFace/ArcFace order).
        embedding: L2-normalised identity vector, when the embed stage ran.
        embedding_scale: the L2 norm of the embedder's raw output (raw = embedding * scale):
            FaceFusion's identity converters take the raw vector.
        landmarks68: (68, 2) float32 from the landmark stage when its score beat the threshold
            (``landmarks`` are then the 5 points taken from these, as FaceFusion's '5/68').
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray | None = None
    embedding_scale: float | None = None
    landmarks68: np.ndarray | None = None

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))


@dataclass(frozen=True)
class Identity:
    """A face to put into targets (or, for ``select="reference"``, the person to replace): its
    detection with embedding when an embedder ran, the image it came from (the classic swapper
    transplants pixels from it), where that image was read from (for messages), and the
    generator's source vector for it (neural swappers; kernel-set specific: numpy or tensor)."""

    face: Face
    image: np.ndarray
    path: str | None = None
    latent: object = None

    @property
    def embedding(self) -> np.ndarray | None:
        return self.face.embedding
