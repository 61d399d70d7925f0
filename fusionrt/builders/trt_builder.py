"""TensorRT engine builder: ONNX file → serialized plan (bytes), for full TensorRT (10 and 11)
and TensorRT for RTX alike (``build_network`` takes the module).

The network is always *strongly typed*: tensor types come from the ONNX graph (FP16 is a
converted graph with Casts, INT8 a Q/DQ graph), so no FP16/INT8 builder flags are set. TensorRT
10.12 deprecated those weakly typed flags, TensorRT 11 removed them, and TensorRT-RTX never had
them (see DESIGN.md and ``engines/_compat.py``).

Full TensorRT cannot be installed on the machines this was developed on, so ``build_engine`` has
not been run against it (its calls are checked against stand-ins with the TensorRT 10 and the
TensorRT 11 API); the same ``build_network`` builds real TensorRT-RTX plans in CI
(``builders/trt_rtx.py``). Everything that does not need TensorRT (shapes, profiles, presets, the
equivalent ``trtexec`` command, parser-error text) is a pure function with unit tests.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..engines._compat import network_flags
from ..engines.base import BatchProfile
from ..engines.tensorrt import TensorrtEngine
from ..errors import EngineError
from ..models.spec import ModelSpec, TensorSpec

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install tensorrt-cu12 (or tensorrt-cu13)"


def timing_cache_path(root: Path | str) -> Path:
    """The native TensorRT engine's timing cache under an engine-cache root: one folder per
    engine, named after it (``<root>/<engine name>/timing.cache``)."""
    return Path(root) / TensorrtEngine.name / "timing.cache"


@dataclass(frozen=True)
class TrtBuildConfig:
    """How to build one engine.

    Attributes:
        onnx_path: the (precision-converted) ONNX graph.
        batch: min/opt/max of the symbolic batch axis (axis 0) of every input.
        workspace_gb: builder workspace memory pool limit.
        optimization_level: TensorRT builder optimization level 0..5 (3 is TensorRT's default;
            higher searches longer for faster tactics).
        timing_cache: file the timing cache is loaded from and saved to (shared across builds:
            layers already timed on this GPU are not timed again).
        dims: values for *other* symbolic axes, e.g. ``{"H": 640, "W": 640}`` for the detector;
            each is fixed at that value in the profile.
        strongly_typed: always True; kept as a field so configs say so explicitly.
    """

    onnx_path: Path
    batch: BatchProfile = BatchProfile()
    workspace_gb: float = 4.0
    optimization_level: int = 3
    timing_cache: Path | None = None
    dims: Mapping[str, int] = field(default_factory=dict)
    strongly_typed: bool = True

    def __post_init__(self) -> None:
        if not self.strongly_typed:
            raise ValueError("strongly_typed | got False; fusionrt builds strongly typed networks "
                             "only (precision lives in the ONNX graph)")
        if not 0 <= self.optimization_level <= 5:
            raise ValueError(f"optimization_level | got {self.optimization_level}; expected 0..5")
        if self.workspace_gb <= 0:
            raise ValueError(f"workspace_gb | got {self.workspace_gb}; expected > 0")

    @property
    def workspace_bytes(self) -> int:
        return int(self.workspace_gb * (1 << 30))

    def builder_tag(self) -> str:
        """The settings that change the plan, for the cache fingerprint."""
        dims = ",".join(f"{k}={v}" for k, v in sorted(self.dims.items()))
        ws = f";ws={self.workspace_gb:g}" if self.workspace_gb != 4.0 else ""  # tactics fit in it
        return f"opt{self.optimization_level}" + (f";{dims}" if dims else "") + ws


def input_shape(t: TensorSpec, n: int, dims: Mapping[str, int] | None = None) -> tuple[int, ...]:
    """Concrete shape of ``t`` at batch ``n``; symbolic axes other than axis 0 come from ``dims``."""
    shape = list(t.with_batch(n))
    for i, d in enumerate(t.shape):
        if i > 0 and isinstance(d, str):
            if not dims or d not in dims:
                raise EngineError(f"input '{t.name}' | axis {i} ('{d}') is dynamic; expected a "
                                  f"value for it in dims, e.g. dims={{'{d}': 640}}")
            shape[i] = int(dims[d])
    return tuple(shape)


def profile_shapes(spec: ModelSpec, batch: BatchProfile, dims: Mapping[str, int] | None = None
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """{input name: (min, opt, max) shape} for the one optimization profile."""
    return {t.name: (input_shape(t, batch.min, dims), input_shape(t, batch.opt, dims),
                     input_shape(t, batch.max, dims)) for t in spec.inputs}


def shapes_arg(spec: ModelSpec, n: int, dims: Mapping[str, int] | None = None) -> str:
    """trtexec shape syntax: ``target:1x3x128x128,source:1x512``."""
    return ",".join(f"{t.name}:{'x'.join(str(d) for d in input_shape(t, n, dims))}"
                    for t in spec.inputs)


def trtexec_command(cfg: TrtBuildConfig, spec: ModelSpec, engine_path: Path) -> str:
    """The ``trtexec`` command that builds the same engine as ``build_engine`` (for users who
    build on another machine, or to compare against NVIDIA's own tool)."""
    b = cfg.batch
    parts = ["trtexec", f"--onnx={shlex.quote(str(cfg.onnx_path))}",
             f"--saveEngine={shlex.quote(str(engine_path))}", "--stronglyTyped",
             f"--minShapes={shapes_arg(spec, b.min, cfg.dims)}",
             f"--optShapes={shapes_arg(spec, b.opt, cfg.dims)}",
             f"--maxShapes={shapes_arg(spec, b.max, cfg.dims)}",
             f"--memPoolSize=workspace:{round(cfg.workspace_gb * 1024)}M"]
    if cfg.timing_cache is not None:
        parts.append(f"--timingCacheFile={shlex.quote(str(cfg.timing_cache))}")
    parts.append(f"--builderOptimizationLevel={cfg.optimization_level}")
    return " ".join(parts)


def format_parser_errors(onnx_path: Path, errors: Iterable[Mapping[str, Any]],
                         product: str = "TensorRT") -> str:
    """One EngineError line from the ONNX parser's errors (node index/name/op + description)."""
    items = []
    for e in errors:
        where = []
        node = e.get("node")
        if isinstance(node, int) and node >= 0:  # -1: error not tied to a node
            where.append(f"node {node}")
        if e.get("name"):
            where.append(f"'{e['name']}'")
        if e.get("op"):
            where.append(f"({e['op']})")
        items.append((" ".join(where) + ": " if where else "") + str(e.get("desc", "?")).strip())
    if not items:
        items = ["parser failed without reporting an error"]
    return (f"model '{onnx_path}' | {product}'s ONNX parser failed: " + "; ".join(items)
            + f"; expected a graph {product} supports (try `polygraphy inspect capability`)")


def _parser_errors(parser) -> list[dict[str, Any]]:
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        # node_name/node_operator exist from TensorRT 10.0 on; guard for older bindings.
        out.append({"node": err.node(), "desc": err.desc(),
                    "name": getattr(err, "node_name", lambda: "")(),
                    "op": getattr(err, "node_operator", lambda: "")()})
    return out


_LOGGERS: dict[str, Any] = {}  # module name -> its logger


def make_logger(trt):
    """The process's ``ILogger`` for this TensorRT module: forwards to Python logging and keeps
    the last errors for messages. One instance per module, because TensorRT keeps the first
    logger it sees for global use and warns when builders and runtimes are given different ones
    (``tensorrt`` and ``tensorrt_rtx`` each have their own ``ILogger`` class)."""
    key = getattr(trt, "__name__", "tensorrt")
    if key not in _LOGGERS:
        _LOGGERS[key] = _make_logger(trt)
    return _LOGGERS[key]


def _make_logger(trt):
    who = getattr(trt, "__name__", "tensorrt")

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            S = trt.ILogger.Severity
            if severity in (S.INTERNAL_ERROR, S.ERROR):
                self.errors = (self.errors + [msg])[-5:]
                log.error("%s: %s", who, msg)
            elif severity == S.WARNING:
                log.warning("%s: %s", who, msg)
            else:
                log.debug("%s: %s", who, msg)

    return _Logger()


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError(f"engine '{TensorrtEngine.name}' | tensorrt Python package not "
                          f"installed: {INSTALL_HINT}") from None
    return trt


def _load_timing_cache(trt, config, path: Path | None):
    data = b""
    if path is not None and Path(path).is_file():
        data = Path(path).read_bytes()
    cache = config.create_timing_cache(data)
    if cache is None and data:  # written by another TensorRT version or corrupt: start empty
        log.warning("timing cache %s unusable; starting an empty one", path)
        cache = config.create_timing_cache(b"")
    # ignore_mismatch=False: a cache from another GPU model would give wrong tactic choices.
    if not config.set_timing_cache(cache, False):
        log.warning("timing cache %s rejected (other device or version); not used", path)
    return cache


def _save_timing_cache(config, path: Path | None) -> None:
    if path is None:
        return
    from .._fs import atomic_write_bytes
    cache = config.get_timing_cache()
    if cache is not None:
        atomic_write_bytes(Path(path), bytes(memoryview(cache.serialize())))


def build_engine(cfg: TrtBuildConfig, spec: ModelSpec) -> bytes:
    """Full TensorRT: parse ``cfg.onnx_path``, build a strongly typed engine with one batch
    profile, return it.

    Raises:
        EngineError: TensorRT missing, the parser failed (all its errors in one line), the graph
            does not match ``spec``'s inputs, or the build failed (TensorRT's last errors).
    """
    return build_network(_import_trt(), cfg, spec).plan


@dataclass(frozen=True)
class BuiltPlan:
    """A serialized plan and what its build measured."""

    plan: bytes
    seconds: float
    layers: int


def build_network(trt, cfg: TrtBuildConfig, spec: ModelSpec, *,
                  compute_capabilities: Iterable[str] = (), product: str = "TensorRT"
                  ) -> BuiltPlan:
    """Parse, configure and build with the TensorRT module ``trt`` (``tensorrt`` or
    ``tensorrt_rtx``). ``compute_capabilities``: ``ComputeCapability`` member names to build
    for (TensorRT-RTX, e.g. ``("SM89",)``); empty: the module's default target."""
    onnx_path = Path(cfg.onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"model '{spec.name}' | ONNX file not found: {onnx_path}")
    shapes = profile_shapes(spec, cfg.batch, cfg.dims)  # fail on a bad spec before the slow part
    logger = make_logger(trt)
    logger.errors = []  # the logger is shared: report only this build's errors
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external-data weights relative to the file (large models).
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineError(format_parser_errors(onnx_path, _parser_errors(parser), product))

    graph_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(graph_inputs) != sorted(shapes):
        raise EngineError(f"model '{spec.name}' | graph has inputs {sorted(graph_inputs)}; "
                          f"contract expects {sorted(shapes)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_bytes)
    config.builder_optimization_level = cfg.optimization_level
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    targets = list(compute_capabilities)
    if targets:
        config.num_compute_capabilities = len(targets)
        for i, name in enumerate(targets):
            if not config.set_compute_capability(getattr(trt.ComputeCapability, name), i):
                raise EngineError(f"model '{spec.name}' | {product} refused target {name}")
    if cfg.timing_cache is not None:  # TensorRT-RTX has no timing cache (it compiles at run time)
        _load_timing_cache(trt, config, cfg.timing_cache)

    log.info("building %s engine for %s (batch %s, opt level %d%s); this can take minutes",
             product, spec.name, cfg.batch, cfg.optimization_level,
             f", for {','.join(targets)}" if targets else "")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        last = "; ".join(logger.errors) or "no error reported"
        raise EngineError(f"model '{spec.name}' | {product} build failed: {last}")
    _save_timing_cache(config, cfg.timing_cache)
    return BuiltPlan(bytes(memoryview(plan)), time.perf_counter() - t0, int(network.num_layers))
