"""Which engine runs each stage of the GPU path, with which options.

On CUDA a stage left on a CPU engine (``ort-cpu`` is the CLI default) or on ``auto`` runs on
the first usable engine of ``GPU_DEFAULTS``: the torch engine (CUDA graph, channels-last) for
the detector (a native module loaded from its ONNX) and for models with torch weights; ORT
CUDA with IOBinding on our compute stream for ONNX-only models (ArcFace, released swappers: the
torch engine would need onnx2torch). Named GPU engines (``ort-cuda``, ``ort-trt``, ``trt``,
``torch``, ``torch-compile``) are used as given.

Why torch for the detector: inside the threaded video loop ORT's detector measured 6–22 ms per
frame against 0.2 ms alone on the H100 (each ORT run gives up the GIL and waits on the stream);
one CUDA-graph replay on the compute stream does not.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Mapping

from ...engines.base import Artifact, Engine, EngineConfig
from ...engines.registry import get_engine
from ...errors import ModelError
from ...models.store import ModelStore
from ..pipeline import NEURAL_SWAPPERS, SYNTHETIC_BANNER

log = logging.getLogger(__name__)

GPU_DEFAULTS = {"detect": ("torch", "ort-cuda"), "embed": ("ort-cuda", "torch"),
                "swap": ("torch", "ort-cuda")}
GRAPH_STAGES = ("detect", "swap")  # static shapes every batch; embed runs rarely, ragged


def swapper_name(name: str, store: ModelStore) -> str:
    """``auto`` → the first neural swapper with real weights; ``classic`` is CPU-only."""
    if name == "auto":
        name = next((n for n in NEURAL_SWAPPERS if store.installed(n) == "real"), None)
        if name is None:
            raise ModelError("swapper 'auto' | no neural swapper with real weights; the GPU path "
                             "runs neural swappers only: fusionrt models pull inswapper_128 "
                             "(or --device cpu for the classic swapper)")
    if name not in NEURAL_SWAPPERS:
        raise ModelError(f"swapper '{name}' | not available on the GPU path; expected one of: "
                         f"{', '.join(NEURAL_SWAPPERS)} (classic runs with --device cpu)")
    return name


def usable(name: str, artifact: Artifact) -> bool:
    """Can ``name`` run this artifact here without extra packages?"""
    if name == "torch":
        from ...engines.torch_eager import NATIVE_FROM_ONNX
        return artifact.weights_path is not None or artifact.spec.arch in NATIVE_FROM_ONNX
    return get_engine(name).available()[0]


def engine_name(stage: str, asked: str, artifact: Artifact, cuda: bool) -> str:
    if cuda and asked in ("ort-cpu", "auto"):
        choices = GPU_DEFAULTS[stage]
        name = next((n for n in choices if usable(n, artifact)), choices[-1])
        log.info("stage %s | engine '%s' asked for on CUDA: using '%s'", stage, asked, name)
        return name
    return "ort-cpu" if asked == "auto" else asked


def max_batch(engine: Engine) -> int | None:
    """The batch an ONNX graph is fixed to (the released inswapper_128 takes only 1)."""
    session = getattr(engine, "session", None)
    if session is None:
        return None
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def with_anchor_count(artifact: Artifact, det_size: int) -> Artifact:
    """The detector's artifact with its outputs' anchor axis ("A") made concrete for
    ``det_size``: ORT CUDA's IOBinding path sizes its output buffers from the contract, and
    ``TensorSpec.with_batch`` would otherwise put the batch size on that axis too."""
    from ..host.detect import priors
    a = len(priors(det_size))
    outs = tuple(replace(t, shape=tuple(a if d == "A" else d for d in t.shape))
                 for t in artifact.spec.outputs)
    return replace(artifact, spec=replace(artifact.spec, outputs=outs))


def load_engine(store: ModelStore, model: str, stage: str, config: Any, dev: Any, compute: Any,
                spec_map: Mapping[str, str]) -> tuple[Engine, str, bool]:
    """Load ``model`` for ``stage`` → (engine, one-line description, synthetic?)."""
    artifact = store.resolve(model, allow_synthetic=config.allow_synthetic and stage != "detect")
    if artifact.synthetic:
        log.warning(SYNTHETIC_BANNER.format(name=model))
    if stage == "detect":
        artifact = with_anchor_count(artifact, config.det_size)
    name = engine_name(stage, spec_map.get(stage, "ort-cpu"), artifact, dev.cuda)
    cls = get_engine(name)
    options: dict = {}
    precision = "fp32"
    if name in ("torch", "torch-compile"):
        options["tf32"] = config.precision == "tf32"
        if stage == "swap" and config.precision in ("fp16", "bf16"):
            precision = config.precision
        if dev.cuda:
            options.update(channels_last=True,
                           cuda_graph=bool(config.cuda_graphs) and stage in GRAPH_STAGES)
    elif dev.cuda and name.startswith("ort-"):
        options["stream"] = compute.cuda_stream  # ORT's kernels go on our compute stream
    device = config.device if any(config.device.startswith(d) for d in cls.devices) \
        else cls.devices[0]
    engine = cls(artifact, EngineConfig(device=device, precision=precision,
                                        options=options)).load()
    kind = "SYNTHETIC" if artifact.synthetic else "real"
    what = (f"{model} ({kind} weights) on {name} [{device}] {precision}"
            + (" +tf32" if options.get("tf32") else "")
            + (" +cuda-graph" if options.get("cuda_graph") else ""))
    return engine, what, artifact.synthetic
