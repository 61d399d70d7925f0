"""Model versions: a loaded ``FaceSwapper`` with its own batchers, and how requests use one.

Requests with different sources share a version, so its detector and generator calls are
batched across them: the batchers call ``FaceSwapper.detect`` (many frames, one call) and
``FaceSwapper.swap_faces`` (many faces of different identities, one generator call), and each
request pastes its own results with ``FaceSwapper.paste``. No stage runs here.
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
from ..pipeline.swapper import FaceSwapper
from ..pipeline.types import Face, Identity
from .batcher import DynamicBatcher
from .metrics import Metrics
from .settings import ServeSettings

log = logging.getLogger(__name__)

Prepared = Identity  # a source made ready for one version: face, embedding, generator latent


@dataclass(eq=False)
class SwapItem:
    frame: np.ndarray
    face: Face
    prepared: Identity


@dataclass
class SwapOutcome:
    image: np.ndarray
    faces: int
    version: str
    stages_ms: dict[str, float] = field(default_factory=dict)
    batch: int = 0  # generator batch size this request's first face ran in


def fingerprint(swapper: FaceSwapper) -> str:
    """8 hex digits that change when any loaded model file changes (path, size, mtime)."""
    h = hashlib.sha256()
    for stage in swapper.plan.stages.values():
        path = stage.artifact.onnx_path
        h.update(str(path).encode())
        if path is not None and path.is_file():
            st = path.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:8]


class ModelVersion:
    """One loaded swapper serving requests through its own detect and swap batchers."""

    def __init__(self, version: str, swapper: FaceSwapper, settings: ServeSettings,
                 metrics: Metrics | None = None):
        self.version, self.swapper, self.settings = version, swapper, settings
        self.neural = "swap" in swapper.plan.stages
        hooks = dict(on_batch=metrics.on_batch, on_depth=metrics.on_depth) if metrics else {}
        # Room for every accepted request's items plus job frames; admission (``queue``) bounds it.
        size = max(4 * settings.queue, 4 * settings.max_batch)
        self.detect_q = DynamicBatcher("detect", swapper.detect, settings.max_batch,
                                       settings.max_delay_ms, size, **hooks)
        self.swap_q = DynamicBatcher("swap", self._swap_batch, settings.max_batch,
                                     settings.max_delay_ms, size, **hooks)
        self.stages = swapper.describe()
        self._inflight = 0
        self._jobs = 0  # of _inflight: video jobs, which may run far longer than a request
        self._idle = threading.Condition()
        self.closed = False

    @property
    def config(self):
        return self.swapper.settings

    # -- reference counting (reload drains old versions) -------------------------
    def acquire(self, job: bool = False) -> None:
        with self._idle:
            self._inflight += 1
            self._jobs += job

    def release(self, job: bool = False) -> None:
        with self._idle:
            self._inflight -= 1
            self._jobs -= job
            self._idle.notify_all()

    @property
    def inflight(self) -> int:
        return self._inflight

    def drain_and_close(self, timeout: float = 600.0, job_timeout: float | None = None) -> None:
        """Wait for every request and job using this version, then free its engines.

        Args:
            timeout: longest wait for requests (seconds).
            job_timeout: longest wait for video jobs (default ``timeout``). A reload passes the
                job time limit: a job keeps the version it started on to its end, and closing
                the batchers under it would fail it ("batcher 'detect' | closed").
        """
        job_timeout = timeout if job_timeout is None else job_timeout
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == self._jobs, timeout)
            self._idle.wait_for(lambda: self._jobs == 0, job_timeout)
            left = self._inflight
        if left:
            log.warning("version %s | %d users still active after %.0f s; closing anyway",
                        self.version, left, max(timeout, job_timeout))
        self.detect_q.close()
        self.swap_q.close()
        self.swapper.close()
        self.closed = True
        log.info("version %s | closed", self.version)

    # -- batch work (runs in the batcher threads) ---------------------------------
    def _swap_batch(self, items: list[SwapItem]) -> list:
        """Many faces, one generator call, one latent row per crop (identities may differ)."""
        return self.swapper.swap_faces([(it.frame, it.face, it.prepared) for it in items])

    # -- identities -----------------------------------------------------------------
    def _identity(self, image: np.ndarray, role: str) -> Identity:
        try:
            return self.swapper.identity(image, role)
        except NoFaceError:
            raise NoFaceError(f"{role} image | no face found; expected a photo with a "
                              "visible face") from None

    async def prepare(self, image: np.ndarray, timeout: float, role: str = "source") -> Identity:
        return await asyncio.wait_for(asyncio.to_thread(self._identity, image, role), timeout)

    def prepare_sync(self, image: np.ndarray, role: str = "source") -> Identity:
        return self._identity(image, role)

    # -- frames ---------------------------------------------------------------------
    def _paste(self, frame: np.ndarray, results: list) -> np.ndarray:
        return self.swapper.paste(frame, results) if results else frame.copy()

    async def swap(self, frame: np.ndarray, prepared: Identity, timeout: float) -> SwapOutcome:
        """One request: detect and swap through the batchers, paste in a worker thread."""
        deadline = time.perf_counter() + timeout
        ms: dict[str, float] = {}
        faces, t = await self.detect_q.run(frame, timeout)
        ms["detect_queue"], ms["detect"] = t.wait_ms, t.run_ms
        batch = 0
        results: list = []
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

    def process_frames(self, frames: list[np.ndarray], prepared: Identity
                       ) -> list[tuple[np.ndarray, int]]:
        """Video jobs: several frames at once, so their crops batch (blocking; job thread)."""
        all_faces = self.detect_q.run_sync(frames)
        items = [SwapItem(fr, face, prepared) for fr, faces in zip(frames, all_faces)
                 for face in faces]
        results = iter(self.swap_q.run_sync(items))
        return [(self._paste(fr, [next(results) for _ in faces]), len(faces))
                for fr, faces in zip(frames, all_faces)]
