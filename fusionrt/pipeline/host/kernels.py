"""The host kernel set: every stage's pre/post-processing in numpy/OpenCV, frames as BGR uint8
arrays (the FaceFusion-style path, and the CPU path). ``FaceSwapper`` drives it; the device
kernel set (``pipeline/device/kernels.py``) has the same methods on torch tensors.

A batch is a list of frames (sizes may differ: the detector letterboxes each). Crops of every
face in a batch go through the generator in one engine call, one latent row per crop, so faces
of different identities (the service batches requests) share a call.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Any, Iterator, Sequence

import numpy as np

from ...errors import InputError
from ..kernels import KernelSet
from ..types import Face, Identity
from .align import warp_face
from .classic import ClassicSwapper
from .detect import Detector
from .embed import Embedder, embedding_scales, l2norm
from .paste import paste_back
from .swap import NeuralSwapper, SwapResult


class HostTimer:
    """Wall milliseconds per stage, summed."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - t0) * 1000.0

    def summary(self) -> dict[str, float]:
        return dict(self.ms)

    def reset(self) -> None:
        self.ms.clear()


class HostKernels(KernelSet):
    """numpy/OpenCV stages over the plan's engines (any engine that takes numpy feeds)."""

    name = "host"

    def __init__(self) -> None:
        super().__init__()
        self.timer = HostTimer()
        self.embedder: Embedder | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def open(self, plan: Any) -> None:
        s = plan.settings
        try:
            eng = {name: self._open(sp) for name, sp in plan.stages.items()}
            self.detector = Detector(eng["detect"], s.score_threshold, s.nms_threshold,
                                     s.det_size)
            self.embedder = Embedder(eng["embed"]) if "embed" in eng else None
            self.swapper = (NeuralSwapper(eng["swap"], converter=eng.get("convert"))
                            if "swap" in eng else ClassicSwapper())
        except BaseException:
            self.close()
            raise
        self.neural = isinstance(self.swapper, NeuralSwapper)
        self.settings = s

    def session(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    # -- frames in and out --------------------------------------------------------------------
    def images(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        for f in frames:
            if not (isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 3
                    and f.shape[2] == 3):
                got = f"{f.dtype} {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
                raise InputError(f"image | got {got}; expected uint8 (H, W, 3) BGR")
        return list(frames)  # stages return new arrays: the caller's frames are never written

    def frames(self, batch: list[np.ndarray], originals: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The batch's frames; a frame nothing was pasted into is a copy of the original."""
        return [b.copy() if b is o else b for b, o in zip(batch, originals)]

    @staticmethod
    def one(swapped: list[list[SwapResult]], i: int) -> list[list[SwapResult]]:
        """Frame ``i``'s part of ``swap``'s result, as the result of a one-frame batch."""
        return [swapped[i]]

    # -- stages -------------------------------------------------------------------------------
    def detect(self, batch: list[np.ndarray], rows: Sequence[int]) -> list[list[Face]]:
        with self.timer.stage("detect"):
            return self.detector.detect_batch([batch[r] for r in rows])

    def embed(self, batch: list[np.ndarray], faces: list[list[Face]], rows: Sequence[int]
              ) -> list[list[Face]]:
        flat = [(r, f) for r, fl in zip(rows, faces) for f in fl]
        if not flat:
            return faces
        with self.timer.stage("embed"):
            raw = self.embedder.embed_crops_raw([self.embedder.crop(batch[r], f)
                                                 for r, f in flat])
        embs, scales = iter(l2norm(raw)), iter(embedding_scales(raw))
        return [[Face(f.box, f.score, f.landmarks, next(embs), next(scales)) for f in fl]
                for fl in faces]

    def latent(self, embedding: np.ndarray | None, scale: float | None = None
               ) -> np.ndarray | None:
        return (self.swapper.latent(embedding, scale) if self.neural and embedding is not None
                else None)

    def swap(self, batch: list[np.ndarray], faces: list[list[Face]],
             identities: list[list[Identity]]) -> list[list[SwapResult]]:
        """Aligned crops of every face → swapped crops (one generator call for all)."""
        sw = self.swapper
        with self.timer.stage("swap"):
            if not self.neural:
                return [[sw.swap(batch[i], f, ident) for f, ident in zip(fl, il)]
                        for i, (fl, il) in enumerate(zip(faces, identities))]
            warped = [warp_face(batch[i], f.landmarks, sw.template, sw.size)
                      for i, fl in enumerate(faces) for f in fl]
            if not warped:
                return [[] for _ in faces]
            latents = np.stack([np.asarray(ident.latent, np.float32).reshape(-1)
                                for il in identities for ident in il])
            crops = iter(sw.swap_crops([w[0] for w in warped], latents))
            mats = iter(w[1] for w in warped)
            return [[SwapResult(next(crops), next(mats)) for _ in fl] for fl in faces]

    def paste(self, batch: list[np.ndarray], faces: list[list[Face]],
              swapped: list[list[SwapResult]]) -> None:
        c = self.settings
        with self.timer.stage("paste"):
            for i, results in enumerate(swapped):
                for res in results:
                    batch[i] = paste_back(batch[i], res.crop, res.matrix, mask=res.mask,
                                          feather=c.feather, color_transfer=c.color_transfer,
                                          poisson=c.poisson)
