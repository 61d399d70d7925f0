"""torch.compile (Inductor) engine with a persistent compile cache, and an ahead-of-time mode.

- JIT (default): ``torch.compile``; Inductor's FX-graph and autotuning caches live under the
  fusionrt cache, so a second process skips kernel compilation — but still re-traces with
  Dynamo (measured on the H100: 33.4 s cold, 19.9 s warm for the SimSwap generator).
- AOT (``options={"aot": True}``): ``torch.export`` + AOTInductor package (``.pt2``) built
  once into the fingerprinted engine cache by ``fusionrt.builders.aot`` (``open_engine`` runs
  it); this engine loads the package (``package=``), so later loads deserialize compiled code
  and skip tracing altogether. H100, SimSwap FP16 bs16: built in 75-99 s; a new process loads
  it in 1.0 s (first output 1.7 s) once torch's compiler stack is imported, 9 s from a bare
  start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import EngineError
from ..models.spec import Artifact
from .base import EngineConfig
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


@dataclass
class AotPackage:
    """An AOTInductor package ready to load (made by ``fusionrt.builders.aot``).

    Attributes:
        path: the ``.pt2`` file, in a temporary folder (``folder``) removed after the load.
        built: True when this open compiled it (a cache miss), False when it came from the cache.
        timing: seconds per phase so far (fingerprint, cache_read, build or unpack).
        discard: removes the package's cache entry (the package failed to load).
    """

    path: Path
    built: bool
    timing: dict[str, float] = field(default_factory=dict)
    discard: Callable[[], None] = lambda: None
    folder: Any = None  # tempfile.TemporaryDirectory holding ``path``


class TorchCompileEngine(TorchEngine):
    """Options: ``mode`` ("default" | "reduce-overhead" | "max-autotune" |
    "max-autotune-no-cudagraphs"), ``inductor`` (dict of Inductor settings added to the mode's,
    e.g. ``{"freezing": True}``: weights become constants, so BatchNorm folds into the conv and
    weight layouts are converted once), ``aot`` (bool: AOTInductor package from the engine
    cache), ``rewrite`` (default "auto": the measured exact layer rewrites for the batch size,
    see ``AUTO_SMALL_BATCH``), plus the torch engine's options."""

    name = "torch-compile"
    compiles = True
    capturable = False  # its modes capture graphs of their own

    def __init__(self, artifact: Artifact, config: EngineConfig | None = None, *,
                 module: Any = None, package: AotPackage | None = None):
        super().__init__(artifact, config, module=module)
        self._package = package

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

    @classmethod
    def auto_rewrite(cls, artifact: Artifact, config: EngineConfig) -> tuple[str, ...]:
        if config.device.split(":")[0] != "cuda" or artifact.spec.arch not in cls.AUTO_ARCHS:
            return ()  # measured on CUDA only (CPU Inductor is another code generator)
        return (cls.AUTO_LARGE_BATCH if config.batch.opt >= cls.AUTO_LARGE_FROM
                else cls.AUTO_SMALL_BATCH)

    @classmethod
    def needs(cls, artifact: Artifact, config: EngineConfig) -> str | None:
        """``"aot-package"`` with option ``aot``, else what the torch engine needs."""
        if config.options.get("aot"):
            return "aot-package"
        return super().needs(artifact, config)

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
        if self._package is None:
            raise self._needs_builder("an AOTInductor package (option aot)")
        enable_compile_cache()
        self.setup()
        self.module = self._load_package(self._package)
        self._graphs = {}

    def _load_package(self, package: AotPackage):
        """The package's runner; ``aot_timing`` records where the time went (seconds per
        phase), ``aot_built`` whether this open compiled it."""
        self.aot_built = package.built
        timing = self.aot_timing = dict(package.timing)
        t = time.perf_counter()
        try:
            runner = load_package(package.path, self.device.type)
        except Exception as e:  # a package from another build of torch/inductor
            package.discard()
            raise EngineError(f"model '{self.spec.name}' | AOT package failed to load "
                              f"({e}); the cache entry was removed, load again to rebuild") \
                from None
        finally:
            if package.folder is not None:
                package.folder.cleanup()
        timing["aoti_load"] = round(time.perf_counter() - t, 3)
        return runner

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
