"""The one orchestrator: ``FaceSwapper(plan, kernels)`` swaps faces in batches of frames.

frame → faces (detect every N-th frame, track in between; embed for ``select="reference"``)
→ select → aligned crops → swapped crops (one generator call per batch) → paste → frame.

The same code drives both kernel sets (host: numpy/OpenCV; device: torch tensors on a CUDA
stream), so the CPU image and video paths, the GPU video path, the service, Triton's pipeline
model and Ray workers behave alike. Front ends call ``set_source``/``process_batch`` (or, to
batch across requests of different identities, ``identity``/``detect``/``swap_faces``/
``paste``) and never run a stage themselves; the video loop gets it as ``frame_stage()``.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, NoFaceError
from ..models.store import ModelStore
from .plan import Plan, plan_stages
from .settings import PipelineConfig
from .select import select_faces
from .track import LandmarkTracker
from .types import Face, Identity

log = logging.getLogger(__name__)


def make_kernels(plan: Plan) -> Any:
    """The kernel set the plan names (imported here: the device set needs torch)."""
    if plan.kernels == "device":
        from .device.kernels import DeviceKernels
        return DeviceKernels()
    from .host.kernels import HostKernels
    return HostKernels()


class FaceSwapper:
    """Loads the plan's engines once; swaps faces in batches.

    Args:
        plan: from ``plan_stages``; ``FaceSwapper.open(settings)`` makes one.
        kernels: a kernel set (default: the one the plan names). Tests pass a recording one.
    """

    def __init__(self, plan: Plan, kernels: Any = None):
        self.plan = plan
        self.settings = plan.settings
        self.kernels = kernels if kernels is not None else make_kernels(plan)
        self.kernels.open(plan)
        self.source: Identity | None = None
        self.reference: np.ndarray | None = None
        s = self.settings
        self.tracker = LandmarkTracker(s.smoothing) if s.detect_every > 1 else None
        self.frame_no = 0
        self._timed_from = 0

    @classmethod
    def open(cls, settings: PipelineConfig | None = None, store: ModelStore | None = None,
             kernels: Any = None, *, source: tuple[np.ndarray, str | None] | None = None,
             reference: tuple[np.ndarray, str | None] | None = None) -> "FaceSwapper":
        """Plan and load; ``source`` / ``reference`` ((image, path) pairs) are set before it
        returns, and the engines are closed again if either has no face."""
        swapper = cls(plan_stages(settings, store), kernels)
        try:
            if source is not None:
                swapper.set_source(*source)
            if reference is not None:
                swapper.set_reference(*reference)
        except BaseException:
            swapper.close()
            raise
        return swapper

    # -- life cycle and reporting -------------------------------------------------------------
    def close(self) -> None:
        self.kernels.close()

    def __enter__(self) -> "FaceSwapper":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def synthetic(self) -> bool:
        return self.plan.synthetic

    @property
    def swapper_name(self) -> str:
        return self.plan.swapper

    def describe(self) -> dict[str, str]:
        """Stage → what runs it and why."""
        return self.plan.explain()

    def stage_ms(self) -> dict[str, float]:
        """Stage → milliseconds per frame processed since the last ``reset_timing`` (GPU time
        on the device kernels, wall time on the host kernels)."""
        n = max(self.frame_no - self._timed_from, 1)
        return {k: v / n for k, v in self.kernels.timer.summary().items()}

    def reset_timing(self) -> None:
        """Start the per-stage times afresh (after loading and the source face, say)."""
        self.kernels.timer.reset()
        self._timed_from = self.frame_no

    # -- identities ---------------------------------------------------------------------------
    def identity(self, image: np.ndarray, role: str = "source", path: str | None = None
                 ) -> Identity:
        """The largest face of ``image``, embedded, with the generator's latent for it.

        Raises:
            NoFaceError: ``no face in the source image 'path'``.
        """
        k = self.kernels
        with k.session():
            batch = k.images([image])
            faces = k.detect(batch, [0])[0]
            if not faces:
                raise NoFaceError(f"no face in the {role} image '{path or '<array>'}'")
            face = max(faces, key=lambda f: f.area)
            if "embed" in self.plan.stages:
                face = k.embed(batch, [[face]], [0])[0][0]
            latent = (k.latent(face.embedding, face.embedding_scale)
                      if "swap" in self.plan.stages else None)
        return Identity(face, image, path, latent)

    def set_source(self, image: np.ndarray, path: str | None = None) -> Identity:
        """Use the largest face of ``image`` as the identity to swap in."""
        self.source = self.identity(image, "source", path)
        return self.source

    def set_reference(self, image: np.ndarray, path: str | None = None) -> np.ndarray:
        """Selection ``reference``: swap only faces that look like the largest face here."""
        if "embed" not in self.plan.stages:
            raise InputError("selection 'reference' | needs an embedder; "
                             "set PipelineConfig(select='reference')")
        self.reference = self.identity(image, "reference", path).embedding
        return self.reference

    # -- stages, for front ends that batch across requests ------------------------------------
    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """Selected faces of each BGR frame (frames may differ in size)."""
        k, out = self.kernels, []
        with k.session():
            for group in _same_size(frames):
                batch = k.images([frames[i] for i in group])
                out.extend(zip(group, self._faces(batch, len(group), track=False)))
        return [faces for _, faces in sorted(out, key=lambda p: p[0])]

    def swap_faces(self, items: Sequence[tuple[np.ndarray, Face, Identity]]) -> list[Any]:
        """Swapped crops for (frame, face, identity) items — identities may differ; one
        generator call for all. Each result goes to ``paste`` with its frame."""
        k = self.kernels
        out: list[Any] = [None] * len(items)
        with k.session():
            for group in _same_size([it[0] for it in items]):
                batch = k.images([items[i][0] for i in group])
                swapped = k.swap(batch, [[items[i][1]] for i in group],
                                 [[items[i][2]] for i in group])
                for j, i in enumerate(group):
                    out[i] = (items[i][1], k.one(swapped, j))
        return out

    def paste(self, frame: np.ndarray, results: Sequence[Any]) -> np.ndarray:
        """``frame`` with the ``swap_faces`` results of its faces pasted in (a new array)."""
        k = self.kernels
        with k.session():
            batch = k.images([frame])
            for face, swapped in results:
                k.paste(batch, [[face]], swapped)
            if "enhance" in self.plan.stages and results:
                k.enhance(batch, [[face for face, _ in results]])
            return k.frames(batch, [frame])[0]

    # -- frames -------------------------------------------------------------------------------
    def process_frame(self, frame: np.ndarray, identity: Identity | None = None
                      ) -> tuple[np.ndarray, int]:
        """Swap the selected faces of one BGR frame; returns (new frame, faces swapped)."""
        return self.process_batch([frame], identity)[0]

    def process_batch(self, frames: Sequence[np.ndarray],
                      identity: Identity | Sequence[Identity] | None = None
                      ) -> list[tuple[np.ndarray, int]]:
        """BGR uint8 frames (one size on the device kernels) → [(new frame, faces swapped)],
        with ``identity`` (from ``identity()``; one for all frames, or one per frame, as
        requests of different users batch in the service) or else the source set by
        ``set_source``."""
        k = self.kernels
        with k.session():
            batch = k.images(list(frames))
            counts = self._swap(batch, len(frames), identity)
            return list(zip(k.frames(batch, frames), counts))

    def process(self, raw: Any, fmt: str, height: int, width: int) -> list[int]:
        """Device kernels: swap faces in a device batch in place — (N, H * 3 / 2, W) yuv420p or
        (N, H, W, 3) BGR uint8. Returns faces swapped per frame."""
        k = self.kernels
        with k.session():
            if self.plan.frame_graph and raw.shape[0] == 1 and self.source is not None:
                self.frame_no += 1
                return [k.process_graphed(raw, fmt, height, width, self.source.latent)]
            batch = k.tensor_batch(raw, fmt, height, width)
            counts = self._swap(batch, raw.shape[0])
            k.finish(batch)
        return counts

    def _faces(self, batch: Any, n: int, track: bool = True) -> list[list[Face]]:
        """Faces to swap per frame: detection (every frame or every N-th), tracking, selection."""
        s, k = self.settings, self.kernels
        every = s.detect_every if track else 1
        rows = [i for i in range(n) if (self.frame_no + i) % every == 0] if track else \
            list(range(n))
        found: dict[int, list[Face]] = {}
        if rows:
            per_row = k.detect(batch, rows)
            if s.select == "reference":
                per_row = k.embed(batch, per_row, rows)
            found = dict(zip(rows, per_row))
        out = []
        for i in range(n):
            faces = found.get(i, [])
            if track and self.tracker is not None:
                faces = self.tracker.update(faces) if i in found else self.tracker.current()
            out.append(select_faces(faces, s.select, self.reference, s.similarity_threshold))
        if track:
            self.frame_no += n
        return out

    def _swap(self, batch: Any, n: int,
              identity: Identity | Sequence[Identity] | None = None) -> list[int]:
        source = identity if identity is not None else self.source
        if source is None:
            raise InputError("pipeline | no source identity; call set_source first")
        per_frame = list(source) if isinstance(source, (list, tuple)) else [source] * n
        if len(per_frame) != n:
            raise InputError(f"identities | got {len(per_frame)} for {n} frames; expected one "
                             "per frame")
        faces = self._faces(batch, n)
        if any(faces):
            k = self.kernels
            swapped = k.swap(batch, faces, [[ident] * len(fl)
                                            for ident, fl in zip(per_frame, faces)])
            k.paste(batch, faces, swapped)
            if "enhance" in self.plan.stages:  # FaceFusion's order: swapper, then enhancer
                k.enhance(batch, faces)
        return [len(fl) for fl in faces]

    # -- the video loop -----------------------------------------------------------------------
    def frame_stage(self, batch: int = 16) -> Any:
        """This swapper as the video loop's ``FrameStage``: on the device kernels frames go up
        once as yuv420p, are swapped in place by ``process`` on the compute stream, and come down
        once; on the host kernels ``process_batch`` gets ``batch`` BGR frames at a time."""
        if self.kernels.name == "device":
            from .device.stage import DeviceFrameStage
            return DeviceFrameStage(self)
        from .video.frame_fn import FrameFnStage
        # batch 1: FrameFnStage hands the function one frame, not a list (live, per frame)
        return FrameFnStage(self.process_frame if batch == 1 else self.process_batch,
                            batch=batch)

    def warmup(self, batch: int, height: int, width: int) -> None:
        """Capture CUDA graphs and autotune before the loop's threads start (device kernels)."""
        if self.kernels.name == "device":
            self.kernels.warmup(batch, height, width,
                                self.source.latent if self.source is not None else None)

    @property
    def dev(self) -> Any:
        return self.kernels.dev

    @property
    def compute(self) -> Any:
        return self.kernels.compute

    @property
    def timer(self) -> Any:
        return self.kernels.timer


def _same_size(frames: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices grouped by frame shape, in first-seen order (the device kernels batch one size;
    the host kernels take any mix, and get one group per size too, which costs nothing)."""
    groups: dict[tuple, list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(getattr(f, "shape", None), []).append(i)
    return list(groups.values())
