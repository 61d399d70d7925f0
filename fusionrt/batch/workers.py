"""The Ray actor of a batch job: one long-lived process per GPU (or per N CPU cores) that loads
the face-swap pipeline once and then swaps work item after work item with it warm.

This module imports Ray only inside functions (Ray is the ``ray`` extra); the actor class is a
plain class made remote by ``remote_worker_class``. A worker never raises for a failed item:
it returns a result dict saying what failed and whether a retry can help, so one bad input
never takes a worker down. Only a crash (or ``ray.kill``) does, and the driver handles that.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import EngineError, FusionError, InputError, ModelError, NoFaceError
from ..pipeline.settings import PipelineConfig
from .jobs import WorkItem
from .segments import cut_segment, stitch

log = logging.getLogger(__name__)

# Retrying cannot fix these: the same file or model fails the same way again.
PERMANENT = (InputError, NoFaceError, ModelError)
RAY_HINT = "pip install 'fusionrt[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or EngineError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise EngineError("batch | Ray is not installed; expected it for distributed jobs: "
                          f"{RAY_HINT}") from None
    return ray


class SwapWorker:
    """Holds one warm ``FaceSwapper`` with the source face set and swaps one item per call with
    it: images through ``process_frame``, videos and segments through the video loop
    (``transcode``: decode, swap and encode overlapped). The settings' ``kernels`` pick the
    path: ``device`` keeps frames on the GPU, ``host`` runs numpy/OpenCV on the CPU.

    Args:
        name: the worker's name in reports.
        source: the source face image (a path every node can read).
        config: the pipeline settings (device "cuda" means the GPU Ray assigned to this actor).
        crf: x264 quality of the written videos.
        threads: OpenCV threads, engine threads (unless ``config.threads`` is set) and the video
            loop's decoder/encoder cores: the CPU cores this worker was given.
        env: environment to set before loading models (e.g. FUSIONRT_HOME).
        video: the video loop's settings (batch, encoders, preset); its crf is ``crf`` and its
            cores ``threads``.
    """

    def __init__(self, name: str, source: str, config: PipelineConfig, crf: int = 18,
                 threads: int = 1, env: dict[str, str] | None = None, video: Any = None):
        os.environ.update(env or {})
        self.name, self.crf = name, crf
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.setup_error: dict | None = None
        self.swapper: Any = None  # a FaceSwapper once loaded
        t0 = time.perf_counter()
        try:
            import cv2

            from ..pipeline.image_io import read_image
            from ..pipeline.swapper import FaceSwapper
            from ..pipeline.video.loop import VideoConfig
            cv2.setNumThreads(max(1, threads))
            self.video = dataclasses.replace(video or VideoConfig(), crf=crf,
                                             cores=max(1, threads))
            image = read_image(source, role="source", max_pixels=self.video.max_pixels)
            if config.threads is None:  # engines use this worker's cores, not the machine's
                config = dataclasses.replace(config, threads=max(1, threads))
            self.swapper = FaceSwapper.open(config, source=(image, source))
        except Exception as e:  # noqa: BLE001 - reported to the driver, which stops the job
            self.setup_error = _failure(e)
            if self.swapper is not None:
                self.swapper.close()
                self.swapper = None
        self.setup_s = time.perf_counter() - t0

    def ready(self) -> dict:
        """Who and where this worker is, what its plan runs (stage → engine and why), and the
        setup error if the swapper did not load."""
        plan = self.swapper.plan if self.swapper is not None else None
        return {"name": self.name, "host": self.host, "pid": self.pid, "setup_s": self.setup_s,
                "error": self.setup_error, "kernels": plan.kernels if plan else None,
                "plan": self.swapper.describe() if plan else None}

    def process(self, item: WorkItem) -> dict:
        """Do one work item; never raises. The result says ok/frames/faces/seconds or the error."""
        t0, c0 = time.perf_counter(), _cpu_s()
        base = {"item": item.id, "worker": self.name, "host": self.host, "pid": self.pid}
        if self.setup_error is not None:
            return {**base, **self.setup_error, "seconds": 0.0, "cpu_s": 0.0}
        try:
            frames, faces = getattr(self, f"_do_{item.kind}")(item)
        except Exception as e:  # noqa: BLE001 - becomes a reported (maybe retried) failure
            log.warning("worker %s: %s failed: %s", self.name, item.id, e)
            return {**base, **_failure(e), "seconds": time.perf_counter() - t0,
                    "cpu_s": _cpu_s() - c0}
        # cpu_s (all threads: model, decoder, encoder) / seconds = cores this worker really used
        return {**base, "ok": True, "frames": frames, "faces": faces,
                "seconds": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0}

    # -- work kinds ------------------------------------------------------------
    def _do_image(self, item: WorkItem) -> tuple[int, int]:
        from ..pipeline.image_io import read_image, write_image
        image = read_image(item.src, role="input", max_pixels=self.video.max_pixels)
        out, n = self.swapper.process_frame(image)
        Path(item.dst).parent.mkdir(parents=True, exist_ok=True)
        write_image(item.dst, out)
        return 1, n

    def _do_video(self, item: WorkItem, src: str | None = None) -> tuple[int, int | None]:
        from ..pipeline.video.loop import transcode
        Path(item.dst).parent.mkdir(parents=True, exist_ok=True)
        stats = transcode(src or item.src, item.dst, self.swapper.frame_stage(self.video.batch),
                          self.video)
        return stats.frames, stats.faces_total

    def _do_segment(self, item: WorkItem) -> tuple[int, int | None]:
        # the cut is a local scratch file: only the swapped segment goes to the shared folder
        scratch = Path(tempfile.mkdtemp(prefix="fusionrt-cut-"))
        try:
            cut = cut_segment(item.src, item.segment, scratch / f"cut{Path(item.dst).suffix}")
            return self._do_video(item, src=str(cut))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _do_stitch(self, item: WorkItem) -> tuple[int, None]:
        Path(item.dst).parent.mkdir(parents=True, exist_ok=True)
        frames = stitch(list(item.parts), item.src, item.dst, expected_frames=item.frames)
        parts = Path(item.parts[0]).parent
        shutil.rmtree(parts, ignore_errors=True)  # the parts have done their job
        try:
            parts.parent.rmdir()  # the .fusionrt-parts folder, once no other video uses it
        except OSError:
            pass
        return frames, None


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _failure(e: BaseException) -> dict:
    """A result dict for an exception: the one-line reason and whether a retry may help."""
    if isinstance(e, FusionError):
        return {"ok": False, "error": str(e), "error_type": type(e).__name__,
                "retryable": not isinstance(e, PERMANENT)}
    return {"ok": False, "error": f"{type(e).__name__}: {e}", "error_type": type(e).__name__,
            "retryable": True}


def remote_worker_class(cpus: float, gpus: float) -> Any:
    """``SwapWorker`` as a Ray actor class reserving ``cpus`` CPUs and ``gpus`` GPUs.

    ``max_restarts=0``: the driver replaces a dead worker itself, so it knows which items were
    lost and can count their attempts (Ray's own restart would retry them blindly).
    """
    ray = import_ray()
    return ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_task_retries=0)(SwapWorker)
