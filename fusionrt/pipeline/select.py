"""Which detected faces to swap: the largest, all of them, or those matching a reference."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError
from .types import Face

MODES = ("largest", "all", "reference")


def select_faces(faces: Sequence[Face], mode: str = "largest", reference: np.ndarray | None = None,
                 threshold: float = 0.4) -> list[Face]:
    """Faces to swap, in the order given.

    Args:
        faces: detections of one frame.
        mode: ``"largest"`` (by box area), ``"all"``, or ``"reference"``: faces whose embedding
            has cosine similarity >= ``threshold`` with ``reference``.
        reference: L2-normalised embedding of the person to replace (mode "reference").
        threshold: cosine similarity cut-off; 0.4 is a common ArcFace same-person threshold.
    """
    if mode not in MODES:
        raise InputError(f"selection '{mode}' | unknown; expected one of: {', '.join(MODES)}")
    faces = list(faces)
    if not faces:
        return []
    if mode == "all":
        return faces
    if mode == "largest":
        return [max(faces, key=lambda f: f.area)]
    if reference is None:
        raise InputError("selection 'reference' | no reference embedding; pass --reference IMAGE")
    ref = np.asarray(reference, np.float32).ravel()
    ref = ref / max(float(np.linalg.norm(ref)), 1e-12)
    chosen = []
    for f in faces:
        if f.embedding is None:
            raise InputError("selection 'reference' | faces carry no embeddings; the embed stage "
                             "must run before selection")
        e = np.asarray(f.embedding, np.float32).ravel()
        if float(e @ ref) / max(float(np.linalg.norm(e)), 1e-12) >= threshold:
            chosen.append(f)
    return chosen
