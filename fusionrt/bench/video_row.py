"""The end-to-end video rows (``--stages video``, part of ``--preset seed``): a generated 1080p
clip with one face per frame through

- ``gpu-path``: ``FaceSwapper`` on the device kernels (frames stay on the GPU, crops of many
  frames batched, CUDA graphs) in the bounded-queue video loop with N x264 encoders — what
  ``fusionrt swap --device cuda`` runs on a video;
- ``facefusion-loop``: the same ``FaceSwapper`` on the host kernels with ORT CUDA and no CUDA
  graphs, frame by frame (numpy in and out, CPU pre/post-processing), one encoder — the way
  FaceFusion runs a video.

Both in the same run, on clips made the same way (the loop's clip is shorter: it is ~17x
slower). Rows carry frames, seconds, FPS and faces; FPS is frames / wall seconds of the whole
transcode (decode, swap, encode, mux).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FusionError
from ..pipeline.plan import FACEFUSION_ENGINE
from .artifacts import Unavailable
from .config import cuda_reason
from .stages import SYNTHETIC_NOTE, read_images

if TYPE_CHECKING:
    from .runner import BenchRunner

log = logging.getLogger(__name__)

GPU_PATH, LOOP = "gpu-path", "facefusion-loop"
VIDEO_ENGINES = (GPU_PATH, LOOP)


@dataclass(frozen=True)
class VideoRowSettings:
    """The clip and the encoders. 1080p30; 20 s for the GPU path (its fixed start-up — threads,
    encoders, the first batch — is then a small part), 3 s for the loop."""

    size: tuple[int, int] = (1920, 1080)
    seconds: float = 20.0
    loop_seconds: float = 3.0
    fps: int = 30
    batch: int = 32
    encoders: int = 4
    preset: str = "ultrafast"


def _clip(folder: Path, seconds: float, s: VideoRowSettings) -> Path:
    from .clip import make_test_video
    path = folder / f"clip_{s.size[0]}x{s.size[1]}_{seconds:g}s.mp4"
    if not path.is_file():
        make_test_video(path, seconds, s.fps, s.size, audio=False)
    return path


def _settings(r: "BenchRunner", host: bool):
    from ..pipeline.settings import PipelineConfig
    c = r.cfg
    post = dict(enhancer=c.pipeline_enhancer, masks=tuple(c.pipeline_masks))
    if host:  # FaceFusion: one ORT CUDA session per model, frame by frame, no CUDA graphs
        return PipelineConfig(swapper=c.pipeline_swapper, kernels="host", engine=FACEFUSION_ENGINE,
                              device=c.device, allow_synthetic=c.allow_synthetic,
                              det_size=c.detect_size, cuda_graphs=False, **post)
    return PipelineConfig(swapper=c.pipeline_swapper, kernels="device", device=c.device,
                          allow_synthetic=c.allow_synthetic, det_size=c.detect_size,
                          precision=c.pipeline_precision, gen_batch=r.video.batch, **post)


def run_video_group(r: "BenchRunner", g) -> None:
    """One row: the GPU path or the FaceFusion-style loop on its clip."""
    row = g.rows[0]
    s = r.video
    try:
        try:
            from ..pipeline.swapper import FaceSwapper
            from ..pipeline.video.io import process_video
            from ..pipeline.video.loop import VideoConfig, transcode
        except ImportError as e:  # PyAV missing, say
            raise Unavailable(f"the video path cannot be imported here: {e}") from None
        if not r.cfg.device.startswith("cuda"):
            raise Unavailable("the video rows compare two CUDA paths: run with --device cuda")
        if (why := cuda_reason()):
            raise Unavailable(why)
        source = read_images((r.cfg.source,))
        if not source:
            raise Unavailable(f"source photo {r.cfg.source} | missing; pass --source")
        if (why := r._over_budget()):
            return r._close_rows(g.rows, "skipped", why)
        host = g.engine == LOOP
        row["device"] = r.cfg.device
        work = Path(tempfile.mkdtemp(prefix="fusionrt-bench-video-"))
        clip = _clip(r.clip_dir, s.loop_seconds if host else s.seconds, s)
        t0 = time.perf_counter()
        with FaceSwapper.open(_settings(r, host), store=r.store) as sw:
            sw.set_source(source[0])
            if not host:
                sw.warmup(s.batch, s.size[1], s.size[0])
            open_s = time.perf_counter() - t0
            if host:
                st = process_video(clip, work / "out.mp4", sw.process_frame, progress=False)
                enc = "1 x264 encoder (process_video's default)"
            else:
                vc = VideoConfig(batch=s.batch, encoders=s.encoders, preset=s.preset)
                st = transcode(clip, work / "out.mp4", sw.frame_stage(s.batch), vc)
                enc = f"{s.encoders} x264 {s.preset} encoders"
            row.update(status="ok", reason=None, synthetic=bool(sw.synthetic),
                       weights_note=SYNTHETIC_NOTE if sw.synthetic else "real weights",
                       runs=1, fps=st.frames / st.seconds if st.seconds else None,
                       video={"frames": st.frames, "seconds": round(st.seconds, 3),
                              "faces": st.faces, "clip": f"{s.size[0]}x{s.size[1]} "
                              f"{st.frames / s.fps:g} s @ {s.fps} fps", "encoders": enc,
                              "open_and_warmup_s": round(open_s, 2)},
                       engine_config={"stages": sw.describe()})
    except (Unavailable, FusionError) as e:
        return r._close_rows(g.rows, "unavailable", str(e))
    except Exception as e:  # noqa: BLE001 - a row that cannot run says why
        log.debug("video row failed", exc_info=True)
        return r._close_rows(g.rows, "error", f"{type(e).__name__}: {str(e).splitlines()[0]}")
    r._emit(row)
