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
from .enhance import FaceEnhancer
from .landmark import Landmarker
from .masks import AREAS, REGIONS, FaceParser, Occluder, area_mask, combine, paste_box, to_crop
from .paste import paste_back
from .swap import NeuralSwapper, SwapResult, explode_pixel_boost, implode_pixel_boost


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
                                     s.det_size, s.detector_angles)
            self.embedder = Embedder(eng["embed"]) if "embed" in eng else None
            self.landmarker = Landmarker(eng["landmark"]) if "landmark" in eng else None
            self.swapper = (NeuralSwapper(eng["swap"], converter=eng.get("convert"))
                            if "swap" in eng else ClassicSwapper())
            self.enhancer = (FaceEnhancer(eng["enhance"], s.enhancer_blend, s.enhancer_weight,
                                          s.box_blur) if "enhance" in eng else None)
            self.occluder = Occluder(eng["occlude"]) if "occlude" in eng else None
            self.parser = (FaceParser(eng["parse"], s.mask_regions or tuple(REGIONS))
                           if "parse" in eng else None)
        except BaseException:
            self.close()
            raise
        self.neural = isinstance(self.swapper, NeuralSwapper)
        self.settings = s
        if self.neural:
            self.boost = s.pixel_boost or self.swapper.size
            self.box = paste_box(s, self.boost)

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
            faces = self.detector.detect_batch([batch[r] for r in rows])
        if self.landmarker is None:
            return faces
        with self.timer.stage("landmark"):  # 68 points; the 5 from them when confident
            return self.landmarker.refine_batch([batch[r] for r in rows], faces)

    def embed(self, batch: list[np.ndarray], faces: list[list[Face]], rows: Sequence[int]
              ) -> list[list[Face]]:
        flat = [(r, f) for r, fl in zip(rows, faces) for f in fl]
        if not flat:
            return faces
        with self.timer.stage("embed"):
            raw = self.embedder.embed_crops_raw([self.embedder.crop(batch[r], f)
                                                 for r, f in flat])
        embs, scales = iter(l2norm(raw)), iter(embedding_scales(raw))
        return [[Face(f.box, f.score, f.landmarks, next(embs), next(scales), f.landmarks68)
                 for f in fl] for fl in faces]

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
            flat = [f for fl in faces for f in fl]
            warped = [warp_face(batch[i], f.landmarks, sw.template, self.boost)
                      for i, fl in enumerate(faces) for f in fl]
            if not warped:
                return [[] for _ in faces]
            latents = np.stack([np.asarray(ident.latent, np.float32).reshape(-1)
                                for il in identities for ident in il])
            targets = [w[0] for w in warped]
            total = self.boost // sw.size
            if total > 1:  # every tile of every face in one generator call
                tiles = implode_pixel_boost(np.stack(targets), total)
                out = sw.swap_crops(list(tiles), np.repeat(latents, total * total, 0))
                swapped = list(explode_pixel_boost(np.stack(out), total))
            else:
                swapped = sw.swap_crops(targets, latents)
        masks = self._masks(targets, swapped, [w[1] for w in warped], flat)
        crops, mats, ms = iter(swapped), iter(w[1] for w in warped), iter(masks)
        return [[SwapResult(next(crops), next(mats), next(ms)) for _ in fl] for fl in faces]

    def _masks(self, targets: list[np.ndarray], swapped: list[np.ndarray],
               mats: list[np.ndarray], faces: list[Face]) -> list[np.ndarray | None]:
        """Each face's paste mask in crop space, as FaceFusion's ``swap_face`` makes it: box and
        occlusion from the target crop, area and region from the swapped one, their minimum.
        None (the paste's default feathered box) when only that box is asked for."""
        s = self.settings
        if s.masks == ("box",) and not s.facefusion_box:
            return [None] * len(targets)
        with self.timer.stage("masks"):
            size = self.boost
            parts = []
            if "box" in s.masks:
                parts.append(np.repeat(self.box[None], len(targets), 0))
            if self.occluder is not None:
                parts.append(self.occluder.masks(targets))
            if "area" in s.masks:
                parts.append(np.stack([area_mask(size, to_crop(f.landmarks68, m),
                                                 s.mask_areas or tuple(AREAS))
                                       if f.landmarks68 is not None else np.ones((size, size),
                                                                                 np.float32)
                                       for f, m in zip(faces, mats)]))
            if self.parser is not None:
                parts.append(self.parser.masks(swapped))
            return list(combine(parts))

    def enhance(self, batch: list[np.ndarray], faces: list[list[Face]]) -> None:
        """FaceFusion's face enhancer on every swapped face of the batch, in place (after the
        paste: the enhancer crops the pasted frame on the template it was trained with)."""
        extra = self.occluder.masks if self.occluder is not None else None
        with self.timer.stage("enhance"):
            for i, fl in enumerate(faces):
                if fl:
                    batch[i] = self.enhancer.enhance(batch[i], fl, extra_mask=extra)

    def paste(self, batch: list[np.ndarray], faces: list[list[Face]],
              swapped: list[list[SwapResult]]) -> None:
        c = self.settings
        with self.timer.stage("paste"):
            for i, results in enumerate(swapped):
                for res in results:
                    batch[i] = paste_back(batch[i], res.crop, res.matrix, mask=res.mask,
                                          feather=c.feather, color_transfer=c.color_transfer,
                                          poisson=c.poisson)

