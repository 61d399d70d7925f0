"""TensorRT-RTX plans: built on any machine, GPU or not, for named RTX architectures, stored in
the engine cache under a *portable* key with a manifest; and the product "trt-rtx-plan", which
looks a plan up by the same key on the GPU it runs on (so a prebuilt plan loads without a build).

The key (``plan_fingerprint``) holds what makes the plan: the ONNX bytes' sha256, precision,
batch profile, builder settings, the target compute capability and the TensorRT-RTX version —
not the build machine's GPU or its torch/ONNX Runtime versions, which do not change a
TensorRT-RTX plan. One plan per architecture: a GPU looks up its own compute capability.

Measured here (CPU-only, no driver): building works for every named target; naming
``ComputeCapability.CURRENT`` fails without a GPU ("CUDA driver version is insufficient"), and
deserializing needs a supported GPU, so nothing is loaded or run on this machine.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from .._fs import atomic_write_bytes, sha256_file
from ..engines import tensorrt_rtx as rtx
from ..engines.base import BatchProfile, EngineConfig
from ..engines.tensorrt import RuntimeCacheSlot, TrtPlan, device_index
from ..errors import EngineError
from ..models.spec import Artifact, ModelSpec
from ..runtime.cache import EngineCache, Fingerprint
from ..runtime.machine import library_version
from .trt_builder import BuiltPlan, TrtBuildConfig, build_network
from .trt_plan import engine_cache, open_plan, trt_build_config

log = logging.getLogger(__name__)

PRODUCT = "TensorRT-RTX"
#: fusionrt's arch names → (``tensorrt_rtx.ComputeCapability`` member, compute capability).
ARCHS: dict[str, tuple[str, str]] = {
    "sm75": ("SM75", "7.5"), "sm80": ("SM80", "8.0"), "sm86": ("SM86", "8.6"),
    "sm89": ("SM89", "8.9"), "sm120": ("SM120", "12.0"), "sm121": ("SM121", "12.1"),
}
MANIFEST_FORMAT = 1


def parse_archs(text: str) -> tuple[str, ...]:
    """``"sm86,sm89,sm120"`` → ``("sm86", "sm89", "sm120")``; an unknown name lists the known."""
    out = []
    for a in (p.strip().lower() for p in text.split(",")):
        if a not in ARCHS:
            raise EngineError(f"arch '{a}' | not a {PRODUCT} target (it builds for RTX-class GPUs, "
                              f"not Hopper sm90 or datacenter Blackwell sm100); expected a "
                              f"comma-separated list of: {', '.join(ARCHS)}")
        if a not in out:
            out.append(a)
    if not out:
        raise EngineError(f"arch '{text}' | empty; expected e.g. sm86,sm89,sm120")
    return tuple(out)


def arch_for_cc(cc: str) -> str | None:
    return next((a for a, (_, c) in ARCHS.items() if c == cc), None)


def buildable_archs(trt: Any) -> list[str]:
    """The arch names this ``tensorrt_rtx`` module can build for (its ``ComputeCapability``)."""
    members = set(dir(getattr(trt, "ComputeCapability", object)))
    return [a for a, (member, _) in ARCHS.items() if member in members]


def rtx_module():
    try:
        import tensorrt_rtx
    except ImportError:
        raise EngineError(f"engine '{rtx.TensorrtRtxEngine.name}' | tensorrt_rtx Python package "
                          f"not installed: {rtx.INSTALL_HINT}") from None
    return tensorrt_rtx


def plan_fingerprint(onnx_path: Path, engine: str, precision: str, batch: BatchProfile,
                     builder: str, cc: str, version: str) -> Fingerprint:
    """The portable key of one plan: equal on the build machine and on the GPU that runs it."""
    return Fingerprint(onnx_sha256=sha256_file(Path(onnx_path)), precision=precision,
                       batch_profile=str(batch), engine=engine, builder=builder,
                       compute_capability=cc, tensorrt=version)


def build_rtx(trt: Any, cfg: TrtBuildConfig, spec: ModelSpec, arch: str) -> BuiltPlan:
    """One strongly typed plan for ``arch`` (no GPU needed)."""
    return build_network(trt, cfg, spec, compute_capabilities=[ARCHS[arch][0]], product=PRODUCT)


@dataclass(frozen=True)
class PlanRecord:
    """One plan of a build: what the manifest lists and ``fusionrt build`` prints."""

    arch: str
    compute_capability: str
    file: str
    plan_sha256: str
    plan_bytes: int
    build_s: float | None  # None: taken from the cache
    layers: int | None


def build_plans(spec: ModelSpec, onnx_path: Path, precision: str, archs: Iterable[str], *,
                batch: BatchProfile = BatchProfile(), dims: dict | None = None,
                workspace_gb: float = 4.0, cache: EngineCache | None = None,
                engine: str = rtx.TensorrtRtxEngine.name) -> tuple[list[PlanRecord], Path]:
    """Build (or find) one plan per arch into the engine cache and write the manifest.

    Returns:
        (records in arch order, manifest path).

    Raises:
        EngineError: TensorRT-RTX missing, INT8 asked for, the parser failed (naming the ONNX
            node), or the build failed.
    """
    if (why := rtx.TensorrtRtxEngine.precision_refusal(precision)):
        raise EngineError(f"engine '{engine}' | {why}")
    trt = rtx_module()
    cache = cache or EngineCache()
    cfg = TrtBuildConfig(Path(onnx_path), batch=batch, dims=dict(dims or {}),
                         workspace_gb=workspace_gb)
    version = str(trt.__version__)
    records = []
    for arch in archs:
        cc = ARCHS[arch][1]
        fp = plan_fingerprint(onnx_path, engine, precision, batch, cfg.builder_tag(), cc, version)
        data, built = cache.read(fp), None
        if data is None:
            built = build_rtx(trt, cfg, spec, arch)
            data = built.plan
            path = cache.put(fp, data)
        else:
            path = cache.path_for(fp)
        records.append(PlanRecord(arch, cc, path.name, hashlib.sha256(data).hexdigest(), len(data),
                                  round(built.seconds, 3) if built else None,
                                  built.layers if built else None))
    manifest = write_manifest(cache, engine, spec.name, onnx_path, precision, batch,
                              cfg.builder_tag(), version, records)
    return records, manifest


def manifest_path(cache: EngineCache, engine: str, model: str, precision: str) -> Path:
    return cache.root / engine / f"{model}.{precision}.manifest.json"


def write_manifest(cache: EngineCache, engine: str, model: str, onnx_path: Path, precision: str,
                   batch: BatchProfile, builder: str, version: str,
                   records: list[PlanRecord]) -> Path:
    """``<cache>/<engine>/<model>.<precision>.manifest.json``: the plans of one ONNX graph, one
    per arch. Plans of other archs already listed for the same graph and version are kept."""
    path = manifest_path(cache, engine, model, precision)
    sha = sha256_file(Path(onnx_path))
    keep: dict[str, dict] = {}
    try:
        old = json.loads(path.read_text())
        if (old.get("model_sha256"), old.get("tensorrt_rtx"), old.get("batch_profile"),
                old.get("builder")) == (sha, version, str(batch), builder):
            keep = {p["arch"]: p for p in old.get("plans", [])
                    if (cache.root / engine / p["file"]).is_file()}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable: written anew
    for r in records:
        old_entry = keep.get(r.arch, {})
        entry = asdict(r)
        if r.build_s is None and old_entry.get("plan_sha256") == r.plan_sha256:
            entry.update(build_s=old_entry.get("build_s"), layers=old_entry.get("layers"))
        keep[r.arch] = entry  # a cached plan keeps the figures of the build that made it
    doc = {"format": MANIFEST_FORMAT, "engine": engine, "model": model, "model_sha256": sha,
           "onnx": str(onnx_path), "precision": precision, "batch_profile": str(batch),
           "builder": builder, "tensorrt_rtx": version, "fusionrt": library_version("fusionrt"),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "plans": [keep[a] for a in ARCHS if a in keep]}
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())
    return path


def build_trt_rtx_plan(cls: type, artifact: Artifact, config: EngineConfig) -> TrtPlan:
    """The deserialized plan for this GPU (product "trt-rtx-plan"): the prebuilt one from the
    engine cache when ``fusionrt build --arch`` made it for this GPU's arch, else built here.

    The GPU is checked first: an unsupported one (Hopper, CC 9.0) is refused by name with the
    supported list before anything is built.
    """
    if (why := cls.precision_refusal(config.precision)):
        raise EngineError(f"engine '{cls.name}' | {why}")
    spec, path = artifact.spec, artifact.onnx_path
    index = device_index(config.device, cls.name)
    gpu, cc = rtx.gpu_facts(index)
    if cc is None:
        raise EngineError(f"engine '{cls.name}' | no CUDA GPU {index} visible; expected an "
                          f"RTX GPU (compute capability {rtx.supported_list()})")
    if (why := rtx.cc_reason(cc, gpu, index)):
        raise EngineError(f"engine '{cls.name}' | {why}")
    if path is None or not Path(path).is_file():
        raise EngineError(f"model '{spec.name}' | ONNX file not found: {path}")
    trt = cls.trt()
    cfg = trt_build_config(artifact, config, timing_cache=False)
    version = str(trt.__version__)
    fp = plan_fingerprint(Path(path), cls.name, config.precision, config.batch,
                          cfg.builder_tag(), cc, version)
    arch = arch_for_cc(cc)
    # A GPU newer than the named targets: build for the device itself (needs the GPU, which
    # is here); a named arch builds exactly what `fusionrt build --arch` would.
    build = (lambda: build_rtx(trt, cfg, spec, arch).plan) if arch else \
        (lambda: build_network(trt, cfg, spec, compute_capabilities=["CURRENT"],
                               product=PRODUCT).plan)
    cache = engine_cache(config)
    slot = RuntimeCacheSlot(cache.root, Fingerprint.for_model(
        Path(path), engine=cls.name, precision=config.precision, batch_profile=str(config.batch),
        builder=f"{cfg.builder_tag()};runtime-cache;rtx={version}", device_index=index))
    return open_plan(trt, cls.name, spec.name, cache, fp, build, index, runtime_cache=slot,
                     info={"arch": arch or cc, "compute_capability": cc, "gpu": gpu})
