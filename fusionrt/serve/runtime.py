"""Which model version serves new requests, hot reload, and the identities kept server-side.

Reload builds the new pipeline in a worker thread while the old one keeps serving, warms it
on the example photos, gates it (a valid image of the target's size with a face swapped), then
swaps one reference under a lock. Requests take a version under the same lock and keep it to
the end, so in-flight work finishes on the old version; the old one is closed after it drains.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..errors import FusionError, InputError, ModelError
from ..models.store import ModelStore
from ..pipeline.image_io import read_image
from ..pipeline.settings import PipelineConfig
from ..pipeline.swapper import FaceSwapper
from .metrics import Metrics
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

    def acquire(self) -> ModelVersion:
        """The serving version, counted as in use until ``release``."""
        with self._lock:
            v = self.current
            if v is None:
                raise NotReady(self.error or "models are loading")
            v.acquire()
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
                threading.Thread(target=old.drain_and_close, name="fusionrt-drain",
                                 daemon=True).start()
            return new, old.version if old else None
        finally:
            self._reload_lock.release()

    def close(self) -> None:
        with self._lock:
            v, self.current = self.current, None
        if v is not None:
            v.drain_and_close(timeout=30)


@dataclass
class IdentityRecord:
    id: str
    image: np.ndarray
    created: float = field(default_factory=time.time)
    prepared: dict[str, Prepared] = field(default_factory=dict)  # version name -> ready form


class IdentityStore:
    """id → source face, kept server-side; least recently used beyond ``limit`` forgotten.

    The face/embedding is per model version (a reloaded embedder gives other embeddings), so
    the image is kept and each version prepares it once, on first use.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._items: OrderedDict[str, IdentityRecord] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, image: np.ndarray, version: str, prepared: Prepared) -> IdentityRecord:
        rec = IdentityRecord(uuid.uuid4().hex, image, prepared={version: prepared})
        with self._lock:
            self._items[rec.id] = rec
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return rec

    def get(self, identity_id: str) -> IdentityRecord | None:
        with self._lock:
            rec = self._items.get(identity_id)
            if rec is not None:
                self._items.move_to_end(identity_id)
            return rec

    def remember(self, rec: IdentityRecord, version: str, prepared: Prepared) -> None:
        with self._lock:
            rec.prepared = {version: prepared}  # older versions' forms are no longer needed

    def __len__(self) -> int:
        return len(self._items)
