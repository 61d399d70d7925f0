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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..engines.base import BatchProfile, EngineConfig
from ..engines.registry import get_engine
from ..errors import FusionError, InputError
from ..models.store import ModelStore
from ..models.zoo import get_spec
from . import artifacts
from .artifacts import Unavailable
from .machine import MemoryProbe, machine_info
from .stages import (DEFAULT_FRAME, DEFAULT_SOURCE, STAGES, SYNTHETIC_NOTE, make_feeds,
                     outputs_to_numpy, parity, read_images, slice_feeds)
from .timers import RowKey, TimingSource, default_timer, summarize

log = logging.getLogger(__name__)

SCHEMA = "fusionrt.bench/1"
TORCH_ENGINES = ("torch", "torch-compile")
BUILD_ENGINES = ("torch-compile", "ort-trt", "trt")  # compile/build per shape: run them last
PRECISIONS = ("fp32", "fp16", "int8")
REFERENCE = "ort-cpu"
CPU_DEFAULTS = dict(engines=("ort-cpu", "torch"), precisions=("fp32",), batches=(1,),
                    runs=5, warmup=1)
CUDA_DEFAULTS = dict(engines=("torch", "ort-cuda", "torch-compile", "ort-trt", "trt"),
                     precisions=PRECISIONS, batches=(1, 4, 16, 32), runs=50, warmup=3)


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. ``budget_s``: start no row after this many seconds (later rows are
    listed as skipped). ``max_row_s``: cap a row's timed runs at about this many seconds."""

    engines: tuple[str, ...] = CPU_DEFAULTS["engines"]
    precisions: tuple[str, ...] = ("fp32",)
    batches: tuple[int, ...] = (1,)
    stages: tuple[str, ...] = tuple(STAGES)
    runs: int = 5
    warmup: int = 1
    device: str = "cpu"
    allow_synthetic: bool = False
    budget_s: float | None = None
    max_row_s: float | None = None
    min_runs: int = 3
    parity_items: int = 2
    detect_size: int = 640
    pipeline_swapper: str = "inswapper_128"
    frame: Path = DEFAULT_FRAME
    source: Path = DEFAULT_SOURCE
    seed: int = 0
    command: str | None = None

    def validate(self) -> "BenchConfig":
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise InputError(f"--stages | unknown {bad}; expected some of: {', '.join(STAGES)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise InputError(f"--precisions | unknown {bad}; expected some of: "
                             f"{', '.join(PRECISIONS)}")
        if not self.batches or min(self.batches) < 1:
            raise InputError(f"--batch | got {list(self.batches)}; expected sizes >= 1")
        if self.runs < 1 or self.warmup < 1:
            raise InputError(f"--runs/--warmup | got {self.runs}/{self.warmup}; expected >= 1 "
                             "(the first run holds lazy builds and compiles, so it is never timed)")
        if not self.engines:
            raise InputError("--engines | empty; expected at least one engine")
        return self


@dataclass
class _Group:
    stage: str
    engine: str
    precision: str
    batches: tuple[int, ...]
    rows: list[dict] = field(default_factory=list)


def engine_device(cls: Any, requested: str) -> str:
    """The device a row runs on: the requested one if the engine supports it, else the
    engine's own (ort-cpu stays on the CPU in a CUDA run, ort-cuda needs CUDA in a CPU run)."""
    return requested if requested.split(":")[0] in cls.devices else cls.devices[0]


def _cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "needs torch with CUDA for device buffers and CUDA-event timing: pip install torch"
    if not torch.cuda.is_available():
        return "not available on this machine: torch sees no CUDA GPU"
    return None


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
        self._feeds: dict[str, dict] = {}
        self._refs: dict[str, tuple[dict | None, str | None]] = {}
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
        # Cheap engines first, builders/compilers last; within those, the seed's 256² generator
        # first: a budget that runs out then cuts the least informative rows.
        order = {s: i for i, s in enumerate(("swap256", "swap128", "embed", "detect", "pipeline"))}
        return sorted(groups, key=lambda g: (g.engine in BUILD_ENGINES, order[g.stage],
                                             PRECISIONS.index(g.precision)))

    def _new_row(self, g: _Group, batch: int) -> dict:
        st = STAGES[g.stage]
        model = st.model or f"pipeline({self.cfg.pipeline_swapper})"
        return {"stage": g.stage, "model": model, "engine": g.engine, "precision": g.precision,
                "batch": batch, "device": None, "status": "pending",
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
            if row["status"] == "ok":
                lat = row["latency_ms"]
                log.info("%s %s/%s b%d: %.2f ms (p95 %.2f), %.1f FPS", row["stage"],
                         row["engine"], row["precision"], row["batch"], lat["mean"], lat["p95"],
                         row["fps"])
            else:
                log.info("%s %s/%s b%d: %s (%s)", row["stage"], row["engine"], row["precision"],
                         row["batch"], row["status"], row["reason"])
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
        ok, why = cls.available()
        if not ok:
            raise Unavailable(f"not available on this machine: {why}")
        if device.startswith("cuda") and (why := _cuda_reason()):
            raise Unavailable(why)
        for r in g.rows:
            r["device"] = device
        return cls, device

    def _run_group(self, g: _Group) -> None:
        c = self.cfg
        try:
            if (why := self._over_budget()):
                return self._close_rows(g.rows, "skipped", why)
            cls, device = self._prepare(g)
            base = self.store.resolve(STAGES[g.stage].model, allow_synthetic=c.allow_synthetic)
            art, info = artifacts.for_precision(base, g.engine, g.precision,
                                                torch_engine=g.engine in TORCH_ENGINES)
        except Unavailable as e:
            return self._close_rows(g.rows, "unavailable", str(e))
        except FusionError as e:
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
        feeds_np = self._stage_feeds(g.stage, base, size)
        feeds_np = {t.name: feeds_np[t.name].astype(t.dtype) for t in art.spec.inputs}
        options = {"dims": {"H": size, "W": size}} if (g.stage == "detect" and g.engine == "trt") \
            else {}
        prof = BatchProfile(min(g.batches), max(g.batches), max(g.batches))
        if cls.fixed_batch_profile:
            for r in g.rows:
                r["notes"].append(f"one batch profile for all rows: min:opt:max = {prof}")
        config = EngineConfig(device=device, precision=g.precision, batch=prof, options=options)
        timer = self.timer_factory(device)
        probe = MemoryProbe(device)
        engine = None
        try:
            probe.baseline()
            load, engine = self._load_twice(cls, art, config, timer, feeds_np, g, device, info)
            for row, b in zip(g.rows, g.batches):
                if (why := self._over_budget()):
                    self._close_rows([row], "skipped", why)
                    continue
                self._run_row(g, row, b, engine, timer, probe, feeds_np, device, load)
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

    def _load_twice(self, cls, art, config, timer, feeds_np, g, device, info):
        """Cold load + first run, close, warm load (a fresh instance, same process)."""
        key = RowKey(g.stage, g.engine, g.precision, g.batches[0])
        feeds = self._device_feeds(slice_feeds(feeds_np, g.batches[0]), device)
        cold = cls(art, config)
        cold_load, _ = timer.time_once(cold.load, key)
        if getattr(cold, "fell_back", False):  # ort-trt without TensorRT libraries
            cold.close()
            raise Unavailable("not available on this machine: ONNX Runtime's TensorRT EP "
                              "cannot load the TensorRT libraries and fell back to the CUDA EP "
                              "(its rows would repeat ort-cuda)")
        cold_first, _ = timer.time_once(lambda: cold.run(feeds), key)
        cold.close()
        del cold
        warm = cls(art, config)
        warm_load, _ = timer.time_once(warm.load, key)
        load = {"artifact_build_ms": info.get("build_ms"), "cold_load_ms": cold_load,
                "cold_first_run_ms": cold_first, "warm_load_ms": warm_load,
                "warm_first_run_ms": None, "note": _load_note(g.engine)}
        for r in g.rows:
            r["load"] = load
        return load, warm

    def _run_row(self, g, row, batch, engine, timer, probe, feeds_np, device, load) -> None:
        c = self.cfg
        key = RowKey(g.stage, g.engine, g.precision, batch)
        try:
            feeds = self._device_feeds(slice_feeds(feeds_np, batch), device)
            fn = lambda: engine.run(feeds)  # noqa: E731
            probe.reset_peak()
            first, _ = timer.time_once(fn, key)
            est = first
            for _ in range(c.warmup - 1):
                est, _ = timer.time_once(fn, key)
            runs = c.runs
            if c.max_row_s is not None and est > 0:
                runs = min(c.runs, max(c.min_runs, int(c.max_row_s * 1000.0 / est)))
            timing, out = timer.measure(fn, runs, key)
            mem = probe.sample()
            row.update(status="ok", reason=None, timer=timing.source, runs=timing.runs,
                       first_run_ms=first, latency_ms=summarize(timing.latency_ms),
                       wall_ms=summarize(timing.wall_ms), mem=mem,
                       gpu_mem_mb=_gpu_mem(mem),
                       fps=batch * timing.runs / timing.total_wall_s if timing.total_wall_s else None)
            if runs < c.runs:
                row["notes"].append(f"runs capped at {runs} (--max-row-s {c.max_row_s:g})")
            self._row_parity(g, row, out)
        except Exception as e:  # OOM at a large batch must not end the run
            log.debug("row failed", exc_info=True)
            row.update(status="error", reason=f"{type(e).__name__}: {str(e).splitlines()[0]}")
            probe.release()
        self._emit(row)

    def _row_parity(self, g: _Group, row: dict, out: Any) -> None:
        ref, why = self._reference(g.stage)
        if ref is None:
            row["parity"] = {"passed": None, "reason": why}
            return
        task = "pipeline" if g.stage == "pipeline" else get_spec(STAGES[g.stage].model).task
        got = {"frame": out.astype("float32")} if g.stage == "pipeline" else \
            outputs_to_numpy(out, min(row["batch"], self.cfg.parity_items))
        try:
            row["parity"] = {"reference": f"{REFERENCE}/fp32", **parity(task, ref, got)}
        except ValueError as e:
            row["parity"] = {"passed": None, "reason": str(e)}

    # -- inputs and reference -------------------------------------------------------------
    def _stage_feeds(self, stage: str, base, size: int) -> dict:
        if stage not in self._feeds:
            self._feeds[stage] = make_feeds(base.spec, max(self.cfg.batches), size, self.images,
                                            self.cfg.seed)
        return self._feeds[stage]

    @staticmethod
    def _device_feeds(feeds: dict, device: str) -> dict:
        if not device.startswith("cuda"):
            return feeds
        import torch
        return {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}

    def _reference(self, stage: str) -> tuple[dict | None, str | None]:
        """FP32 outputs of ``REFERENCE`` on the first K items, computed once per stage."""
        if stage in self._refs:
            return self._refs[stage]
        from .pipeline_row import reference_frame
        try:
            if stage == "pipeline":
                ref = {"frame": reference_frame(self.cfg, self.store, self.lookup, self.images)}
            else:
                c = self.cfg
                base = self.store.resolve(STAGES[stage].model, allow_synthetic=c.allow_synthetic)
                size = STAGES[stage].size if stage != "detect" else c.detect_size
                k = min(c.parity_items, max(c.batches))
                feeds = slice_feeds(self._stage_feeds(stage, base, size), k)
                with self.lookup(REFERENCE)(base, EngineConfig("cpu", "fp32")) as eng:
                    ref = outputs_to_numpy(eng.run(feeds), k)
            self._refs[stage] = (ref, None)
        except Exception as e:
            self._refs[stage] = (None, f"no FP32 reference ({REFERENCE}): "
                                       f"{type(e).__name__}: {e}")
        return self._refs[stage]

    def _run_pipeline(self, g: _Group) -> None:
        from .pipeline_row import run_pipeline_group
        run_pipeline_group(self, g)


def _gpu_mem(mem: dict) -> float | None:
    """The table's figure: NVML's whole-device delta where NVML works (sees every allocator),
    else torch's allocator peak."""
    if mem.get("nvml_used_delta_mb") is not None:
        return mem["nvml_used_delta_mb"]
    return mem.get("torch_max_allocated_mb")


def _load_note(engine: str) -> str:
    if engine == "torch-compile":
        from ..engines.torch_compile import enable_compile_cache
        return (f"cold includes Inductor compile; warm = new instance in the same process with "
                f"the persistent FX-graph cache at {enable_compile_cache()}")
    if engine in ("ort-trt", "trt"):
        return "cold includes the TensorRT engine build unless the engine cache already held it"
    if engine == "ort-cuda":
        return "first run includes cuDNN's exhaustive convolution search"
    return ""


def with_defaults(config: BenchConfig, **given: Any) -> BenchConfig:
    """``config`` with device-dependent defaults for every field left ``None`` in ``given``."""
    d = CUDA_DEFAULTS if given.get("device", config.device).startswith("cuda") else CPU_DEFAULTS
    merged = {k: (v if v is not None else d.get(k, getattr(config, k))) for k, v in given.items()}
    return replace(config, **merged)
