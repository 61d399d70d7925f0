"""The whole-pipeline rows: ``FaceSwapper.process_frame`` on one frame (batch 1), timed
with the same method as the model rows, parity against the same pipeline on ``ort-cpu``.

The pipeline takes one engine for every stage and runs it on that engine's first device; it has
no precision setting. Rows it cannot honour (FP16/INT8, torch on CUDA) are listed unavailable.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engines.registry import get_engine
from ..errors import FusionError
from .artifacts import Unavailable
from .config import REFERENCE, casts_precision, cuda_reason, engine_device
from ..runtime.machine import MemoryProbe
from .stages import SYNTHETIC_NOTE, read_images

if TYPE_CHECKING:
    from .config import BenchConfig
    from .runner import BenchRunner

log = logging.getLogger(__name__)


def _classes():
    try:
        from ..pipeline import plan
        from ..pipeline.settings import PipelineConfig
        from ..pipeline.swapper import FaceSwapper
    except ImportError as e:
        raise Unavailable(f"fusionrt.pipeline not usable in this build: {e}") from None
    return FaceSwapper, plan, PipelineConfig


def _images(cfg: "BenchConfig") -> tuple[np.ndarray, np.ndarray]:
    frame, source = (read_images((p,)) for p in (cfg.frame, cfg.source))
    if not frame or not source:
        raise Unavailable(f"pipeline images | need the frame {cfg.frame} and the source "
                          f"{cfg.source}; pass --frame/--source")
    return frame[0], source[0]


def _pipeline(cfg: "BenchConfig", store, engine: str):
    FaceSwapper, plan, PipelineConfig = _classes()
    device = engine_device(get_engine(engine), cfg.device)  # the engine's own device if need be
    pcfg = PipelineConfig(swapper=cfg.pipeline_swapper, engine=engine, device=device,
                          allow_synthetic=cfg.allow_synthetic, det_size=cfg.detect_size)
    # The plan's synthetic-weights banner would repeat on every build; the rows and the
    # report header carry the synthetic note instead.
    plog = logging.getLogger(plan.__name__)
    level = plog.level
    plog.setLevel(logging.ERROR)
    try:
        return FaceSwapper.open(pcfg, store=store)
    finally:
        plog.setLevel(level)


def reference_frame(cfg: "BenchConfig", store) -> np.ndarray:
    """The output frame of the pipeline on the reference engine (ort-cpu, FP32)."""
    frame, source = _images(cfg)
    pipe = _pipeline(cfg, store, REFERENCE)
    try:
        pipe.set_source(source)
        return pipe.process_frame(frame)[0].astype(np.float32)
    finally:
        pipe.close()


class _PipelineAsEngine:
    """``run(feeds)`` = one frame through the pipeline: lets the runner's row method time it."""

    def __init__(self, pipe: Any, frame: np.ndarray):
        self.pipe, self.frame = pipe, frame

    def run(self, feeds: Any) -> np.ndarray:
        return self.pipe.process_frame(self.frame)[0]

    def close(self) -> None:
        self.pipe.close()


def run_pipeline_group(r: "BenchRunner", g) -> None:
    cfg = r.cfg
    runner_engine = None
    probe = None
    try:
        if g.precision != "fp32":
            raise Unavailable("pipeline rows run FP32 (the plan's default precision, as "
                              "fusionrt swap runs it)")
        _classes()
        try:
            cls = r.lookup(g.engine)
        except FusionError as e:
            raise Unavailable(str(e)) from None
        if g.engine in r.fell_back:
            raise Unavailable(r.fell_back[g.engine])
        ok, why = cls.available()
        if not ok:
            raise Unavailable(f"not available on this machine: {why}")
        device = engine_device(cls, cfg.device)
        if device.startswith("cuda") and (why := cuda_reason()):
            raise Unavailable(why)
        frame, source = _images(cfg)
        if (why := r._over_budget()):
            return r._close_rows(g.rows, "skipped", why)
        row = g.rows[0]
        row["device"] = device
        timer = r.timer_factory(device)
        probe = MemoryProbe(device)
        probe.baseline()

        def build_and_first():
            p = _pipeline(cfg, r.store, g.engine)
            p.set_source(source)
            p.process_frame(frame)
            return p

        # cold: build every stage's engine + source identity + first frame, together
        cold_ms, pipe = timer.time_once(build_and_first)
        fell_back = any(getattr(e, "fell_back", False) for e in getattr(pipe, "_engines", []))
        pipe.close()
        if fell_back:  # ort-trt on the CUDA EP: its figure would be ort-cuda's
            from .runner import FELL_BACK
            raise Unavailable(FELL_BACK)
        warm_ms, pipe = timer.time_once(lambda: _pipeline(cfg, r.store, g.engine))
        runner_engine = _PipelineAsEngine(pipe, frame)
        pipe.set_source(source)
        _, faces = pipe.process_frame(frame)
        synthetic = bool(pipe.synthetic)
        row.update(synthetic=synthetic, artifact=cfg.pipeline_swapper,
                   weights_note=SYNTHETIC_NOTE if synthetic else "real weights",
                   load={"artifact_build_ms": None, "cold_load_ms": cold_ms,
                         "cold_first_run_ms": None, "warm_load_ms": warm_ms,
                         "warm_first_run_ms": None,
                         "note": "cold = build all stages + set source + first frame; "
                                 "warm = build all stages again (same process)"})
        row["notes"] += [f"faces swapped per frame: {faces}",
                         "stages: " + "; ".join(f"{k}: {v}" for k, v in pipe.describe().items())]
        if casts_precision(cls):  # the torch engines
            row["notes"].append("the real detector runs as a native torch module loaded from "
                                "its ONNX on torch engines")
        r._run_row(g, row, 1, runner_engine, timer, probe, {}, "cpu")
        row["load"]["warm_first_run_ms"] = row["first_run_ms"]
    except (Unavailable, FusionError) as e:
        r._close_rows(g.rows, "unavailable", str(e))
    except Exception as e:
        log.debug("pipeline group failed", exc_info=True)
        r._close_rows(g.rows, "error", f"{type(e).__name__}: {str(e).splitlines()[0]}")
    finally:
        if runner_engine is not None:
            runner_engine.close()
        if probe is not None:
            probe.release()
            probe.close()
