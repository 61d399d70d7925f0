"""The benchmark matrix (engines × precisions × batch sizes × stages) and the timing method.

Per (stage, engine, precision) group: load the engine (cold: first load and first run, which
include builds, compiles and cuDNN searches), close it, load it again (warm), then per batch
size: warm-up runs, then N timed runs (``timers``), memory probes, parity of the last outputs
against the FP32 reference (ONNX Runtime CPU FP32 on the first K items of the same inputs).
Rows that cannot run say why (status ``unavailable``/``error``/``skipped``), never vanish.
Each finished row is handed to ``on_row`` so a killed run still leaves its results.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

from ..builders.open import open_engine
from ..engines.base import BatchProfile, EngineConfig
from ..engines.registry import get_engine
from ..errors import FusionError
from ..models.store import ModelStore
from ..models.zoo import get_spec
from ..pipeline.plan import BASELINE_ENGINES
from . import artifacts
from .artifacts import Unavailable
from ..runtime.machine import MemoryProbe, machine_info
from .config import (BUILD_ENGINES, PRECISIONS, REFERENCE, SCHEMA, BenchConfig, casts_precision,
                     cuda_reason, engine_device, fresh_dynamo, gpu_mem_figure, load_note)
from .reference import References
from .stages import STAGES, SYNTHETIC_NOTE, read_images, slice_feeds
from .timers import RowKey, TimingSource, default_timer, summarize
from .video_row import GPU_PATH, VIDEO_ENGINES, VideoRowSettings

log = logging.getLogger(__name__)

PLAIN, AS_SWAP = "plain", "as fusionrt swap"
BASELINE_CELLS = tuple((e, "fp32") for e in BASELINE_ENGINES)  # the seed's PyTorch/ORT rows
FELL_BACK = ("not available on this machine: ONNX Runtime's TensorRT EP cannot load the "
             "TensorRT libraries and fell back to the CUDA EP (its rows would repeat ort-cuda)")

@dataclass
class _Group:
    stage: str
    engine: str
    precision: str
    batches: tuple[int, ...]
    rows: list[dict] = field(default_factory=list)


class BenchRunner:
    """Runs a ``BenchConfig``; ``run()`` returns the result document (see ``report``)."""

    def __init__(self, config: BenchConfig, timer_factory: Callable[[str], TimingSource] = None,
                 engine_lookup: Callable[[str], type] = get_engine, store: ModelStore | None = None,
                 on_row: Callable[[dict], None] | None = None, progress: bool = True,
                 resume: dict | None = None, clip_dir: Path | None = None):
        """``resume``: an earlier result document of the same matrix; its finished rows (ok or
        unavailable) are kept and not run again. ``clip_dir``: where the video rows' clips
        are made (default: a temporary folder)."""
        self.cfg = config.validate()
        self.video = VideoRowSettings()
        self.clip_dir = clip_dir or Path(tempfile.mkdtemp(prefix="fusionrt-bench-clips-"))
        self.timer_factory = timer_factory or default_timer
        self.lookup = engine_lookup
        self.store = store or ModelStore()
        self.on_row = on_row
        self.progress = progress
        self.images = read_images((config.frame, config.source))
        self.refs = References(config, self.store, engine_lookup, self.images)
        self.fell_back: dict[str, str] = {}  # engine -> reason, once it fell back to another EP
        self.groups = self._plan()
        self.resumed = self._resume(resume) if resume else 0
        self.doc: dict[str, Any] = {}

    # -- plan --------------------------------------------------------------------------
    def _plan(self) -> list[_Group]:
        c = self.cfg
        groups = []
        for stage in c.stages:
            if stage == "video":  # two rows: the GPU path and the FaceFusion-style loop
                cells = [(e, c.pipeline_precision if e == GPU_PATH else "fp32")
                         for e in VIDEO_ENGINES]
            else:
                cells = c.pairs()
            for engine, prec in cells:
                batches = (1,) if stage in ("pipeline", "video") else tuple(c.batches)
                g = _Group(stage, engine, prec, batches)
                g.rows = [self._new_row(g, b) for b in batches]
                groups.append(g)
        # Cheap engines first in the order asked for; builders/compilers last, the seed's 256²
        # generator first among them: a budget that runs out then cuts the costliest rows.
        given = {s: i for i, s in enumerate(c.stages)}
        built = {s: i for i, s in enumerate(("swap256", "swap128", "embed", "detect", "pipeline"))}
        return sorted(groups, key=lambda g: (
            g.stage == "video", g.engine in BUILD_ENGINES,
            (built if g.engine in BUILD_ENGINES else given).get(g.stage, len(given)),
            PRECISIONS.index(g.precision) if g.precision in PRECISIONS else len(PRECISIONS)))

    def _resume(self, doc: dict) -> int:
        """Keep the finished rows of an earlier run of this matrix; returns how many."""
        done = {(r["stage"], r["engine"], r["precision"], r["batch"]): r
                for r in doc.get("rows", []) if r.get("status") in ("ok", "unavailable")}
        n = 0
        for g in self.groups:
            for i, r in enumerate(g.rows):
                old = done.get((r["stage"], r["engine"], r["precision"], r["batch"]))
                if old is not None:
                    g.rows[i] = {**r, **old, "notes": list(old.get("notes") or []) + [
                        "kept from the earlier run this one resumed"]}
                    n += 1
        return n

    def estimate_s(self) -> float:
        """A rough total before starting (printed so a user knows what they started): per row
        its timed runs capped at ``max_row_s``, plus per group a load that depends on what the
        engine does at load (compile ~40 s per batch size, plan build ~30 s, else ~3 s)."""
        c = self.cfg
        row_s = min(c.max_row_s or 5.0, 5.0) + 0.5
        total = 0.0
        for g in self.groups:
            todo = [r for r in g.rows if r["status"] == "pending"]
            if not todo:
                continue
            if g.stage == "video":
                total += 40.0
                continue
            try:
                cls = self.lookup(g.engine)
                per = 40.0 if cls.compiles else 30.0 if cls.fixed_batch_profile else 0.0
                ok = cls.available()[0]
            except FusionError:
                per, ok = 0.0, False
            if ok:
                total += 3.0 + len(todo) * (row_s + per)
        return total

    def _new_row(self, g: _Group, batch: int) -> dict:
        st = STAGES[g.stage]
        model = st.model or f"pipeline({self.cfg.pipeline_swapper})"
        size = None if g.stage == "pipeline" else (
            self.cfg.detect_size if g.stage == "detect" else st.size)
        return {"stage": g.stage, "model": model, "input_size": size, "engine": g.engine,
                "precision": g.precision, "batch": batch, "device": None, "status": "pending",
                "reason": "the run ended before this row", "synthetic": None, "weights_note": None,
                "artifact": None, "timer": None, "runs": 0, "warmup": self.cfg.warmup,
                "latency_ms": None, "wall_ms": None, "fps": None, "first_run_ms": None,
                "mem": None, "gpu_mem_mb": None, "load": None, "parity": None, "gate": None,
                "speedup_vs_torch_fp32": None, "speedup_vs_ort_cuda_fp32": None,
                "engine_config": None, "video": None, "best": False, "notes": []}

    # -- run ---------------------------------------------------------------------------
    def run(self) -> dict:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm
        c = self.cfg
        self.t0 = time.perf_counter()
        self.done = 0
        self.doc = {"schema": SCHEMA, "machine": machine_info(c.device, c.command),
                    "config": self._config_dict(), "synthetic": False, "rows": []}
        self._synthesize_missing()
        total = sum(len(g.rows) for g in self.groups)
        with logging_redirect_tqdm(), tqdm(total=total, unit="row", disable=not self.progress,
                                           mininterval=1.0) as bar:
            self.bar = bar
            bar.update(self.resumed)
            for g in self.groups:
                if not any(r["status"] == "pending" for r in g.rows):
                    continue  # resumed
                bar.set_description(f"{g.stage} {g.engine}/{g.precision}")
                run = {"pipeline": self._run_pipeline, "video": self._run_video}.get(
                    g.stage, self._run_group)
                run(g)
        self.doc["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        self._emit(None)
        return self.doc

    def _synthesize_missing(self) -> None:
        """With ``allow_synthetic``: make the full-size random-weight models the rows need and
        the store lacks (no real weights, no synthetic copy). Seconds count in the run's time."""
        c = self.cfg
        if not c.allow_synthetic:
            return
        from ..models.zoo import ZOO
        from ..pipeline.plan import EMBEDDER
        names = [STAGES[s].model for s in c.stages if STAGES[s].model]
        if {"pipeline", "video"} & set(c.stages):
            names += [c.pipeline_swapper, ZOO[c.pipeline_swapper].extra.get("embedder", EMBEDDER)]
            # the identity converter the plan's 'convert' stage runs (simswap: crossface_simswap)
            names += [n for n in [ZOO[c.pipeline_swapper].extra.get("converter")] if n]
            # the post-swap stages the video rows run (--preset enhance)
            names += [c.pipeline_enhancer] if c.pipeline_enhancer != "none" else []
            from ..pipeline.settings import PipelineConfig  # its default mask models
            names += [PipelineConfig.occluder] if "occlusion" in c.pipeline_masks else []
            names += [PipelineConfig.face_parser] if "region" in c.pipeline_masks else []
        try:
            from ..builders.synth import synthesize_missing
            built = synthesize_missing(self.store, names)
        except Exception as e:  # noqa: BLE001 - e.g. no torch: the rows say what is missing
            self.doc.setdefault("notes", []).append(f"could not synthesize the missing ones of {names}: {e}")
            return
        if not built:
            return
        self.doc.setdefault("notes", []).append(
            "synthesized (full size, seeded random weights): "
            + ", ".join(f"{k} in {v:g} s" for k, v in built.items()))

    def _config_dict(self) -> dict:
        c = self.cfg
        d = {k: getattr(c, k) for k in ("engines", "precisions", "batches", "stages", "runs",
                                         "warmup", "device", "allow_synthetic", "budget_s",
                                         "max_row_s", "min_runs", "parity_items", "detect_size",
                                         "pipeline_swapper", "seed", "preset",
                                         "plain_baselines", "load_twice")}
        d["cells"] = [list(x) for x in c.pairs()]
        d.update(frame=str(c.frame), source=str(c.source), reference=f"{REFERENCE}/fp32",
                 reference_note=(f"every row's last outputs vs {REFERENCE} FP32 on the "
                                 f"first min(batch, {c.parity_items}) items of the same inputs"))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def _emit(self, row: dict | None) -> None:
        from .report import compute_speedups, mark_best
        rows = [r for g in self.groups for r in g.rows]
        idx = {k: {v: i for i, v in enumerate(getattr(self.cfg, k))}
               for k in ("stages", "engines", "precisions")}
        rows.sort(key=lambda r: (idx["stages"][r["stage"]],
                                 idx["engines"].get(r["engine"], len(idx["engines"])),
                                 idx["precisions"].get(r["precision"], len(idx["precisions"])),
                                 r["batch"]))
        self.doc["rows"] = mark_best(compute_speedups(rows))
        self.doc["synthetic"] = any(r.get("synthetic") for r in rows)
        if row is None:  # the end of the run
            from .report import summarize_doc
            self.doc["summary"] = summarize_doc(self.doc)
        if row is not None:
            self.bar.update(1)
            self.done += 1
            where = (f"[{self.done}/{self.bar.total} +{time.perf_counter() - self.t0:.0f}s] "
                     f"{row['stage']} {row['engine']}/{row['precision']} b{row['batch']}")
            if row["status"] == "ok" and row.get("latency_ms") is None:  # a video row
                log.info("%s: %.1f FPS end to end", where, row["fps"] or 0.0)
            elif row["status"] == "ok":
                lat = row["latency_ms"]
                log.info("%s: %.2f ms (p95 %.2f), %.1f FPS, %d runs", where, lat["mean"],
                         lat["p95"], row["fps"], row["runs"])
            else:
                log.info("%s: %s (%s)", where, row["status"], row["reason"])
        if self.on_row is not None:
            self.on_row(self.doc)

    def _close_rows(self, rows: list[dict], status: str, reason: str) -> None:
        for r in rows:
            if r["status"] == "pending":
                r.update(status=status, reason=reason)
                self._emit(r)

    def _over_budget(self) -> str | None:
        b = self.cfg.budget_s
        if b is not None and time.perf_counter() - self.t0 > b:
            return f"time budget of {b:g} s spent before this row (raise --budget-s)"
        return None

    # -- one group ---------------------------------------------------------------------
    def _prepare(self, g: _Group) -> tuple[type, str]:
        """(engine class, device) or ``Unavailable``."""
        try:
            cls = self.lookup(g.engine)
        except FusionError as e:
            raise Unavailable(str(e)) from None
        device = engine_device(cls, self.cfg.device)
        if g.engine in self.fell_back:  # known from an earlier group: skip the slow load
            raise Unavailable(self.fell_back[g.engine])
        ok, why = cls.available()
        if not ok:
            raise Unavailable(f"not available on this machine: {why}")
        if device.startswith("cuda") and (why := cuda_reason()):
            raise Unavailable(why)
        for r in g.rows:
            r["device"] = device
        return cls, device

    def _run_group(self, g: _Group) -> None:
        c = self.cfg
        try:
            cls, device = self._prepare(g)  # cheap facts first: they beat "skipped"
            casts = casts_precision(cls)  # torch engines: precision is autocast, no graph
            if (why := artifacts.static_reason(g.engine, g.precision, casts)):
                raise Unavailable(why)
            if (why := self._over_budget()):
                return self._close_rows(g.rows, "skipped", why)
            base = self.store.resolve(STAGES[g.stage].model, allow_synthetic=c.allow_synthetic)
            art, info = artifacts.for_precision(base, g.engine, g.precision,
                                                torch_engine=casts,
                                                allow_synthetic=c.allow_synthetic)
        except (Unavailable, FusionError) as e:
            return self._close_rows(g.rows, "unavailable", str(e))
        except Exception as e:  # a converter failing on this model: an error, with its reason
            log.debug("artifact for %s failed", g, exc_info=True)
            return self._close_rows(g.rows, "error", f"{type(e).__name__}: {e}")
        for r in g.rows:
            r.update(synthetic=art.synthetic, artifact=str(art.onnx_path or art.weights_path),
                     weights_note=SYNTHETIC_NOTE if art.synthetic else "real weights",
                     gate=info.get("gate"))
            r["notes"] += info.get("notes", [])
        size = STAGES[g.stage].size if g.stage != "detect" else c.detect_size
        feeds_np = self.refs.feeds(g.stage, base.spec, size)
        feeds_np = {t.name: feeds_np[t.name].astype(t.dtype) for t in art.spec.inputs}
        feed_device = device
        if cls.compiles:
            fresh_dynamo()
        timer = self.timer_factory(device)
        probe = MemoryProbe(device)
        engine = None
        try:
            probe.baseline()
            for i, (row, b) in enumerate(zip(g.rows, g.batches)):
                if row["status"] != "pending":
                    continue  # kept from a resumed run
                if engine is not None and (why := self._over_budget()):
                    self._close_rows([row], "skipped", why)  # the first load is paid: run it
                    continue
                config, tuning = self.engine_config(g, cls, device, b)
                row["engine_config"] = {"tuning": tuning, "batch_profile": str(config.batch),
                                        "options": dict(config.options)}
                if engine is None or engine.config != config:
                    if engine is not None:
                        engine.close()
                        engine = None
                    engine = self._open(cls, art, config, timer, feeds_np, g, row, b,
                                        feed_device, info, first=i == 0)
                    opened = True
                else:
                    opened = False
                self._run_row(g, row, b, engine, timer, probe, feeds_np, feed_device)
                if opened and i == 0 and row.get("load"):  # the first row's first run
                    row["load"]["warm_first_run_ms" if c.load_twice
                                else "cold_first_run_ms"] = row["first_run_ms"]
        except (Unavailable, FusionError) as e:  # e.g. a dependency the engine lacks here
            self._close_rows(g.rows, "unavailable", str(e))
        except Exception as e:
            log.debug("group %s failed", g, exc_info=True)
            self._close_rows(g.rows, "error", f"{type(e).__name__}: {str(e).splitlines()[0]}")
        finally:
            if engine is not None:
                engine.close()
            probe.release()
            probe.close()

    def engine_config(self, g: _Group, cls: type, device: str, batch: int
                      ) -> tuple[EngineConfig, str]:
        """(the row's engine settings, how they were chosen). Every row runs what
        ``fusionrt swap`` runs for that stage and batch (``plan.stage_engine_config``: CUDA
        graphs, channels-last, the batch profile); the seed table's two baselines run plain
        (``plain_baselines``), as the seed's own PyTorch and ONNX Runtime rows did."""
        from ..pipeline.plan import stage_engine_config
        from ..pipeline.settings import PipelineConfig
        c = self.cfg
        if c.plain_baselines and (g.engine, g.precision) in BASELINE_CELLS:
            options = {"dims": {"H": c.detect_size, "W": c.detect_size}} \
                if g.stage == "detect" else {}
            return (EngineConfig(device=device, precision=g.precision,
                                 batch=BatchProfile(batch, batch, batch), options=options),
                    PLAIN)
        model = STAGES[g.stage].model
        stage = get_spec(model).task if model else g.stage  # the pipeline stage it runs as
        settings = PipelineConfig(det_size=c.detect_size)
        return (stage_engine_config(cls, stage, device, settings, batch, precision=g.precision),
                AS_SWAP)

    def _open(self, cls, art, config, timer, feeds_np, g, row, batch, feed_device, info,
              first: bool):
        """Open the row's engine. The group's first open is timed cold (first load and first
        run: builds, compiles, cuDNN searches); with ``load_twice`` it is closed and opened
        again (warm: a fresh instance in the same process)."""
        key = RowKey(g.stage, g.engine, g.precision, batch)
        feeds = self._device_feeds(slice_feeds(feeds_np, batch), feed_device)
        load_ms, eng = timer.time_once(lambda: open_engine(cls, art, config), key)
        if getattr(eng, "fell_back", False):  # ort-trt without TensorRT libraries
            eng.close()
            self.fell_back[g.engine] = FELL_BACK
            raise Unavailable(FELL_BACK)
        if not first:
            row["notes"].append(f"engine opened for this batch in {load_ms:.0f} ms "
                                "(its own settings: see engine_config)")
            return eng
        load = {"artifact_build_ms": info.get("build_ms"), "cold_load_ms": load_ms,
                "cold_first_run_ms": None, "warm_load_ms": None, "warm_first_run_ms": None,
                "note": load_note(cls)}
        if self.cfg.load_twice:
            try:
                load["cold_first_run_ms"], _ = timer.time_once(lambda: eng.run(feeds), key)
            finally:
                eng.close()
            load["warm_load_ms"], eng = timer.time_once(lambda: open_engine(cls, art, config),
                                                        key)
        for r in g.rows:
            r["load"] = load
        return eng

    def _run_row(self, g, row, batch, engine, timer, probe, feeds_np, feed_device) -> None:
        c = self.cfg
        key = RowKey(g.stage, g.engine, g.precision, batch)
        try:
            feeds = self._device_feeds(slice_feeds(feeds_np, batch), feed_device)
            fn = lambda: engine.run(feeds)  # noqa: E731
            probe.reset_peak()
            first, _ = timer.time_once(fn, key)
            est = first
            for _ in range(c.warmup - 1):
                est, _ = timer.time_once(fn, key)
            runs = c.runs
            if c.max_row_s is not None and math.isfinite(c.max_row_s) and est > 0:
                runs = min(c.runs, max(c.min_runs, int(c.max_row_s * 1000.0 / est)))
            timing, out = timer.measure(fn, runs, key)
            mem = probe.sample()
            row.update(status="ok", reason=None, timer=timing.source, runs=timing.runs,
                       first_run_ms=first, latency_ms=summarize(timing.latency_ms),
                       wall_ms=summarize(timing.wall_ms), mem=mem,
                       gpu_mem_mb=gpu_mem_figure(mem, casts_precision(self.lookup(g.engine))),
                       fps=(batch * timing.runs / timing.total_wall_s
                            if timing.total_wall_s else None))
            if runs < c.runs:
                row["notes"].append(f"runs capped at {runs} (--max-row-s {c.max_row_s:g})")
            row["parity"] = self.refs.parity(g.stage, batch, out)
        except Exception as e:  # OOM at a large batch must not end the run
            log.debug("row failed", exc_info=True)
            row.update(status="error", reason=f"{type(e).__name__}: {str(e).splitlines()[0]}")
            probe.release()
        self._emit(row)

    @staticmethod
    def _device_feeds(feeds: dict, device: str) -> dict:
        if not device.startswith("cuda"):
            return feeds
        import torch
        return {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}

    def _run_pipeline(self, g: _Group) -> None:
        from .pipeline_row import run_pipeline_group
        run_pipeline_group(self, g)

    def _run_video(self, g: _Group) -> None:
        from .video_row import run_video_group
        run_video_group(self, g)
