"""torch.compile (Inductor) engine with a persistent compile cache, and an ahead-of-time mode.

- JIT (default): ``torch.compile``; Inductor's FX-graph and autotuning caches live under the
  fusionrt cache, so a second process skips kernel compilation — but still re-traces with
  Dynamo (measured on the H100: 33.4 s cold, 19.9 s warm for the SimSwap generator).
- AOT (``options={"aot": True}``): ``torch.export`` + AOTInductor package (``.pt2``) built
  once into the fingerprinted engine cache; later loads deserialize compiled code and skip
  tracing altogether. H100, SimSwap FP16 bs16: built in 75-99 s; a new process loads it in
  1.0 s (first output 1.7 s) once torch's compiler stack is imported, 9 s from a bare start.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

from ..errors import EngineError
from .torch_eager import TorchEngine, import_torch

log = logging.getLogger(__name__)


def enable_compile_cache() -> str:
    """Point Inductor's on-disk caches at ``$FUSIONRT_HOME/engines/inductor`` (idempotent)."""
    from ..runtime.cache import cache_root
    path = str(cache_root() / "inductor")
    os.makedirs(path, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", path)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def load_package(path: Path, device_type: str):
    """``aoti_load_package``, minus its CPU vector-ISA probe for GPU packages.

    Before loading any package AOTInductor records the host's CPU ISA, which it finds by
    compiling and loading probe programs with the C++ compiler: ~36 s of a 39-42 s load in a
    fresh process on the H100 host (``aot_load*.prof.txt`` in the H100 r2 results). For a CUDA
    package the fingerprint already pins GPU, compute capability and library versions, and the
    ISA comparison would only warn, so the probe is skipped there. CPU packages keep it.
    """
    torch = import_torch()
    if device_type != "cuda":
        return torch._inductor.aoti_load_package(str(path))
    from torch._inductor import codecache
    with _PATCH_LOCK:
        real = codecache.get_device_information
        codecache.get_device_information = lambda device: {}
        try:
            return torch._inductor.aoti_load_package(str(path))
        finally:
            codecache.get_device_information = real


_PATCH_LOCK = threading.Lock()  # the patch is process-wide: one load at a time


class TorchCompileEngine(TorchEngine):
    """Options: ``mode`` ("default" | "reduce-overhead" | "max-autotune" |
    "max-autotune-no-cudagraphs"), ``inductor`` (dict of Inductor settings added to the mode's,
    e.g. ``{"freezing": True}``: weights become constants, so BatchNorm folds into the conv and
    weight layouts are converted once), ``aot`` (bool: AOTInductor package from the engine
    cache), ``rewrite`` (default "auto": the measured exact layer rewrites for the batch size,
    see ``AUTO_SMALL_BATCH``), plus the torch engine's options."""

    name = "torch-compile"

    # Option rewrite="auto" (the default) on CUDA, chosen by measurement: SimSwap-256 FP16 on an
    # H100, benchmarks/results/2026-11-26-h100-r3 (generator_steps.md, steps 10/21/25 at bs1
    # and bs16; rewrite_bs4_bs8.md: the two sets level at bs4, the large one 4% ahead at bs8,
    # hence the switch at 8). Small batches are
    # launch-bound: fewer kernels (one style GEMM, padded hand-over, one-pass norms reduced in
    # one kernel each) took bs1 from 0.97 to 0.78 ms. Large batches are bandwidth/compute-bound:
    # the GEMM head and stem and the folded upsampling took bs16 from 2609 to 3310 FPS, but cost
    # bs1 time (their border and patch kernels). Only archs measured get them automatically;
    # the option applies them to any model (exact everywhere; patterns a model lacks are left).
    AUTO_ARCHS = ("simswap256",)
    AUTO_SMALL_BATCH = ("head", "style", "respad", "norm")
    AUTO_LARGE_BATCH = ("head", "style", "respad", "stem", "upconv")
    AUTO_LARGE_FROM = 8

    def auto_rewrite(self) -> tuple[str, ...]:
        if self.device.type != "cuda" or self.spec.arch not in self.AUTO_ARCHS:
            return ()  # measured on CUDA only (CPU Inductor is another code generator)
        return (self.AUTO_LARGE_BATCH if self.config.batch.opt >= self.AUTO_LARGE_FROM
                else self.AUTO_SMALL_BATCH)

    def inductor_options(self) -> dict:
        """The ``inductor`` option, plus, under the automatic rewrite with one-pass norms,
        ``split_reductions=False``: at bs1 each split norm was 2 kernels more (72 for 18)."""
        extra = dict(self.config.options.get("inductor") or {})
        if self.rewrite_option() == "auto" and getattr(self, "rewritten", {}).get("norm"):
            extra.setdefault("split_reductions", False)
        return extra

    def _load(self) -> None:
        if not self.config.options.get("aot"):
            return super()._load()
        enable_compile_cache()
        self._setup()
        self.module = self._aot()  # the eager module is built only on a cache miss
        self._graphs = {}

    def _wrap(self, module):
        enable_compile_cache()
        torch = import_torch()
        mode = self.config.options.get("mode", "default")
        extra = self.inductor_options()
        # dynamic=False: one specialised graph per batch size, the fastest kernels for serving
        # with fixed batch buckets.
        if not extra:
            return torch.compile(module, mode=mode, dynamic=False, fullgraph=False)
        from torch._inductor import list_mode_options
        options = {**list_mode_options(mode), **dict(extra)}
        return torch.compile(module, options=options, dynamic=False, fullgraph=False)

    # -- ahead of time ----------------------------------------------------------
    def aot_fingerprint(self):
        from ..runtime.cache import Fingerprint
        src = self.artifact.weights_path or self.artifact.onnx_path
        if src is None:
            raise EngineError(f"model '{self.spec.name}' | nothing to fingerprint for AOT build")
        o = self.config.options
        builder = (f"aoti;device={self.device.type};channels_last={bool(o.get('channels_last'))};"
                   f"align={self.align_channels()};rewrite={','.join(self.rewrite_parts())};"
                   f"src={Path(src).name}")
        index = (self.device.index or 0) if self.device.type == "cuda" else 0
        return Fingerprint.for_model(Path(src), self.name, self.config.precision,
                                     str(self.config.batch), builder=builder, device_index=index)

    def _aot(self):
        """Load the AOTInductor package for this fingerprint, building it on a cache miss.
        ``aot_timing`` records where the time went (seconds per phase)."""
        import time

        from ..runtime.cache import EngineCache
        t = time.perf_counter()
        timing = self.aot_timing = {}

        def lap(name: str) -> None:
            nonlocal t
            now = time.perf_counter()
            timing[name] = round(now - t, 3)
            t = now

        fp = self.aot_fingerprint()
        lap("fingerprint")
        cache = EngineCache(self.config.options.get("cache_dir"))
        data = cache.read(fp)
        lap("cache_read")
        self.aot_built = data is None
        with tempfile.TemporaryDirectory(prefix="fusionrt-aoti-") as tmp:
            path = Path(tmp) / "model.pt2"
            if data is None:
                log.info("torch-compile | AOT build of '%s' (batch %s): once per fingerprint",
                         self.spec.name, self.config.batch)
                self._export_package(self._build_module(), path)
                cache.put(fp, path)
                lap("build")
            else:
                path.write_bytes(data)
                lap("unpack")
            try:
                runner = load_package(path, self.device.type)
            except Exception as e:  # a package from another build of torch/inductor
                cache.invalidate(fp)
                raise EngineError(f"model '{self.spec.name}' | AOT package failed to load "
                                  f"({e}); the cache entry was removed, load again to rebuild") \
                    from None
            lap("aoti_load")
            return runner

    def _export_package(self, module, path: Path) -> None:
        import numpy as np
        torch = import_torch()
        from ..pipeline.hybrid import sample_feeds
        prof = self.config.batch
        feeds = sample_feeds(self.artifact, batch=max(prof.opt, 2))
        args = tuple(self._to_tensor(feeds[t.name]) for t in self.inputs)
        dims = {}
        if prof.max > prof.min:
            n = torch.export.Dim("N", min=prof.min, max=prof.max)
            dims = {"dynamic_shapes": tuple({0: n} if isinstance(t.shape[0], str) else None
                                            for t in self.inputs)}
        else:
            feeds = sample_feeds(self.artifact, batch=prof.opt)
            args = tuple(self._to_tensor(np.ascontiguousarray(feeds[t.name]))
                         for t in self.inputs)
        try:
            with torch.inference_mode(False), torch.no_grad():
                ep = torch.export.export(module, args, **dims)
            torch._inductor.aoti_compile_and_package(ep, package_path=str(path))
        except Exception as e:
            raise EngineError(f"model '{self.spec.name}' | AOT export/compile failed: "
                              f"{type(e).__name__}: {str(e)[:300]}") from None
