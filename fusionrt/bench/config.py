"""Benchmark settings: what to run (``BenchConfig``), the per-device defaults, and the small
facts about engines the runner needs (device, CUDA availability, load notes)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..engines.registry import REFERENCE_ENGINE, engine_names, get_engine
from ..pipeline.plan import SEED_TABLE_CELLS, SWAPPER_TABLE_CELLS
from ..errors import EngineError, InputError
from .stages import DEFAULT_FRAME, DEFAULT_SOURCE, MODEL_STAGES, STAGES, SWAPPER_STAGES


def casts_precision(cls: Any) -> bool:
    """The torch engines: they apply fp16/bf16 to the FP32 module themselves (autocast or the
    keep-list cast) and allocate through torch; the others run the precision of their graph."""
    return len(getattr(cls, "precisions", ("fp32",))) > 1


def builds_per_shape(cls: Any) -> bool:
    """Compiles (torch.compile) or builds a plan for a batch profile (TensorRT) when it loads."""
    return bool(getattr(cls, "compiles", False) or getattr(cls, "fixed_batch_profile", False))


def _registered() -> list[tuple[str, Any]]:
    """(name, class) of every registered engine, in the bench's order: the FP32 reference
    first, engines that compile or build per shape last (a budget that runs out cuts the
    costliest rows), and within each part the engines that cast the precision themselves (the
    torch baseline) ahead of the graph engines. An engine whose module cannot be imported is
    left out (the doctor names it)."""
    out = []
    for name in engine_names():
        try:
            out.append((name, get_engine(name)))
        except EngineError:
            continue
    return sorted(out, key=lambda e: (e[0] != REFERENCE_ENGINE, builds_per_shape(e[1]),
                                      not casts_precision(e[1])))


SCHEMA = "fusionrt.bench/1"
_ENGINES = _registered()
BUILD_ENGINES = tuple(n for n, c in _ENGINES if builds_per_shape(c))  # run them last
GRAPH_ENGINES = tuple(n for n, c in _ENGINES if not casts_precision(c))  # run the graph's precision
PRECISIONS = ("fp32", "fp16", "int8")
REFERENCE = REFERENCE_ENGINE
# CPU: small enough to finish in about a minute with full-size models (slow rows get 3 runs,
# no row starts after 90 s): the engines that run on the CPU and do not compile there (minutes);
# CUDA: the full matrix (every engine that runs on CUDA), each row's timed runs capped near 5 s.
CPU_DEFAULTS = dict(engines=tuple(n for n, c in _ENGINES if "cpu" in c.devices and not c.compiles),
                    precisions=("fp32",), batches=(1,),
                    runs=5, warmup=1, max_row_s=3.0, budget_s=90.0)
CUDA_DEFAULTS = dict(engines=tuple(n for n, c in _ENGINES if "cuda" in c.devices),
                     precisions=PRECISIONS, batches=(1, 4, 16, 32), runs=50, warmup=3,
                     max_row_s=5.0, budget_s=None)


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. ``budget_s``: start no row after this many seconds (later rows are
    listed as skipped). ``max_row_s``: cap a row's timed runs at about this many seconds."""

    engines: tuple[str, ...] = CPU_DEFAULTS["engines"]
    precisions: tuple[str, ...] = ("fp32",)
    batches: tuple[int, ...] = (1,)
    stages: tuple[str, ...] = MODEL_STAGES + ("pipeline",)
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
    # the video rows' post-swap stages and generator precision (``--preset enhance``: FaceFusion's
    # usual chain, swapper + gfpgan_1.4 + occlusion mask, on both paths)
    pipeline_enhancer: str = "none"
    pipeline_masks: tuple[str, ...] = ("box",)
    pipeline_precision: str = "tf32"
    frame: Path = DEFAULT_FRAME
    source: Path = DEFAULT_SOURCE
    seed: int = 0
    command: str | None = None
    # (engine, precision) pairs to run instead of engines x precisions (presets)
    cells: tuple[tuple[str, str], ...] | None = None
    preset: str | None = None
    # the seed table's baselines (torch/fp32, ort-cuda/fp32) run plain, as a user's own script
    # would; every other row runs the engine settings ``fusionrt swap`` uses for that batch
    plain_baselines: bool = True
    load_twice: bool = True  # cold load, close, warm load per group (load-time columns)

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
        if self.preset is not None and self.preset not in PRESETS:
            raise InputError(f"--preset | unknown '{self.preset}'; expected one of: "
                             f"{', '.join(PRESETS)}")
        return self

    def pairs(self) -> list[tuple[str, str]]:
        """The (engine, precision) cells this run times, in order."""
        if self.cells is not None:
            return list(self.cells)
        return [(e, p) for e in self.engines for p in self.precisions]


def engine_device(cls: Any, requested: str) -> str:
    """The device a row runs on: the requested one if the engine supports it, else the
    engine's own (ort-cpu stays on the CPU in a CUDA run, ort-cuda needs CUDA in a CPU run)."""
    return requested if cls.runs_on(requested) else cls.devices[0]


def cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "needs torch with CUDA for device buffers and CUDA-event timing: pip install torch"
    if not torch.cuda.is_available():
        return "not available on this machine: torch sees no CUDA GPU"
    return None


def gpu_mem_figure(mem: dict, torch_memory: bool) -> float | None:
    """The table's figure: NVML's whole-device delta where NVML works (sees every allocator),
    else torch's allocator peak for the torch engines only (``torch_memory``; for ONNX Runtime
    or TensorRT it would count just the input/output buffers)."""
    if mem.get("nvml_used_delta_mb") is not None:
        return mem["nvml_used_delta_mb"]
    return mem.get("torch_max_allocated_mb") if torch_memory else None


def fresh_dynamo(limit: int = 64) -> None:
    """Before each torch-compile group: drop Dynamo's compiled frames (the on-disk Inductor
    cache stays) and raise the per-function recompile limit. Every group compiles the same
    ``forward`` again (cold, warm, one graph per batch size, per precision); past the default
    limit of 8 Dynamo silently falls back to eager and the rows would time eager code."""
    import torch._dynamo as dynamo
    dynamo.reset()
    for name in ("recompile_limit", "cache_size_limit"):  # renamed in torch 2.6
        if hasattr(dynamo.config, name):
            try:
                setattr(dynamo.config, name, max(int(getattr(dynamo.config, name)), limit))
            except (AttributeError, TypeError, ValueError):
                pass


def load_note(cls: Any) -> str:
    """What a row's cold load includes, from the engine class's capabilities."""
    if cls.compiles:
        from ..engines.torch_compile import enable_compile_cache
        return (f"cold includes Inductor compile (Dynamo reset before each group); warm = new "
                f"instance in the same process, persistent FX-graph cache at "
                f"{enable_compile_cache()}; each batch size compiles once more in its warm-up")
    if cls.fixed_batch_profile:  # TensorRT: native, or ONNX Runtime's EP
        return "cold includes the TensorRT engine build unless the engine cache already held it"
    if cls.accepts_stream:  # ONNX Runtime CUDA
        return "first run includes cuDNN's exhaustive convolution search"
    return ""


# ``--preset seed``: the seed's table for the two generators — PyTorch FP32 eager and ONNX
# Runtime GPU FP32 (plain, as the seed ran them), TensorRT FP32/FP16/INT8 (native TensorRT;
# TensorRT-RTX on RTX cards; elsewhere one "unavailable: why" line each), and fusionrt's own
# engines with the settings ``fusionrt swap`` uses — at batch 1 and 16, plus the end-to-end
# 1080p video rows. About 4-5 minutes on an H200 from a cold cache (torch.compile's default mode:
# ~35 s per batch size for SimSwap, against 100-200 s for max-autotune at +3-6% speed).
SEED_CELLS = SEED_TABLE_CELLS
SWAPPER_CELLS = SWAPPER_TABLE_CELLS
PRESETS: dict[str, dict[str, Any]] = {
    "seed": dict(stages=("swap256", "swap128", "video"), cells=SEED_CELLS, batches=(1, 16),
                 runs=50, warmup=3, max_row_s=3.0, budget_s=None, load_twice=False),
    # today's whole matrix for the device (CUDA_DEFAULTS / CPU_DEFAULTS), resumable
    "full": {},
    # FaceFusion's swappers (issue 18): every runnable swapper at batch 1 and 16 on ORT CUDA
    # FP32 (FaceFusion's path, plain) and fusionrt's engines, then 1080p end to end with
    # hyperswap_1a_256 (FaceFusion 3.8's default) on the GPU path against the loop
    "swappers": dict(stages=SWAPPER_STAGES + ("video",), cells=SWAPPER_CELLS, batches=(1, 16),
                     runs=30, warmup=3, max_row_s=1.5, budget_s=None, load_twice=False,
                     pipeline_swapper="hyperswap_1a_256"),
    # issue 19: 1080p end to end with inswapper_128 + gfpgan_1.4 + occlusion mask on the GPU
    # path (FP16 generators) against the FaceFusion-style loop with the same three models
    "enhance": dict(stages=("video",), batches=(1,), runs=1,
                    warmup=1, budget_s=None, load_twice=False, pipeline_swapper="inswapper_128",
                    pipeline_enhancer="gfpgan_1.4", pipeline_masks=("box", "occlusion"),
                    pipeline_precision="fp16"),
}


def with_defaults(config: BenchConfig, preset: str | None = None, **given: Any) -> BenchConfig:
    """``config`` with the preset's settings, then device-dependent defaults, for every field
    left ``None`` in ``given``."""
    d = dict(CUDA_DEFAULTS if given.get("device", config.device).startswith("cuda")
             else CPU_DEFAULTS)
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"--preset | unknown '{preset}'; expected one of: "
                             f"{', '.join(PRESETS)}")
        d.update(PRESETS[preset], preset=preset)
        given.setdefault("preset", None)
    for k in d:
        given.setdefault(k, None)
    merged = {k: (v if v is not None else d.get(k, getattr(config, k))) for k, v in given.items()}
    if merged.get("cells") is not None and (given.get("engines") or given.get("precisions")):
        keep_e, keep_p = given.get("engines"), given.get("precisions")
        merged["cells"] = tuple(c for c in merged["cells"] if (not keep_e or c[0] in keep_e)
                                and (not keep_p or c[1] in keep_p))
    if merged.get("cells") is not None:  # engines/precisions: the cells' own, for ordering
        merged["engines"] = tuple(dict.fromkeys(e for e, _ in merged["cells"]))
        merged["precisions"] = tuple(dict.fromkeys(p for _, p in merged["cells"]))
    return replace(config, **merged)
