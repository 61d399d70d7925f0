"""Model versions: a loaded pipeline with its own batchers, and how requests use one.

A ``ModelVersion`` runs the pipeline's stages itself (not ``process_frame``) because requests
with different sources share it and its detector/generator calls are batched across them:
detect (batched) → select → swap (batched; see ``_swap_batch``) → paste (per request).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import NoFaceError
from ..pipeline.host.align import warp_face
from ..pipeline.host.paste import paste_back
from ..pipeline.pipeline import FaceSwapPipeline
from ..pipeline.select import select_faces
from ..pipeline.host.swap import NeuralSwapper, SourceIdentity, SwapResult
from ..pipeline.types import Face
from .batcher import DynamicBatcher
from .metrics import Metrics
from .settings import ServeSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A source identity made ready for one version: the face (and embedding) plus the
    generator's latent (neural swappers) so repeated requests skip that work."""

    source: SourceIdentity
    latent: np.ndarray | None = None


@dataclass(eq=False)
class SwapItem:
    frame: np.ndarray
    face: Face
    prepared: Prepared


@dataclass
class SwapOutcome:
    image: np.ndarray
    faces: int
    version: str
    stages_ms: dict[str, float] = field(default_factory=dict)
    batch: int = 0  # generator batch size this request's first face ran in


def fingerprint(pipe: FaceSwapPipeline) -> str:
    """8 hex digits that change when any loaded model file changes (path, size, mtime)."""
    h = hashlib.sha256()
    for stage in (pipe.detector, pipe.embedder, pipe.swapper):
        engine = getattr(stage, "engine", None)
        path = getattr(getattr(engine, "artifact", None), "onnx_path", None)
        h.update(str(path).encode())
        if path is not None and path.is_file():
            st = path.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:8]


class ModelVersion:
    """One loaded pipeline serving requests through its own detect and swap batchers."""

    def __init__(self, version: str, pipe: FaceSwapPipeline, settings: ServeSettings,
                 metrics: Metrics | None = None):
        self.version, self.pipe, self.settings = version, pipe, settings
        self.neural = isinstance(pipe.swapper, NeuralSwapper)
        hooks = dict(on_batch=metrics.on_batch, on_depth=metrics.on_depth) if metrics else {}
        # Room for every accepted request's items plus job frames; admission (``queue``) bounds it.
        size = max(4 * settings.queue, 4 * settings.max_batch)
        self.detect_q = DynamicBatcher("detect", pipe.detector.detect_batch, settings.max_batch,
                                       settings.max_delay_ms, size, **hooks)
        self.swap_q = DynamicBatcher("swap", self._swap_batch, settings.max_batch,
                                     settings.max_delay_ms, size, **hooks)
        self.stages = pipe.describe()
        self._inflight = 0
        self._idle = threading.Condition()
        self.closed = False

    # -- reference counting (reload drains old versions) -------------------------
    def acquire(self) -> None:
        with self._idle:
            self._inflight += 1

    def release(self) -> None:
        with self._idle:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    @property
    def inflight(self) -> int:
        return self._inflight

    def drain_and_close(self, timeout: float = 600.0) -> None:
        """Wait for every request and job using this version, then free its engines."""
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0, timeout)
            left = self._inflight
        if left:
            log.warning("version %s | %d users still active after %.0f s; closing anyway",
                        self.version, left, timeout)
        self.detect_q.close()
        self.swap_q.close()
        self.pipe.close()
        self.closed = True
        log.info("version %s | closed", self.version)

    # -- batch work (runs in the batcher threads) ---------------------------------
    def _swap_batch(self, items: list[SwapItem]) -> list[SwapResult]:
        """Swap many faces. Neural: one generator call for the whole batch, one latent row per
        crop (identities may differ). Classic has no model, so there is nothing to batch: it
        runs per item."""
        sw = self.pipe.swapper
        if not self.neural:
            return [sw.swap(it.frame, it.face, it.prepared.source) for it in items]
        warped = [warp_face(it.frame, it.face.landmarks, sw.template, sw.size) for it in items]
        latents = np.stack([np.asarray(it.prepared.latent, np.float32).reshape(-1)
                            for it in items])
        crops = sw.swap_crops([w[0] for w in warped], latents)
        return [SwapResult(crop, w[1]) for crop, w in zip(crops, warped)]

    # -- identities -----------------------------------------------------------------
    def _finish_identity(self, image: np.ndarray, faces: list[Face], role: str) -> Prepared:
        if not faces:
            raise NoFaceError(f"{role} image | no face found; expected a photo with a visible face")
        face = max(faces, key=lambda f: f.area)
        latent = None
        if self.pipe.embedder is not None:
            face = self.pipe.embedder.embed(image, [face])[0]
        if self.neural:
            latent = self.pipe.swapper.latent(face.embedding)
        return Prepared(SourceIdentity(face, image, role), latent)

    async def prepare(self, image: np.ndarray, timeout: float, role: str = "source") -> Prepared:
        faces, _ = await self.detect_q.run(image, timeout)
        return await asyncio.to_thread(self._finish_identity, image, faces, role)

    def prepare_sync(self, image: np.ndarray, role: str = "source") -> Prepared:
        faces = self.detect_q.run_sync([image])[0]
        return self._finish_identity(image, faces, role)

    # -- frames ---------------------------------------------------------------------
    def _paste(self, frame: np.ndarray, results: list[SwapResult]) -> np.ndarray:
        c, out = self.pipe.config, frame
        for res in results:
            out = paste_back(out, res.crop, res.matrix, mask=res.mask, feather=c.feather,
                             color_transfer=c.color_transfer, poisson=c.poisson)
        return out if results else frame.copy()

    def _select(self, faces: list[Face]) -> list[Face]:
        return select_faces(faces, self.pipe.config.select)

    async def swap(self, frame: np.ndarray, prepared: Prepared, timeout: float) -> SwapOutcome:
        """One request: detect and swap through the batchers, paste in a worker thread."""
        deadline = time.perf_counter() + timeout
        ms: dict[str, float] = {}
        faces, t = await self.detect_q.run(frame, timeout)
        ms["detect_queue"], ms["detect"] = t.wait_ms, t.run_ms
        faces = self._select(faces)
        batch = 0
        results: list[SwapResult] = []
        if faces:
            left = max(deadline - time.perf_counter(), 0.001)
            done = await asyncio.gather(*(self.swap_q.run(SwapItem(frame, f, prepared), left)
                                          for f in faces))
            results = [r for r, _ in done]
            ms["swap_queue"] = max(t.wait_ms for _, t in done)
            ms["swap"] = max(t.run_ms for _, t in done)
            batch = done[0][1].batch_size
        t0 = time.perf_counter()
        out = await asyncio.to_thread(self._paste, frame, results)
        ms["paste"] = (time.perf_counter() - t0) * 1000.0
        return SwapOutcome(out, len(results), self.version, ms, batch)

    def process_frames(self, frames: list[np.ndarray], prepared: Prepared
                       ) -> list[tuple[np.ndarray, int]]:
        """Video jobs: several frames at once, so their crops batch (blocking; job thread)."""
        all_faces = [self._select(f) for f in self.detect_q.run_sync(frames)]
        items = [SwapItem(fr, face, prepared) for fr, faces in zip(frames, all_faces)
                 for face in faces]
        results = iter(self.swap_q.run_sync(items))
        return [(self._paste(fr, [next(results) for _ in faces]), len(faces))
                for fr, faces in zip(frames, all_faces)]
