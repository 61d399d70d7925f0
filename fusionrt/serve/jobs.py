"""Video jobs: accepted uploads processed by a server thread, independent of the client.

A job lives in ``<jobs_dir>/<id>/``: ``input.<ext>`` and ``source.png`` (the identity's picture,
so a queued job survives a restart) while it waits or runs, ``result.mp4`` once it succeeded
(``process_video`` writes a temp file and renames it: a reader never sees half a video, and a
stopped job leaves nothing). Job state is one SQLite row per job (``jobstore``). Jobs run one
at a time; their frames go through the same batchers as image requests, ``max_batch`` frames
per call, on the model version they started on (a reload lets them finish there).

Limits: ``max_job_pixels`` (width × height × frames, checked from the probe at submission and
again while frames arrive: a header may lie) and ``job_time_limit_s`` (wall time from the
start, checked before every batch). ``delete`` cancels a queued job, stops a running one at
its next batch, or removes a finished one and its files.

Restart: a new manager over the same folder re-queues queued jobs whose input is there and
keeps finished ones; a job that was running when the process died is failed ("server
restarted") rather than re-run: if it was what brought the server down, re-running it would
do so again. A clean shutdown (``close``) stops the running job at its next batch and leaves
it queued. Folders the database does not know, and rows whose folder is gone, are removed.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from .._fs import atomic_write_bytes
from ..errors import InputError
from ..runtime.home import fusionrt_home
from .jobstore import ACTIVE, RESULT, STATES, Job, JobStore
from .metrics import Metrics
from .runtime import IdentityRecord, IdentityStore, NotReady, Runtime
from .settings import ServeSettings

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"[0-9a-f]{32}")  # the sweep touches only folders named like a job
SOURCE = "source.png"
PROGRESS_EVERY_S = 1.0  # progress is written to the database at most this often
RESTARTED = ("job | server restarted while it ran (the process was killed or crashed); "
             "submit the video again")


class JobsFull(Exception):
    """``max_jobs_queued`` jobs are waiting or running; the caller should answer 429."""


class JobStopped(Exception):
    """Raised between batches: the job ends in ``state`` (``queued``: put back, at shutdown)."""

    def __init__(self, state: str, message: str | None = None):
        super().__init__(message or state)
        self.state, self.message = state, message


class JobManager:
    """Queue, run, stop and remember video jobs."""

    def __init__(self, settings: ServeSettings, runtime: Runtime, identities: IdentityStore,
                 metrics: Metrics):
        self.settings, self.runtime, self.identities, self.metrics = (
            settings, runtime, identities, metrics)
        self.dir = Path(settings.jobs_dir or fusionrt_home() / "serve" / "jobs")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.dir)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._q: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._recover()
        self._worker = threading.Thread(target=self._loop, name="fusionrt-jobs", daemon=True)
        self._worker.start()

    # -- restart ----------------------------------------------------------------------------
    def _recover(self) -> None:
        requeued = failed = 0
        for row in self.store.rows():
            job = Job(folder=self.dir / row["id"], **row)
            if not job.folder.is_dir():
                self.store.delete(job.id)
                continue
            self.jobs[job.id] = job
            if job.state == "running":
                self._finish(job, "failed", RESTARTED)
                failed += 1
            elif job.state == "queued" and not job.input.is_file():
                self._finish(job, "failed", "job | input file gone after a restart; expected "
                                            f"{job.input_name} in the job folder")
                failed += 1
            elif job.state == "succeeded" and not job.result.is_file():
                self._finish(job, "failed", f"job | result file gone after a restart; expected "
                                            f"{RESULT} in the job folder")
            elif job.state == "queued":
                self._q.put(job.id)
                requeued += 1
            else:
                job.ended.set()
        orphans = [p for p in self.dir.iterdir()
                   if p.is_dir() and JOB_ID.fullmatch(p.name) and p.name not in self.jobs]
        for p in orphans:
            shutil.rmtree(p, ignore_errors=True)
        self._count()
        if self.jobs or orphans:
            log.info("jobs | %d known, %d re-queued, %d failed (server restarted), %d orphan "
                     "folders removed", len(self.jobs), requeued, failed, len(orphans))

    # -- accepting --------------------------------------------------------------------------
    def new_folder(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex
        folder = self.dir / job_id
        folder.mkdir()
        return job_id, folder

    def active(self) -> int:
        with self._lock:
            return sum(j.state in ACTIVE for j in self.jobs.values())

    def submit(self, job_id: str, folder: Path, input_name: str, identity: IdentityRecord,
               frames_total: int, width: int = 0, height: int = 0, crf: int = 18) -> Job:
        """Accept a job whose input is already saved in ``folder``; raises ``JobsFull``.

        Blocking (writes the identity's picture): call it from a worker thread."""
        job = Job(job_id, identity.id, folder, input_name, frames_total, width, height, crf,
                  identity=identity)
        ok, png = cv2.imencode(".png", identity.image)
        if not ok:
            raise InputError(f"identity '{identity.id}' | cannot be stored with the job")
        atomic_write_bytes(folder / SOURCE, png.tobytes())
        with self._lock:
            busy = sum(j.state in ACTIVE for j in self.jobs.values())
            if busy >= self.settings.max_jobs_queued:
                raise JobsFull(f"jobs | {busy} queued or running; limit "
                               f"{self.settings.max_jobs_queued}")
            self.jobs[job_id] = job
        self._save(job)
        self._q.put(job_id)
        log.info("job %s | accepted (%d frames)", job_id, frames_total, extra={"job": job_id})
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def delete(self, job_id: str) -> tuple[str, Job] | None:
        """Cancel a queued job ("cancelled"), ask a running one to stop at its next batch
        ("cancelling": wait on ``job.ended``), or forget a finished one and its files
        ("deleted"). None if unknown."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            state = job.state
            if state == "queued":
                job.state = "cancelled"  # under the lock: the worker will not start it
            elif state == "running":
                job.stop = "cancel"
            else:
                del self.jobs[job_id]
        if state == "queued":
            self._finish(job, "cancelled", None)
            return "cancelled", job
        if state == "running":
            return "cancelling", job
        self.store.delete(job_id)
        shutil.rmtree(job.folder, ignore_errors=True)
        self._count()
        log.info("job %s | deleted", job_id, extra={"job": job_id})
        return "deleted", job

    # -- state --------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        job.saved_at = time.monotonic()
        self.store.put(job.row())
        self._count()

    def _count(self) -> None:
        with self._lock:
            counts = {s: 0 for s in STATES}
            for j in self.jobs.values():
                counts[j.state] += 1
        for s, n in counts.items():
            self.metrics.jobs.labels(s).set(n)

    def _finish(self, job: Job, state: str, error: str | None) -> None:
        with self._lock:
            job.state, job.error, job.finished = state, error, time.time()
            job.identity = None
        for p in (job.folder.iterdir() if job.folder.is_dir() else ()):  # inputs, temps
            if not (state == "succeeded" and p.name == RESULT):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        self._save(job)
        job.ended.set()
        log.info("job %s | %s%s", job.id, state, f": {error}" if error else "",
                 extra={"job": job.id})

    # -- running ------------------------------------------------------------------------
    def _loop(self) -> None:
        while (job_id := self._q.get()) is not None and not self._stopping.is_set():
            while not self.runtime.settled.wait(0.2):  # after a restart: wait for the models
                if self._stopping.is_set():
                    return
            job = self.get(job_id)
            if job is not None:
                self._run(job)
            self._evict()

    def _run(self, job: Job) -> None:
        from ..pipeline.video.io import process_video
        with self._lock:
            if job.state != "queued" or self._stopping.is_set():  # cancelled; shutting down
                return
            job.state, job.started, job.frames_done, job.stop = "running", time.time(), 0, None
            job.ended.clear()
        self._save(job)
        try:
            version = self.runtime.acquire(job=True)  # once: the job ends on this version
        except NotReady as e:
            return self._finish(job, "failed", f"models | not ready ({e}); expected a loaded "
                                               "model version")
        t0 = time.monotonic()
        try:
            job.version = version.version
            self._save(job)
            prepared = self._prepared(job, version)

            def frame_fn(frames):
                self._check(job, t0, len(frames))
                out = version.process_frames(frames, prepared)
                job.frames_done += len(frames)
                if time.monotonic() - job.saved_at > PROGRESS_EVERY_S:
                    job.saved_at = time.monotonic()
                    self.store.progress(job.id, job.frames_done)
                return out

            process_video(job.input, job.result, frame_fn, progress=False,
                          batch=self.settings.max_batch, crf=job.crf)
            if job.stop == "cancel":  # asked during the last batch or while encoding
                raise JobStopped("cancelled")
            self._finish(job, "succeeded", None)
        except JobStopped as e:
            if e.state == "queued":
                self._requeue(job)
            else:
                self._finish(job, e.state, e.message)
        except Exception as e:  # noqa: BLE001 - recorded in the job for the client to read
            log.warning("job %s | failed: %s", job.id, e, extra={"job": job.id})
            self._finish(job, "failed", str(e))
        finally:
            version.release(job=True)

    def _prepared(self, job: Job, version):
        """The identity made ready for ``version``: from memory, else from the job folder."""
        rec = job.identity
        if rec is not None and version.version in rec.prepared:
            return rec.prepared[version.version]
        source = job.folder / SOURCE
        image = rec.image if rec is not None else (
            cv2.imread(str(source)) if source.is_file() else None)
        if image is None:
            raise InputError(f"identity '{job.identity_id}' | gone after a restart and not in "
                             f"the job folder ({SOURCE}); expected a new job with a new identity")
        return version.prepare_sync(np.ascontiguousarray(image), "identity")

    def _check(self, job: Job, t0: float, n: int) -> None:
        """Before a batch of ``n`` frames: stop requests, the time limit, the pixel budget."""
        s = self.settings
        if job.stop == "cancel":
            raise JobStopped("cancelled")
        if job.stop or self._stopping.is_set():  # shutdown: run again after the next start
            raise JobStopped("queued")
        if time.monotonic() - t0 > s.job_time_limit_s:
            raise JobStopped("failed", f"job | time limit {s.job_time_limit_s:g} s reached after "
                                       f"{job.frames_done} of {job.frames_total} frames; expected "
                                       "a shorter video (or a larger --job-time-limit-s)")
        pixels = (job.frames_done + n) * job.width * job.height
        if pixels > s.max_job_pixels:
            raise JobStopped("failed", f"video | {job.width}x{job.height} x {job.frames_done + n}"
                                       f"+ frames (the header said {job.frames_total}) = "
                                       f"{pixels:,} pixels; expected at most "
                                       f"{s.max_job_pixels:,} per job")

    def _requeue(self, job: Job) -> None:
        """Shutdown: back to queued (partial output is already gone), to run after a restart."""
        with self._lock:
            job.state, job.started, job.frames_done, job.version = "queued", None, 0, None
        self._save(job)
        job.ended.set()
        log.info("job %s | stopped by shutdown; queued for the next start", job.id,
                 extra={"job": job.id})

    def _evict(self) -> None:
        """Forget the oldest finished jobs (and delete their files) beyond ``max_jobs_kept``."""
        with self._lock:
            done = [j for j in self.jobs.values() if j.state not in ACTIVE]
            drop = done[:max(0, len(done) - self.settings.max_jobs_kept)]
            for j in drop:
                del self.jobs[j.id]
        for j in drop:
            self.store.delete(j.id)
            shutil.rmtree(j.folder, ignore_errors=True)
        if drop:
            self._count()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the running job at its next batch (it stays queued, as do the waiting ones:
        they run after the next start)."""
        with self._lock:
            for j in self.jobs.values():
                if j.state == "running":
                    j.stop = "shutdown"
        self._stopping.set()
        self._q.put(None)
        self._worker.join(timeout)
        if self._worker.is_alive():
            log.warning("jobs | the running job did not stop within %.0f s", timeout)
        else:
            self.store.close()
