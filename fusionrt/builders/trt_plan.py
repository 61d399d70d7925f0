"""TensorRT plans for the TensorRT engines: built from the ONNX graph on an engine-cache miss
(``trt_builder.build_network``), deserialized, and rebuilt once when the runtime rejects a plan
the cache verified (e.g. after a driver change). The engine gets the deserialized plan.

``build_trt_plan`` is the product "trt-plan" (full TensorRT); ``trt_rtx.build_trt_rtx_plan``
("trt-rtx-plan") shares ``open_plan`` with it.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable

from ..engines.base import EngineConfig
from ..engines import trt_base
from ..engines.tensorrt import TrtPlan, device_index
from ..errors import EngineError
from ..models.spec import Artifact
from ..runtime.cache import EngineCache, Fingerprint, cache_root
from .trt_builder import TrtBuildConfig, build_engine, make_logger, timing_cache_path
from .trt_presets import get_preset

log = logging.getLogger(__name__)


def trt_build_config(artifact: Artifact, config: EngineConfig, *,
                     timing_cache: bool = True) -> TrtBuildConfig:
    """The build settings from the engine options (``profile``, ``workspace_gb``,
    ``builder_optimization_level``, ``dims``, ``cache_dir`` for the timing cache)."""
    o = config.options
    cache = Path(o.get("cache_dir") or cache_root())
    preset = get_preset(o.get("profile") or "default")
    if preset.batch is not None and config.batch != preset.batch:
        raise EngineError(f"build profile '{preset.name}' | got batch profile {config.batch}; "
                          f"expected {preset.batch} ({preset.note})")
    return TrtBuildConfig(
        onnx_path=Path(artifact.onnx_path), batch=config.batch,
        workspace_gb=float(o.get("workspace_gb", preset.workspace_gb)),
        optimization_level=int(o.get("builder_optimization_level", 3)),
        timing_cache=timing_cache_path(cache) if timing_cache else None,
        dims=dict(o.get("dims", {})))


def engine_cache(config: EngineConfig) -> EngineCache:
    return EngineCache(Path(config.options["cache_dir"]) if config.options.get("cache_dir")
                       else None)


def open_plan(trt: Any, name: str, spec_name: str, cache: EngineCache, fp: Fingerprint,
              build: Callable[[], bytes], index: int, **extra: Any) -> TrtPlan:
    """The cached plan for ``fp`` (or ``build()`` stored), deserialized on CUDA device ``index``
    by a ``trt.Runtime``; a verified plan the runtime still refuses is rebuilt once."""
    logger = make_logger(trt)
    logger.errors = []
    runtime = trt.Runtime(logger)
    with trt_base.cuda_device(index) if index >= 0 else contextlib.nullcontext():
        plan, built = cache.get_or_build(fp, build)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None and not built:
            # Verified bytes the runtime still refuses (e.g. a driver change): rebuild once.
            log.warning("engine '%s' | cached plan rejected by %s; rebuilding", name,
                        getattr(trt, "__name__", "TensorRT"))
            cache.invalidate(fp)
            plan, built = cache.get_or_build(fp, build)
            engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError(f"model '{spec_name}' | {getattr(trt, '__name__', 'TensorRT')} "
                              f"cannot deserialize the engine: "
                              f"{'; '.join(logger.errors) or 'no error given'}")
    return TrtPlan(engine, runtime, logger, built, **extra)


def build_trt_plan(cls: type, artifact: Artifact, config: EngineConfig) -> TrtPlan:
    """The deserialized plan for this fingerprint (product "trt-plan")."""
    trt = cls.trt()
    spec, path = artifact.spec, artifact.onnx_path
    if path is None or not Path(path).is_file():
        raise EngineError(f"model '{spec.name}' | ONNX file not found: {path}")
    index = device_index(config.device, cls.name)
    cfg = trt_build_config(artifact, config)
    fp = Fingerprint.for_model(
        Path(path), engine=cls.name, precision=config.precision,
        batch_profile=str(config.batch), builder=cfg.builder_tag(), device_index=index)
    return open_plan(trt, cls.name, spec.name, engine_cache(config), fp,
                     lambda: build_engine(cfg, spec), index)
