"""Which model version serves new requests, hot reload, and the identities kept server-side.

Reload builds the new pipeline in a worker thread while the old one keeps serving, warms it
on the example photos, gates it (a valid image of the target's size with a face swapped), then
swaps one reference under a lock. Requests take a version under the same lock and keep it to
the end, so in-flight work finishes on the old version; the old one is closed after it drains.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import FusionError, InputError, ModelError
from ..models.store import ModelStore
from ..pipeline.image_io import read_image
from ..pipeline.plan import check_device
from ..pipeline.host.masks import MASK_TYPES
from ..pipeline.settings import ENHANCER_CHOICES, SWAPPER_CHOICES, PipelineConfig
from ..pipeline.swapper import FaceSwapper
from ..pipeline.types import Face
from .metrics import Metrics
from .guards import reasons
from .settings import ServeSettings
from .versions import ModelVersion, Prepared, fingerprint

log = logging.getLogger(__name__)


class NotReady(Exception):
    """No version is loaded yet (startup) or the initial load failed."""


class ReloadBusy(Exception):
    """Another reload is running."""


def gate(out: np.ndarray, target: np.ndarray, faces: int, need_face: bool) -> None:
    """Refuse a version whose warm-up output is not a valid swapped image of the target."""
    problems = []
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != target.shape:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        problems.append(f"output {got}; expected uint8 {target.shape}")
    if need_face and faces < 1:
        problems.append("no face swapped in the warm-up target; expected 1")
    if problems:
        raise ModelError("reload gate | " + "; ".join(problems))


class Runtime:
    """Holds the serving ``ModelVersion``; ``reload`` replaces it without dropping requests."""

    def __init__(self, settings: ServeSettings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.current: ModelVersion | None = None
        self.error: str | None = None
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._counter = itertools.count(1)
        self.settled = threading.Event()  # set once the first load succeeded or failed

    # -- building ---------------------------------------------------------------------
    def build(self, config: PipelineConfig) -> ModelVersion:
        """Load, warm and gate a new version (slow; call from a worker thread)."""
        t0 = time.perf_counter()
        swapper = FaceSwapper.open(config, ModelStore())
        name = f"v{next(self._counter)}-{swapper.swapper_name}-{fingerprint(swapper)}"
        version = ModelVersion(name, swapper, self.settings, self.metrics)
        try:
            self._warm(version)
        except BaseException:
            version.drain_and_close()
            raise
        log.info("version %s | loaded, warmed and gated in %.2f s", name, time.perf_counter() - t0)
        return version

    def _warm(self, version: ModelVersion) -> None:
        s = self.settings
        if s.warmup_source.is_file() and s.warmup_target.is_file():
            target = read_image(s.warmup_target, role="warm-up target")
            prepared = version.prepare_sync(read_image(s.warmup_source, role="warm-up source"))
            out, n = version.process_frames([target], prepared)[0]
            gate(out, target, n, need_face=True)
        else:  # installed without the example photos: warm the detector, gate the shape only
            log.warning("warm-up photos %s, %s not found; warming the detector only",
                        s.warmup_source, s.warmup_target)
            blank = np.full((256, 256, 3), 128, np.uint8)
            version.detect_q.run_sync([blank])

    def start(self) -> None:
        """Load the first version in the background; ``/readyz`` says when it is ready."""
        def load() -> None:
            try:
                self._install(self.build(self.settings.pipeline))
            except Exception as e:  # noqa: BLE001 - reported by /readyz and the log
                self.error = str(e)
                log.error("initial model load failed: %s", e)
            finally:
                self.settled.set()
        threading.Thread(target=load, name="fusionrt-initial-load", daemon=True).start()

    def _install(self, version: ModelVersion) -> ModelVersion | None:
        with self._lock:
            old, self.current = self.current, version
        self.error = None
        self.metrics.set_model(version.version, version.stages)
        return old

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the first load finished; True if a version is serving."""
        self.settled.wait(timeout)
        return self.ready

    # -- using --------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.current is not None

    def acquire(self, job: bool = False) -> ModelVersion:
        """The serving version, counted as in use until ``release`` (``job``: by a video job,
        which a reload lets finish on this version, up to the job time limit)."""
        with self._lock:
            v = self.current
            if v is None:
                raise NotReady(self.error or "models are loading")
            v.acquire(job)
            return v

    # -- reloading --------------------------------------------------------------------
    def reload(self, changes: dict | None = None) -> tuple[ModelVersion, str | None]:
        """Build a version from the current config with ``changes`` applied and swap it in.

        Returns (new version, old version name). Raises ``ReloadBusy`` if one is running, and
        the build/gate error (the old version keeps serving) if the new one fails.
        """
        if not self._reload_lock.acquire(blocking=False):
            raise ReloadBusy("reload | another reload is in progress; retry when it finishes")
        try:
            base = self.current.config if self.current else self.settings.pipeline
            try:
                config = dataclasses.replace(base, **(changes or {}))
            except TypeError as e:
                raise InputError(f"reload | {e}; expected fields of PipelineConfig") from None
            try:
                new = self.build(config)
            except FusionError:
                self.metrics.reloads.labels("refused").inc()
                raise
            old = self._install(new)
            self.metrics.reloads.labels("ok").inc()
            if old is not None:
                # running jobs keep the old version to their end (they stop at their time limit)
                threading.Thread(target=old.drain_and_close, name="fusionrt-drain", daemon=True,
                                 kwargs={"job_timeout": self.settings.job_time_limit_s + 60}
                                 ).start()
            return new, old.version if old else None
        finally:
            self._reload_lock.release()

    def close(self) -> None:
        with self._lock:
            v, self.current = self.current, None
        if v is not None:
            v.drain_and_close(timeout=30)


@functools.cache
def _reload_model():
    """The pydantic model of a reload body (built on first use: pydantic comes with the serve
    extra). Types and ranges follow PipelineConfig; a device must exist on this machine."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field, field_validator

    class ReloadChanges(BaseModel):
        # strict: "640" is not a det_size and 1 not a bool; unknown fields are refused
        model_config = ConfigDict(extra="forbid", strict=True)
        swapper: Literal[SWAPPER_CHOICES] = None
        engine: str = Field(None, min_length=1, max_length=200)
        device: str = Field(None, max_length=20)
        allow_synthetic: bool = None
        det_size: int = Field(None, ge=64, le=2048, multiple_of=32)  # detector strides 8-32
        score_threshold: float = Field(None, ge=0, le=1)
        nms_threshold: float = Field(None, gt=0, le=1)
        feather: float = Field(None, ge=0, le=0.5)  # of the crop side; 0.5 erodes it all
        color_transfer: bool = None
        poisson: bool = None
        select: Literal["largest", "all"] = None  # 'reference' needs a per-request reference
        # FaceFusion's post-swap stages (PipelineConfig.check_post has the same rules)
        enhancer: Literal[ENHANCER_CHOICES] = None
        enhancer_blend: float = Field(None, ge=0, le=1)
        enhancer_weight: float = Field(None, ge=0, le=1)
        masks: list[Literal[MASK_TYPES]] = Field(None, min_length=1)
        mask_blur: float = Field(None, ge=0, le=1)
        pixel_boost: int = Field(None, ge=0, le=2048)

        @field_validator("device")
        @classmethod
        def _device_here(cls, v: str) -> str:
            try:
                check_device(v)  # "cuda" on a CPU-only host: refused, not run on the CPU
            except FusionError as e:
                raise ValueError(str(e)) from None
            return v

    return ReloadChanges


def reload_fields() -> tuple[str, ...]:
    """The PipelineConfig fields a reload may change (the rest is fixed for the process)."""
    return tuple(_reload_model().model_fields)


def reload_changes(body: object) -> dict:
    """The changes a reload body (parsed JSON) asks for, validated.

    Raises:
        InputError: ``reload | det_size: Input should be a valid integer; ...`` (every reason).
    """
    from pydantic import ValidationError
    try:
        return _reload_model().model_validate(body).model_dump(exclude_unset=True)
    except ValidationError as e:
        extra = any(d["type"] == "extra_forbidden" for d in e.errors())
        raise InputError(f"reload | {reasons(e.errors())}" + (
            f"; expected fields: {', '.join(reload_fields())}" if extra else "")) from None


# An identity keeps its prepared form and a small crop of the source face, not the photo: a
# 4096² upload decodes to 48 MB, this to at most 384²x3 = 442 KB. The crop is what a reloaded
# version prepares again (the classic swapper also takes its pixels from it): the face box plus
# 60% of its side each way holds the whole FFHQ/ArcFace alignment crop, and at <= 384 px the
# face stays ~170 px wide, more than the 256² classic crop and the detector need.
THUMB_SIDE = 384
THUMB_MARGIN = 0.6


def face_thumbnail(image: np.ndarray, face: Face) -> tuple[np.ndarray, Face]:
    """The face region of ``image`` (with margin, downscaled to <= THUMB_SIDE) and ``face``
    moved into its pixel coordinates."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in face.box)
    pad = THUMB_MARGIN * max(x2 - x1, y2 - y1)
    left, top = max(int(x1 - pad), 0), max(int(y1 - pad), 0)
    right, bottom = min(int(np.ceil(x2 + pad)), w), min(int(np.ceil(y2 + pad)), h)
    crop = image[top:bottom, left:right]
    scale = min(1.0, THUMB_SIDE / max(crop.shape[:2]))
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    # a copy either way: a view would keep the whole decoded photo alive
    thumb = cv2.resize(crop, size, interpolation=cv2.INTER_AREA) if scale < 1 else crop.copy()
    sx, sy = size[0] / crop.shape[1], size[1] / crop.shape[0]
    k, shift = np.float32([sx, sy]), np.float32([left, top])
    moved = dataclasses.replace(
        face, box=((face.box.reshape(2, 2) - shift) * k).ravel().astype(np.float32),
        landmarks=((face.landmarks - shift) * k).astype(np.float32))
    return thumb, moved


@dataclass
class IdentityRecord:
    id: str
    image: np.ndarray  # the face thumbnail (``face_thumbnail``), not the uploaded photo
    created: float = field(default_factory=time.time)
    prepared: dict[str, Prepared] = field(default_factory=dict)  # version name -> ready form
    nbytes: int = 0

    def measure(self) -> int:
        """Bytes of every array this record keeps (each counted once)."""
        arrays = {id(a): a for p in self.prepared.values()
                  for a in (p.image, p.face.box, p.face.landmarks, p.face.embedding, p.latent)
                  if a is not None}
        arrays[id(self.image)] = self.image
        self.nbytes = sum(int(getattr(a, "nbytes", 0)) for a in arrays.values())
        return self.nbytes


class IdentityStore:
    """id → prepared source face, kept server-side; the least recently used are forgotten
    beyond ``limit`` identities or ``max_bytes`` bytes (the newest one is always kept).

    The face/embedding is per model version (a reloaded embedder gives other embeddings), so a
    face thumbnail is kept and each later version prepares it once, on first use.
    """

    def __init__(self, limit: int, max_bytes: int = 256 * 1024 * 1024):
        self.limit, self.max_bytes = limit, max_bytes
        self.nbytes = 0
        self._items: OrderedDict[str, IdentityRecord] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, image: np.ndarray, version: str, prepared: Prepared) -> IdentityRecord:
        """Keep ``prepared`` (made from ``image`` by ``version``) with a thumbnail of its face."""
        thumb, face = face_thumbnail(image, prepared.face)
        kept = dataclasses.replace(prepared, image=thumb, face=face)
        rec = IdentityRecord(uuid.uuid4().hex, thumb, prepared={version: kept})
        rec.measure()
        with self._lock:
            self._items[rec.id] = rec
            self.nbytes += rec.nbytes
            self._evict()
        return rec

    def _evict(self) -> None:  # under the lock
        while len(self._items) > 1 and (len(self._items) > self.limit
                                        or self.nbytes > self.max_bytes):
            _, old = self._items.popitem(last=False)
            self.nbytes -= old.nbytes

    def get(self, identity_id: str) -> IdentityRecord | None:
        with self._lock:
            rec = self._items.get(identity_id)
            if rec is not None:
                self._items.move_to_end(identity_id)
            return rec

    def remember(self, rec: IdentityRecord, version: str, prepared: Prepared) -> None:
        with self._lock:
            before = rec.nbytes
            rec.prepared = {version: prepared}  # older versions' forms are no longer needed
            rec.measure()
            if self._items.get(rec.id) is rec:  # (not forgotten meanwhile)
                self.nbytes += rec.nbytes - before
                self._evict()

    def __len__(self) -> int:
        return len(self._items)
