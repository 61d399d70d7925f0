"""Identity embedding: ArcFace on an aligned 112×112 crop, L2-normalised."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...engines.base import Engine
from .align import warp_face
from ..types import Face


def to_tensor(crops: Sequence[np.ndarray], channel_order: str, mean, std) -> np.ndarray:
    """BGR uint8 crops → (N, 3, H, W) float32, channel order and (x - mean) / std per the spec."""
    x = np.stack(crops).astype(np.float32)
    if channel_order == "RGB":
        x = x[..., ::-1]
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def l2norm(v: np.ndarray, axis: int = -1) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=axis, keepdims=True), 1e-12)


class Embedder:
    """ArcFace embedder on any engine honouring an ``embed`` spec (real or synthetic weights):
    crop with the spec's template at the spec's size, normalise per the spec, L2-normalise."""

    def __init__(self, engine: Engine):
        self.engine = engine
        spec = engine.spec
        self.template = spec.template or "arcface_112"
        self.size = spec.preprocess.size[0] if spec.preprocess.size else 112
        self.input_name = spec.inputs[0].name
        self.output_name = spec.outputs[0].name

    def crop(self, image: np.ndarray, face: Face) -> np.ndarray:
        return warp_face(image, face.landmarks, self.template, self.size)[0]

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 512) L2-normalised embeddings of aligned BGR crops, one engine call."""
        return l2norm(self.embed_crops_raw(crops))

    def embed_crops_raw(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 512) raw embedder outputs (identity converters take these, as in FaceFusion)."""
        p = self.engine.spec.preprocess
        x = to_tensor(crops, p.channel_order, p.mean, p.std)
        out = np.asarray(self.engine.run({self.input_name: x})[self.output_name], np.float32)
        return out.reshape(len(crops), -1)

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> list[Face]:
        """The faces with ``embedding`` filled in (new frozen objects)."""
        if not faces:
            return []
        raw = self.embed_crops_raw([self.crop(image, f) for f in faces])
        return [Face(f.box, f.score, f.landmarks, e, s, f.landmarks68)
                for f, e, s in zip(faces, l2norm(raw), embedding_scales(raw))]


def embedding_scales(raw: np.ndarray) -> list[float]:
    """The L2 norm of each raw embedding row (``Face.embedding_scale``)."""
    return [float(n) for n in np.linalg.norm(np.asarray(raw, np.float64), axis=-1)]
