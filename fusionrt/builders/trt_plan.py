"""TensorRT plans for the native TensorRT engine: built from the ONNX graph on an engine-cache
miss (``trt_builder.build_engine``), deserialized, and rebuilt once when TensorRT rejects a
plan the cache verified (e.g. after a driver change). The engine gets the deserialized plan.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..engines.base import EngineConfig
from ..engines.tensorrt import TrtPlan, device_index
from ..errors import EngineError
from ..models.spec import Artifact
from ..runtime.cache import EngineCache, Fingerprint, cache_root
from .trt_builder import TrtBuildConfig, build_engine, make_logger, timing_cache_path

log = logging.getLogger(__name__)


def trt_build_config(artifact: Artifact, config: EngineConfig) -> TrtBuildConfig:
    """The build settings from the engine options (``workspace_gb``,
    ``builder_optimization_level``, ``dims``, ``cache_dir`` for the timing cache)."""
    o = config.options
    cache = Path(o.get("cache_dir") or cache_root())
    return TrtBuildConfig(
        onnx_path=Path(artifact.onnx_path), batch=config.batch,
        workspace_gb=float(o.get("workspace_gb", 4)),
        optimization_level=int(o.get("builder_optimization_level", 3)),
        timing_cache=timing_cache_path(cache), dims=dict(o.get("dims", {})))


def build_trt_plan(cls: type, artifact: Artifact, config: EngineConfig) -> TrtPlan:
    """The deserialized plan for this fingerprint (product "trt-plan")."""
    import tensorrt as trt
    import torch

    spec, path = artifact.spec, artifact.onnx_path
    if path is None or not Path(path).is_file():
        raise EngineError(f"model '{spec.name}' | ONNX file not found: {path}")
    device = torch.device("cuda", device_index(config.device))
    cfg = trt_build_config(artifact, config)
    fp = Fingerprint.for_model(
        Path(path), engine=cls.name, precision=config.precision,
        batch_profile=str(config.batch), builder=cfg.builder_tag(), device_index=device.index)
    cache = EngineCache(Path(config.options["cache_dir"])
                        if config.options.get("cache_dir") else None)
    logger = make_logger(trt)
    logger.errors = []
    runtime = trt.Runtime(logger)
    with torch.cuda.device(device):
        plan, built = cache.get_or_build(fp, lambda: build_engine(cfg, spec))
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None and not built:
            # Verified bytes the runtime still refuses (e.g. a driver change): rebuild once.
            log.warning("engine '%s' | cached plan rejected by TensorRT; rebuilding", cls.name)
            cache.invalidate(fp)
            plan, built = cache.get_or_build(fp, lambda: build_engine(cfg, spec))
            engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError(f"model '{spec.name}' | TensorRT cannot deserialize the "
                              f"engine: {'; '.join(logger.errors) or 'no error given'}")
    return TrtPlan(engine, runtime, logger, built)
