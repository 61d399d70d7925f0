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
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..builders.open import open_engine
from ..engines.base import BatchProfile, EngineConfig
from ..engines.registry import get_engine
from ..errors import FusionError
from ..models.store import ModelStore
from . import artifacts
from .artifacts import Unavailable
from ..runtime.machine import MemoryProbe, machine_info
from .config import (BUILD_ENGINES, PRECISIONS, REFERENCE, SCHEMA, BenchConfig, casts_precision,
                     cuda_reason, engine_device, fresh_dynamo, gpu_mem_figure, load_note)
from .reference import References
from .stages import STAGES, SYNTHETIC_NOTE, read_images, slice_feeds
from .timers import RowKey, TimingSource, default_timer, summarize

log = logging.getLogger(__name__)

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
                 on_row: Callable[[dict], None] | None = None, progress: bool = True):
        self.cfg = config.validate()
        self.timer_factory = timer_factory or default_timer
        self.lookup = engine_lookup
        self.store = store or ModelStore()
        self.on_row = on_row
        self.progress = progress
        self.images = read_images((config.frame, config.source))
        self.refs = References(config, self.store, engine_lookup, self.images)
        self.fell_back: dict[str, str] = {}  # engine -> reason, once it fell back to another EP
        self.groups = self._plan()
        self.doc: dict[str, Any] = {}

    # -- plan --------------------------------------------------------------------------
    def _plan(self) -> list[_Group]:
        c = self.cfg
        groups = []
        for stage in c.stages:
            for engine in c.engines:
                for prec in c.precisions:
                    batches = (1,) if stage == "pipeline" else tuple(c.batches)
                    g = _Group(stage, engine, prec, batches)
                    g.rows = [self._new_row(g, b) for b in batches]
                    groups.append(g)
        # Cheap engines first in the order asked for; builders/compilers last, the seed's 256²
        # generator first among them: a budget that runs out then cuts the costliest rows.
        given = {s: i for i, s in enumerate(c.stages)}
        built = {s: i for i, s in enumerate(("swap256", "swap128", "embed", "detect", "pipeline"))}
        return sorted(groups, key=lambda g: (
            g.engine in BUILD_ENGINES, (built if g.engine in BUILD_ENGINES else given)[g.stage],
            PRECISIONS.index(g.precision)))

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
                "speedup_vs_torch_fp32": None, "speedup_vs_ort_cuda_fp32": None, "notes": []}

    # -- run ---------------------------------------------------------------------------
    def run(self) -> dict:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm
        c = self.cfg
        self.t0 = time.perf_counter()
        self.done = 0
        self.doc = {"schema": SCHEMA, "machine": machine_info(c.device, c.command),
                    "config": self._config_dict(), "synthetic": False, "rows": []}
        total = sum(len(g.rows) for g in self.groups)
        with logging_redirect_tqdm(), tqdm(total=total, unit="row", disable=not self.progress,
                                           mininterval=1.0) as bar:
            self.bar = bar
            for g in self.groups:
                bar.set_description(f"{g.stage} {g.engine}/{g.precision}")
                (self._run_pipeline if g.stage == "pipeline" else self._run_group)(g)
        self.doc["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        self._emit(None)
        return self.doc

    def _config_dict(self) -> dict:
        c = self.cfg
        d = {k: getattr(c, k) for k in ("engines", "precisions", "batches", "stages", "runs",
                                         "warmup", "device", "allow_synthetic", "budget_s",
                                         "max_row_s", "min_runs", "parity_items", "detect_size",
                                         "pipeline_swapper", "seed")}
        d.update(frame=str(c.frame), source=str(c.source), reference=f"{REFERENCE}/fp32",
                 reference_note=(f"every row's last outputs vs {REFERENCE} FP32 on the "
                                 f"first min(batch, {c.parity_items}) items of the same inputs"))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def _emit(self, row: dict | None) -> None:
        from .report import compute_speedups
        rows = [r for g in self.groups for r in g.rows]
        idx = {k: {v: i for i, v in enumerate(getattr(self.cfg, k))}
               for k in ("stages", "engines", "precisions")}
        rows.sort(key=lambda r: (idx["stages"][r["stage"]], idx["engines"][r["engine"]],
                                 idx["precisions"][r["precision"]], r["batch"]))
        self.doc["rows"] = compute_speedups(rows)
        self.doc["synthetic"] = any(r.get("synthetic") for r in rows)
        if row is not None:
            self.bar.update(1)
            self.done += 1
            where = (f"[{self.done}/{self.bar.total} +{time.perf_counter() - self.t0:.0f}s] "
                     f"{row['stage']} {row['engine']}/{row['precision']} b{row['batch']}")
            if row["status"] == "ok":
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
        # the detector's square input fixes H and W (TensorRT profiles; other engines ignore it)
        options = {"dims": {"H": size, "W": size}} if g.stage == "detect" else {}
        prof = BatchProfile(min(g.batches), max(g.batches), max(g.batches))
        if cls.fixed_batch_profile:
            for r in g.rows:
                r["notes"].append(f"one batch profile for all rows: min:opt:max = {prof}")
        config = EngineConfig(device=device, precision=g.precision, batch=prof, options=options)
        feed_device = device
        if cls.compiles:
            fresh_dynamo()
        timer = self.timer_factory(device)
        probe = MemoryProbe(device)
        engine = None
        try:
            probe.baseline()
            load, engine = self._load_twice(cls, art, config, timer, feeds_np, g, feed_device,
                                            info)
            for i, (row, b) in enumerate(zip(g.rows, g.batches)):
                if i and (why := self._over_budget()):  # the first row's load is paid: run it
                    self._close_rows([row], "skipped", why)
                    continue
                self._run_row(g, row, b, engine, timer, probe, feeds_np, feed_device)
            load["warm_first_run_ms"] = g.rows[0]["first_run_ms"]
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

    def _load_twice(self, cls, art, config, timer, feeds_np, g, feed_device, info):
        """Cold load + first run, close, warm load (a fresh instance, same process)."""
        key = RowKey(g.stage, g.engine, g.precision, g.batches[0])
        feeds = self._device_feeds(slice_feeds(feeds_np, g.batches[0]), feed_device)
        cold_load, cold = timer.time_once(lambda: open_engine(cls, art, config), key)
        try:
            if getattr(cold, "fell_back", False):  # ort-trt without TensorRT libraries
                self.fell_back[g.engine] = FELL_BACK
                raise Unavailable(FELL_BACK)
            cold_first, _ = timer.time_once(lambda: cold.run(feeds), key)
        finally:
            cold.close()
        warm_load, warm = timer.time_once(lambda: open_engine(cls, art, config), key)
        load = {"artifact_build_ms": info.get("build_ms"), "cold_load_ms": cold_load,
                "cold_first_run_ms": cold_first, "warm_load_ms": warm_load,
                "warm_first_run_ms": None, "note": load_note(cls)}
        for r in g.rows:
            r["load"] = load
        return load, warm

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
