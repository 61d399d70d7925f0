"""AOTInductor packages for the torch-compile engine (option ``aot``): ``torch.export`` +
``aoti_compile_and_package`` of the built torch module, once per fingerprint, into the engine
cache. A later open reads the package from the cache; the engine only loads it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from ..engines.base import EngineConfig
from ..engines.torch_compile import AotPackage, enable_compile_cache
from ..engines.torch_eager import align_option, import_torch
from ..errors import EngineError
from ..models.spec import Artifact, sample_feeds
from ..runtime.cache import EngineCache, Fingerprint
from .torch_module import build_torch_module, rewrite_parts

log = logging.getLogger(__name__)


def aot_fingerprint(cls: type, artifact: Artifact, config: EngineConfig) -> Fingerprint:
    """What the package is valid for: source file, device, layout, padding, rewrites."""
    torch = import_torch()
    device = torch.device(config.device)
    src = artifact.weights_path or artifact.onnx_path
    if src is None:
        raise EngineError(f"model '{artifact.spec.name}' | nothing to fingerprint for AOT build")
    o = config.options
    builder = (f"aoti;device={device.type};channels_last={bool(o.get('channels_last'))};"
               f"align={align_option(config)};rewrite={','.join(rewrite_parts(cls, artifact, config))};"
               f"src={Path(src).name}")
    index = (device.index or 0) if device.type == "cuda" else 0
    return Fingerprint.for_model(Path(src), cls.name, config.precision, str(config.batch),
                                 builder=builder, device_index=index)


def build_aot_package(cls: type, artifact: Artifact, config: EngineConfig) -> AotPackage:
    """The package for this fingerprint from the engine cache, built on a miss (product
    "aot-package"). ``timing`` holds the seconds per phase."""
    enable_compile_cache()
    t = time.perf_counter()
    timing: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timing[name] = round(now - t, 3)
        t = now

    fp = aot_fingerprint(cls, artifact, config)
    lap("fingerprint")
    cache = EngineCache(config.options.get("cache_dir"))
    data = cache.read(fp)
    lap("cache_read")
    folder = tempfile.TemporaryDirectory(prefix="fusionrt-aoti-")
    path = Path(folder.name) / "model.pt2"
    try:
        if data is None:
            log.info("%s | AOT build of '%s' (batch %s): once per fingerprint",
                     cls.name, artifact.spec.name, config.batch)
            engine = cls(artifact, config)  # not loaded: its device and layout place the module
            engine.setup()
            export_package(engine, engine.place(build_torch_module(cls, artifact, config).module),
                           path)
            cache.put(fp, path)
            lap("build")
        else:
            path.write_bytes(data)
            lap("unpack")
    except BaseException:
        folder.cleanup()
        raise
    return AotPackage(path, data is None, timing, lambda: cache.invalidate(fp), folder)


def export_package(engine, module, path: Path) -> None:
    """``torch.export`` ``module`` on seeded inputs placed as ``engine`` places them, compile it
    with AOTInductor into ``path``; the batch axis is dynamic over the profile's range."""
    torch = import_torch()
    artifact, prof = engine.artifact, engine.config.batch
    feeds = sample_feeds(artifact, batch=max(prof.opt, 2))
    args = tuple(engine.to_tensor(feeds[t.name]) for t in engine.inputs)
    dims = {}
    if prof.max > prof.min:
        n = torch.export.Dim("N", min=prof.min, max=prof.max)
        dims = {"dynamic_shapes": tuple({0: n} if isinstance(t.shape[0], str) else None
                                        for t in engine.inputs)}
    else:
        feeds = sample_feeds(artifact, batch=prof.opt)
        args = tuple(engine.to_tensor(np.ascontiguousarray(feeds[t.name]))
                     for t in engine.inputs)
    try:
        with torch.inference_mode(False), torch.no_grad():
            ep = torch.export.export(module, args, **dims)
        torch._inductor.aoti_compile_and_package(ep, package_path=str(path))
    except Exception as e:
        raise EngineError(f"model '{artifact.spec.name}' | AOT export/compile failed: "
                          f"{type(e).__name__}: {str(e)[:300]}") from None
