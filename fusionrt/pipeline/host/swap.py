"""Swappers: given a frame, a target face and the source identity, make a swapped aligned crop.

``NeuralSwapper`` runs a generator (inswapper_128 or simswap_256 contracts, real or synthetic
weights) on any engine; its pre/post-processing comes from the model's ``ModelSpec``.
``ClassicSwapper`` (classic.py) needs no weights. Both return the crop plus the frame→crop
matrix; paste-back puts the crop into the frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ...engines.base import Engine
from ...errors import ModelError
from ...models.spec import ModelSpec
from .align import warp_face
from .embed import l2norm, to_tensor
from ..types import Face, Identity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwapResult:
    """A swapped face in aligned space: ``crop`` (BGR uint8), the frame→crop ``matrix`` and,
    when the swapper knows the face's shape, a ``mask`` (crop-space weights in [0, 1])."""

    crop: np.ndarray
    matrix: np.ndarray
    mask: np.ndarray | None = None


@runtime_checkable
class Swapper(Protocol):
    name: str
    needs_embedding: bool

    def swap(self, frame: np.ndarray, face: Face, source: Identity) -> SwapResult: ...


def read_emap(onnx_path: Path, index: int = -1) -> np.ndarray:
    """inswapper's 512×512 ``emap``: the graph's initializer at ``index`` (the spec's
    ``extra["emap"]["initializer_index"]``; -1, the last, is where insightface's ``INSwapper``
    reads it)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModelError("model 'inswapper' | reading emap needs onnx: pip install onnx") from None
    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as e:  # protobuf decode errors have many types
        raise ModelError(f"model file '{onnx_path}' | cannot be read by onnx: {e}") from None
    inits = list(graph.initializer)
    if not -len(inits) <= index < len(inits):
        raise ModelError(f"model file '{onnx_path}' | no initializer at index {index} to read "
                         f"emap from ({len(inits)} initializers)")
    emap = numpy_helper.to_array(inits[index]).astype(np.float32)
    if emap.shape != (512, 512):
        raise ModelError(f"model file '{onnx_path}' | emap initializer '{inits[index].name}' "
                         f"has shape {emap.shape}; expected (512, 512)")
    return emap


class NeuralSwapper:
    """A generator swapper on any engine.

    The contracts differ only in data the spec carries (``extra.source_transform``):
      * ``"emap"`` (inswapper): source = l2norm(embedding @ emap); target RGB / 255 on the
        ``arcface_128`` template.
      * ``"l2norm"`` (hyperswap): source = the L2-normalised embedding.
      * ``"converter_l2norm"`` (simswap): source = l2norm(converter(raw embedding)), and
        ``"converter"`` (ghost): converter(raw embedding) — FaceFusion 3.8.1
        ``face_swapper/core.py`` ``prepare_source_embedding`` / ``convert_source_embedding``.
        ``converter`` is the engine of the spec's ``extra.converter`` model (the plan's
        ``convert`` stage); without one (a bare swapper in a test or a calibration script)
        the unit embedding stands in for the converted one, with a warning.
    Outputs are RGB in [0, 1] (zoo ``extra.output_denorm``: "clip(out, 0, 1) * 255", no
    ImageNet undo for SimSwap, as FaceFusion does); a spec with ``extra.output == "tanh"``
    ([-1, 1], e.g. hyperswap's x * 0.5 + 0.5) is mapped with (x + 1) / 2 first.
    """

    TRANSFORMS = ("emap", "l2norm", "converter_l2norm", "converter")

    needs_embedding = True

    def __init__(self, engine: Engine, spec: ModelSpec | None = None,
                 converter: Engine | None = None):
        self.engine = engine
        self.converter = converter
        self.spec = spec or engine.spec
        s = self.spec
        if s.task != "swap" or s.template is None or s.preprocess.size is None:
            raise ModelError(f"model '{s.name}' | task {s.task!r}, template {s.template!r}; "
                             "expected a swap model with a template and a fixed input size")
        self.name = s.name
        self.size = int(s.preprocess.size[0])
        self.template = s.template
        self.transform = s.extra.get("source_transform", "l2norm")
        self.output_range = s.extra.get("output", "unit")
        names = {t.name for t in s.inputs}
        if not {"target", "source"} <= names:
            raise ModelError(f"model '{s.name}' | inputs {sorted(names)}; expected "
                             "'target' and 'source'")
        self.output_name = s.outputs[0].name
        self._emap: np.ndarray | None = None
        if self.transform == "emap":
            path = engine.artifact.onnx_path
            if path is None:
                raise ModelError(f"model '{s.name}' | needs its ONNX file to read emap")
            where = s.extra.get("emap", {})
            self._emap = read_emap(Path(path), int(where.get("initializer_index", -1)))
        elif self.transform not in self.TRANSFORMS:
            raise ModelError(f"model '{s.name}' | source_transform {self.transform!r}; expected "
                             f"one of: {', '.join(self.TRANSFORMS)}")
        self.converter_name = s.extra.get("converter")
        if self.transform.startswith("converter"):
            if converter is None:
                log.warning("swapper '%s' | no '%s' converter engine; the unit ArcFace "
                            "embedding stands in for the converted identity", s.name,
                            self.converter_name)
            elif converter.spec.name != self.converter_name:
                raise ModelError(f"swapper '{s.name}' | converter '{converter.spec.name}'; "
                                 f"expected '{self.converter_name}'")

    def latent(self, embedding: np.ndarray, scale: float | None = None) -> np.ndarray:
        """(1, 512) float32 source vector the generator takes for this identity.

        ``embedding`` is the unit ArcFace vector, ``scale`` the norm of the raw one
        (``Face.embedding_scale``): converters take ``embedding * scale``, as FaceFusion feeds
        them ``source_face.embedding``; without a scale the unit vector goes in."""
        e = l2norm(np.asarray(embedding, np.float32).reshape(1, -1))
        if self._emap is not None:
            e = l2norm(e @ self._emap)
        elif self.transform.startswith("converter") and self.converter is not None:
            raw = e * np.float32(scale if scale is not None else 1.0)
            c = self.converter
            e = np.asarray(c.run({c.inputs[0].name: np.ascontiguousarray(raw, np.float32)})
                           [c.outputs[0].name], np.float32).reshape(1, -1)
            if self.transform == "converter_l2norm":
                e = l2norm(e)
        return e.astype(np.float32)

    def swap_crops(self, crops: Sequence[np.ndarray], latent: np.ndarray) -> list[np.ndarray]:
        """Aligned BGR uint8 crops → swapped BGR uint8 crops, one engine call for all.

        ``latent`` is one identity (D,) for every crop, or one row per crop (N, D), so a batch
        may mix identities (the serving batcher does)."""
        p = self.spec.preprocess
        x = to_tensor(crops, p.channel_order, p.mean, p.std)
        lat = np.asarray(latent, np.float32)
        lat = lat.reshape(-1, lat.shape[-1])
        src = np.ascontiguousarray(lat if len(lat) == len(crops) else np.repeat(lat[:1], len(crops), 0))
        y = np.asarray(self.engine.run({"target": x, "source": src})[self.output_name], np.float32)
        if self.output_range == "tanh":
            y = (y + 1.0) / 2.0
        img = np.clip(y.transpose(0, 2, 3, 1) * 255.0, 0, 255).round().astype(np.uint8)
        if p.channel_order == "RGB":
            img = img[..., ::-1]
        return [np.ascontiguousarray(i) for i in img]

    def swap(self, frame: np.ndarray, face: Face, source: Identity) -> SwapResult:
        if source.embedding is None:
            raise ModelError(f"swapper '{self.name}' | source identity has no embedding; "
                             "an embedder must run on the source first")
        crop, m = warp_face(frame, face.landmarks, self.template, self.size)
        out = self.swap_crops([crop], self.latent(source.embedding,
                                                  source.face.embedding_scale))[0]
        return SwapResult(out, m)


def implode_pixel_boost(crops: np.ndarray, total: int) -> np.ndarray:
    """(K, B, B, C) crops at the pixel-boost size → (K * total², B / total, B / total, C)
    tiles, tile i·total + j holding pixels (y·total + i, x·total + j): FaceFusion 3.8.1
    ``face_swapper/core.py`` ``implode_pixel_boost``, for K faces at once."""
    k, b = crops.shape[0], crops.shape[1]
    s = b // total
    t = crops.reshape(k, s, total, s, total, -1).transpose(0, 2, 4, 1, 3, 5)
    return t.reshape(k * total * total, s, s, -1)


def explode_pixel_boost(tiles: np.ndarray, total: int) -> np.ndarray:
    """The inverse of ``implode_pixel_boost`` (FaceFusion's ``explode_pixel_boost``)."""
    n, s = tiles.shape[0], tiles.shape[1]
    k = n // (total * total)
    t = tiles.reshape(k, total, total, s, s, -1).transpose(0, 3, 1, 4, 2, 5)
    return t.reshape(k, s * total, s * total, -1)
