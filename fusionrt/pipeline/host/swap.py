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

    The two contracts differ only in data the spec carries:
      * inswapper (``extra.source_transform == "emap"``): source = l2norm(embedding @ emap);
        target RGB / 255 on the ``arcface_128`` template.
      * simswap (``"l2norm"``): source = the L2-normalised embedding; target ImageNet-normalised.
    Both outputs are RGB in [0, 1] (zoo ``extra.output_denorm``: "clip(out, 0, 1) * 255", no
    ImageNet undo for SimSwap, as FaceFusion does); a spec with ``extra.output == "tanh"``
    ([-1, 1]) is mapped with (x + 1) / 2 first.
    """

    needs_embedding = True

    def __init__(self, engine: Engine, spec: ModelSpec | None = None):
        self.engine = engine
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
        elif self.transform != "l2norm":
            raise ModelError(f"model '{s.name}' | source_transform {self.transform!r}; expected "
                             "'emap' or 'l2norm'")

    def latent(self, embedding: np.ndarray) -> np.ndarray:
        """(1, 512) float32 source vector the generator takes for this identity."""
        e = l2norm(np.asarray(embedding, np.float32).reshape(1, -1))
        if self._emap is not None:
            e = l2norm(e @ self._emap)
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
        out = self.swap_crops([crop], self.latent(source.embedding))[0]
        return SwapResult(out, m)
