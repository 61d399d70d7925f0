"""Video jobs: accepted uploads processed by a server thread, independent of the client.

A job lives in ``<jobs_dir>/<id>/``: ``input.<ext>`` (removed when done), ``result.mp4``
(written by ``process_video``: temp file + rename, so a reader never sees half a video) and
``job.json`` (state, rewritten atomically at every change). Jobs run one at a time; their frames
go through the same batchers as image requests, ``max_batch`` frames per call. Job state is
kept in memory: a server restart forgets jobs (their folders stay on disk).
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .._fs import atomic_write_bytes
from ..runtime.home import fusionrt_home
from .metrics import Metrics
from .runtime import IdentityRecord, IdentityStore, Runtime
from .settings import ServeSettings

log = logging.getLogger(__name__)

STATES = ("queued", "running", "succeeded", "failed")


class JobsFull(Exception):
    """``max_jobs_queued`` jobs are waiting or running; the caller should answer 429."""


@dataclass
class Job:
    id: str
    identity_id: str
    folder: Path
    input_name: str
    frames_total: int
    state: str = "queued"
    frames_done: int = 0
    error: str | None = None
    version: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    @property
    def input(self) -> Path:
        return self.folder / self.input_name

    @property
    def result(self) -> Path:
        return self.folder / "result.mp4"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("folder"), d.pop("input_name")
        d["progress"] = round(self.frames_done / self.frames_total, 4) if self.frames_total else (
            1.0 if self.state == "succeeded" else 0.0)
        d["result_url"] = f"/v1/jobs/{self.id}/result" if self.state == "succeeded" else None
        return d


class JobManager:
    """Queue, run and remember video jobs."""

    def __init__(self, settings: ServeSettings, runtime: Runtime, identities: IdentityStore,
                 metrics: Metrics):
        self.settings, self.runtime, self.identities, self.metrics = (
            settings, runtime, identities, metrics)
        self.dir = Path(settings.jobs_dir or fusionrt_home() / "serve" / "jobs")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._q: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._loop, name="fusionrt-jobs", daemon=True)
        self._worker.start()
        for s in STATES:
            metrics.jobs.labels(s).set(0)

    def new_folder(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex
        folder = self.dir / job_id
        folder.mkdir()
        return job_id, folder

    def active(self) -> int:
        with self._lock:
            return sum(j.state in ("queued", "running") for j in self.jobs.values())

    def submit(self, job_id: str, folder: Path, input_name: str, identity: IdentityRecord,
               frames_total: int) -> Job:
        """Accept a job whose input is already saved in ``folder``; raises ``JobsFull``."""
        job = Job(job_id, identity.id, folder, input_name, frames_total)
        with self._lock:
            busy = sum(j.state in ("queued", "running") for j in self.jobs.values())
            if busy >= self.settings.max_jobs_queued:
                raise JobsFull(f"jobs | {busy} queued or running; limit "
                               f"{self.settings.max_jobs_queued}")
            self.jobs[job_id] = job
        self._save(job)
        self._q.put((job, identity))
        log.info("job %s | accepted (%d frames)", job_id, frames_total, extra={"job": job_id})
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def _save(self, job: Job) -> None:
        atomic_write_bytes(job.folder / "job.json", json.dumps(job.to_dict(), indent=1).encode())
        with self._lock:
            counts = {s: 0 for s in STATES}
            for j in self.jobs.values():
                counts[j.state] += 1
        for s, n in counts.items():
            self.metrics.jobs.labels(s).set(n)

    def _loop(self) -> None:
        while (got := self._q.get()) is not None and not self._stopping.is_set():
            self._run(*got)
            self._evict()

    def _run(self, job: Job, identity: IdentityRecord) -> None:
        from ..pipeline.video.io import process_video
        job.state, job.started = "running", time.time()
        self._save(job)
        try:
            version = self.runtime.acquire()
        except Exception as e:  # noqa: BLE001 - not ready: the job fails with the reason
            return self._finish(job, f"models not ready: {e}")
        try:
            job.version = version.version
            prepared = identity.prepared.get(version.version) or version.prepare_sync(identity.image)

            def frame_fn(frames):
                out = version.process_frames(frames, prepared)
                job.frames_done += len(frames)
                return out

            process_video(job.input, job.result, frame_fn, progress=False,
                          batch=self.settings.max_batch)
            self._finish(job, None)
        except Exception as e:  # noqa: BLE001 - recorded in the job for the client to read
            log.warning("job %s | failed: %s", job.id, e, extra={"job": job.id})
            self._finish(job, str(e))
        finally:
            version.release()

    def _finish(self, job: Job, error: str | None) -> None:
        job.state = "failed" if error else "succeeded"
        job.error, job.finished = error, time.time()
        job.input.unlink(missing_ok=True)
        self._save(job)
        log.info("job %s | %s", job.id, job.state, extra={"job": job.id})

    def _evict(self) -> None:
        """Forget the oldest finished jobs (and delete their files) beyond ``max_jobs_kept``."""
        with self._lock:
            done = [j for j in self.jobs.values() if j.state in ("succeeded", "failed")]
            drop = done[:max(0, len(done) - self.settings.max_jobs_kept)]
            for j in drop:
                del self.jobs[j.id]
        for j in drop:
            shutil.rmtree(j.folder, ignore_errors=True)

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the running job; queued ones are left unfinished (their folders stay)."""
        self._stopping.set()
        self._q.put(None)
        self._worker.join(timeout)
