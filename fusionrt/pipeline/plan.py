"""The stage plan: which model, engine, device and options run each stage, and why.

``plan_stages(settings, store, device)`` is the one place that turns the user's flags into a
plan; every front end (``fusionrt swap`` on images and video, serve, Triton's pipeline model,
Ray workers, bench) calls it and then ``FaceSwapper(plan)``. So each flag has one meaning:

- ``--swapper auto``: the first neural swapper whose swapper *and* embedder weights are real,
  else ``classic`` (host kernels only: on the device kernels that is an error, never a silent
  switch).
- ``--engine``: one engine for every stage, a per-stage map ``detect=torch,swap=ort-cuda``,
  ``default`` (the first usable engine of ``DEFAULT_ENGINES`` for the device) or ``auto``
  (measured on this machine, parity-gated against the FP32 reference, cached: ``measure.py``).
- ``--device``: where every stage runs. An engine that cannot run there is an error naming the
  ones that can; ``cuda`` on a machine without a CUDA GPU is an error on every path.
- kernels: ``host`` (numpy/OpenCV pre/post-processing) or ``device`` (torch tensors; frames
  stay on the GPU); ``auto`` = device kernels on CUDA, host kernels on the CPU.

Engine options come from the engines' declared capabilities (``cuda_graphs``,
``channels_last``, ``tf32``, ``precisions``, ``accepts_stream``), never from their names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..engines.base import BatchProfile, EngineConfig
from ..engines.registry import REFERENCE_ENGINE, engine_names, get_engine
from ..errors import EngineError, InputError, ModelError
from ..models.spec import Artifact
from ..models.store import ModelStore
from ..models.zoo import ZOO
from .measure import choose_measured
from .settings import NEURAL_SWAPPERS, PipelineConfig

log = logging.getLogger(__name__)

# "convert": the swapper's identity converter (FaceFusion's crossface_*), when its spec names
# one (``extra["converter"]``); it runs once per source identity. "landmark": 68 points after
# detection (``settings.landmarker``, FaceFusion's 2dfan4), when one is set. After the swap, as
# FaceFusion runs them: "occlude" (xseg, --mask occlusion) and "parse" (bisenet, --mask region)
# make masks for the paste; "enhance" (gfpgan_1.4, codeformer, …) runs on the pasted frame.
STAGES = ("detect", "landmark", "embed", "convert", "swap", "occlude", "parse", "enhance")
ENHANCE_BATCH = 8  # enhancer crops per call on the device kernels (padded for its CUDA graph)
MASK_BATCH = 32    # occluder / face parser crops per call on the device kernels (likewise)
DETECTOR = "retinaface_mnet025"
EMBEDDER = "arcface_w600k_r50"
ENGINE_CHOICES = ("default", "auto")  # besides the registered engine names

# REFERENCE_ENGINE (from engines.registry): the FP32 reference every measured engine is
# parity-checked against.
# The seed table's speed baselines (bench speedup columns), each at FP32: PyTorch eager and
# ONNX Runtime CUDA.
BASELINE_ENGINES = ("torch", "ort-cuda")
# How FaceFusion runs every model: one ONNX Runtime CUDA session each, frame by frame (the
# bench's "FaceFusion-style loop" and the video benchmarks' baseline).
FACEFUSION_ENGINE = "ort-cuda"
# ``fusionrt bench --preset seed``: the seed table's cells (engine, precision) — its PyTorch and
# ONNX Runtime FP32 baselines, TensorRT FP32/FP16/INT8 (native; TensorRT-RTX on RTX cards), then
# fusionrt's own engines as ``fusionrt swap`` runs them.
SEED_TABLE_CELLS = (("torch", "fp32"), ("ort-cuda", "fp32"), ("trt", "fp32"), ("trt", "fp16"),
                    ("trt", "int8"), ("trt-rtx", "fp32"), ("trt-rtx", "fp16"),
                    ("ort-cuda", "fp16"), ("torch", "fp16"), ("torch-compile", "fp16"))
# ``fusionrt bench --preset swappers``: every FaceFusion swapper on FaceFusion's engine (ORT CUDA
# FP32, plain) and fusionrt's FP16 engines.
SWAPPER_TABLE_CELLS = (("ort-cuda", "fp32"), ("ort-cuda", "fp16"), ("torch", "fp16"),
                       ("torch-compile", "fp16"))
# --engine default, per device kind: the first engine that can load the stage's artifact.
# CUDA: the torch engine (CUDA graph, channels-last) for the detector (a native module loaded
# from its ONNX) and for models with torch weights; ORT CUDA with IOBinding on the compute
# stream for ONNX-only models. Why torch for the detector: inside the threaded video loop ORT's
# detector measured 6-22 ms per frame against 0.2 ms alone on the H100 (each ORT run gives up
# the GIL and waits on the stream); one CUDA-graph replay on the compute stream does not.
DEFAULT_ENGINES: dict[str, Mapping[str, tuple[str, ...]]] = {
    "cpu": {"detect": ("ort-cpu",), "embed": ("ort-cpu",), "convert": ("ort-cpu",),
            "swap": ("ort-cpu",), "landmark": ("ort-cpu",), "occlude": ("ort-cpu",),
            "parse": ("ort-cpu",), "enhance": ("ort-cpu",)},
    "cuda": {"detect": ("torch", "ort-cuda"), "embed": ("ort-cuda", "torch"),
             "convert": ("ort-cuda", "torch"), "swap": ("torch", "ort-cuda"),
             "landmark": ("ort-cuda", "torch"), "occlude": ("torch", "ort-cuda"),
             "parse": ("torch", "ort-cuda"), "enhance": ("torch", "ort-cuda")},
}
# static shapes every batch (the generator and enhancer pad to their batch); embed runs rarely,
# the masks' and landmarker's batches follow the number of faces
GRAPH_STAGES = ("detect", "swap", "enhance", "occlude", "parse")
PRECISION_STAGES = ("swap", "enhance", "occlude", "parse")  # --precision fp16/bf16 applies here


def synthetic_banner(name: str) -> str:
    """The warning logged when a stage runs random weights: a frame of ``!`` as wide as its
    longest line (a long model name widens it rather than overrunning it)."""
    lines = (f"SYNTHETIC WEIGHTS: '{name}' has random weights.",
             "Its output is garbage, made only for tests and speed work.",
             f"For real swaps: fusionrt models pull {name}")
    inner = max(map(len, lines))
    bar = "!" * (inner + 6)
    return "\n".join(["", bar, *(f"!! {line:<{inner}} !!" for line in lines), bar])


@dataclass(frozen=True)
class StagePlan:
    """One stage: the model file, the engine and device it runs on, its options, and why."""

    stage: str
    model: str
    artifact: Artifact
    engine: str
    device: str
    precision: str
    options: Mapping[str, Any]
    reason: str
    accepts_stream: bool = False  # the kernels hand it their CUDA stream when they open it
    batch: BatchProfile = BatchProfile()  # opt = the items per call this stage runs

    @property
    def synthetic(self) -> bool:
        return self.artifact.synthetic

    def engine_config(self, **extra: Any) -> EngineConfig:
        return EngineConfig(device=self.device, precision=self.precision, batch=self.batch,
                            options={**self.options, **extra})

    def describe(self) -> str:
        kind = "SYNTHETIC" if self.synthetic else "real"
        flags = (" +tf32" if self.options.get("tf32") else "") + \
                (" +cuda-graph" if self.options.get("cuda_graph") else "")
        return (f"{self.model} ({kind} weights) on {self.engine} [{self.device}] "
                f"{self.precision}{flags}: {self.reason}")


@dataclass(frozen=True)
class Plan:
    """What ``FaceSwapper`` runs: the settings, the kernel set, and one ``StagePlan`` per model
    stage (no ``swap`` stage for the classic swapper, no ``embed`` when nothing needs one)."""

    settings: PipelineConfig
    device: str
    kernels: str
    swapper: str
    stages: Mapping[str, StagePlan] = field(default_factory=dict)
    frame_graph: bool = False  # batch-1 frames as one CUDA graph (``device/frame_graph.py``)
    frame_graph_why: str = ""  # why it is on, or why it was asked for and is off

    @property
    def synthetic(self) -> bool:
        return any(s.synthetic for s in self.stages.values())

    def explain(self) -> dict[str, str]:
        """Stage → what runs it and why (``--explain``, ``/readyz``)."""
        out = {name: s.describe() for name, s in self.stages.items()}
        if self.swapper == "classic":
            out["swap"] = "classic (landmark transplant, no model) on cpu"
        c = self.settings
        out["paste"] = (f"numpy/OpenCV on cpu" if self.kernels == "host" else
                        f"torch on {self.device}") + (
            " + colour transfer" if c.color_transfer else "") + (" + Poisson" if c.poisson else "")
        box = ("fusionrt's feathered box" if c.mask_blur is None and not any(c.mask_padding)
               else f"FaceFusion's box (blur {c.mask_blur if c.mask_blur is not None else 0.3}, "
                    f"padding {list(c.mask_padding)})")
        out["paste"] += f"; masks {'+'.join(c.masks)} ({box})" if c.masks != ("box",) or \
            not box.startswith("fusionrt") else ""
        if c.pixel_boost and "swap" in self.stages:
            size = self.stages["swap"].artifact.spec.preprocess.size[0]
            out["swap"] += (f"; pixel boost {c.pixel_boost}: {(c.pixel_boost // size) ** 2} "
                            "tiles per face in one generator batch")
        if c.frame_graph:
            out["frame_graph"] = ("on: " if self.frame_graph else "off: ") + self.frame_graph_why
        return out


def parse_engine_spec(text: str) -> dict[str, str]:
    """``"ort-cpu"`` → every stage; ``"detect=ort-cuda,swap=trt"`` → those stages (others
    ``default``); ``"auto"``/``"default"`` → every stage. Unknown stages/engines raise."""
    text = text.strip()
    if "=" not in text:
        if text not in ENGINE_CHOICES:
            get_engine(text)  # raises with the valid names
        return {s: text for s in STAGES}
    out = {s: "default" for s in STAGES}
    for part in text.split(","):
        stage, _, name = part.partition("=")
        stage, name = stage.strip(), name.strip()
        if stage not in STAGES:
            raise EngineError(f"--engine '{text}' | unknown stage '{stage}'; "
                              f"expected {', '.join(STAGES)}")
        if name not in ENGINE_CHOICES:
            get_engine(name)
        out[stage] = name
    return out


def engine_help() -> str:
    return (f"one of {', '.join(engine_names())}; a per-stage map 'detect=torch,swap=ort-cuda'; "
            "'default' (the usual engine per device, the default); or 'auto' (measured once "
            "per machine, parity-checked, fastest kept)")


# -- device ---------------------------------------------------------------------------------

def device_kind(device: str) -> str:
    """``cpu`` or ``cuda``; anything else is refused."""
    if device == "cpu":
        return "cpu"
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        return "cuda"
    raise InputError(f"device '{device}' | unknown; expected cpu, cuda or cuda:N")


def check_device(device: str) -> str:
    """The device kind, after making sure a CUDA device exists when one is asked for."""
    kind = device_kind(device)
    if kind == "cuda":
        index = int(device.split(":")[1]) if ":" in device else 0
        count, how = _cuda_devices()
        if index >= count:
            raise EngineError(f"device '{device}' | no such CUDA GPU here ({how}); "
                              "use --device cpu")
    return kind


def _cuda_devices() -> tuple[int, str]:
    """(CUDA GPUs visible, how that was found)."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return n, f"torch sees {n} CUDA GPU(s)"
    try:
        import onnxruntime as ort
        has = "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:  # noqa: BLE001 - no ORT or a broken one: no CUDA through it either
        has = False
    # without torch, ORT's CUDA provider is the only witness; it cannot count devices
    return (1 if has else 0), ("onnxruntime has a CUDA provider" if has else
                               "neither torch nor onnxruntime sees a CUDA GPU")


def _usable(name: str, artifact: Artifact) -> tuple[bool, str]:
    try:
        cls = get_engine(name)
    except EngineError as e:
        return False, str(e)
    ok, why = cls.available()
    return cls.can_load(artifact) if ok else (ok, why)


# -- models ---------------------------------------------------------------------------------

def _real(store: ModelStore, name: str) -> bool:
    try:
        return store.installed(name) == "real"
    except ModelError:
        return False


def swapper_name(settings: PipelineConfig, store: ModelStore, kernels: str) -> str:
    """``auto`` → the first neural swapper with real swapper and embedder weights, else classic;
    classic runs on the host kernels only."""
    name = settings.swapper
    if name == "auto":
        name = next((n for n in NEURAL_SWAPPERS if _real(store, n)
                     and _real(store, ZOO[n].extra.get("embedder", EMBEDDER))
                     and all(_real(store, c) for c in _converter(n))), "classic")
        if name == "classic" and kernels == "device":
            raise ModelError("swapper 'auto' | no neural swapper with real weights; the GPU path "
                             "runs neural swappers only: fusionrt models pull inswapper_128 "
                             "(or --device cpu for the classic swapper)")
        log.info("swapper 'auto' | chose '%s'", name)
    if name == "classic" and kernels == "device":
        raise ModelError(f"swapper 'classic' | not available on the GPU path; expected one of: "
                         f"{', '.join(NEURAL_SWAPPERS)} (classic runs with --device cpu)")
    return name


def _converter(swapper: str) -> tuple[str, ...]:
    """The identity converter ``swapper``'s spec names (none, or one)."""
    name = ZOO[swapper].extra.get("converter")
    return (name,) if name else ()


def with_anchor_count(artifact: Artifact, det_size: int) -> Artifact:
    """The detector's artifact with its outputs' anchor axes ("A"; "A8"/"A16"/"A32" for
    FaceFusion's per-stride outputs) made concrete for ``det_size`` by its decoder: ORT CUDA's
    IOBinding path sizes its output buffers from the contract, and ``TensorSpec.with_batch``
    would otherwise put the batch size on that axis too. ``InputError`` for a size the
    detector cannot take (yoloface_8n: 640 only)."""
    from .host.decoders import decoder_for
    dims = decoder_for(artifact.spec).dims(artifact.spec, det_size)
    outs = tuple(replace(t, shape=tuple(dims.get(d, d) if isinstance(d, str) else d
                                        for d in t.shape))
                 for t in artifact.spec.outputs)
    return replace(artifact, spec=replace(artifact.spec, outputs=outs))


# -- the plan -------------------------------------------------------------------------------

def plan_stages(settings: PipelineConfig | None = None, store: ModelStore | None = None,
                device: str | None = None) -> Plan:
    """The plan for ``settings`` on ``device`` (default ``settings.device``).

    Raises:
        InputError / ModelError / EngineError: a one-line reason for any setting, model or
        engine that cannot run here (nothing is loaded before the whole plan holds).
    """
    s = settings or PipelineConfig()
    s.check()
    store = store or ModelStore()
    device = device or s.device
    kind = check_device(device)
    kernels = s.kernels if s.kernels != "auto" else ("device" if kind == "cuda" else "host")
    if kernels == "device" and s.poisson:
        raise InputError("--poisson | runs on the CPU path only (host kernels); drop it or use "
                         "--device cpu")
    asked = parse_engine_spec(s.engine)
    swapper = swapper_name(s, store, kernels)

    models: dict[str, str] = {"detect": s.detector}
    if s.landmarker != "none":
        models["landmark"] = s.landmarker
    if swapper != "classic":
        models["swap"] = swapper
        models.update({"convert": c for c in _converter(swapper)})
    if swapper != "classic" or s.select == "reference":
        models["embed"] = ZOO[swapper].extra.get("embedder", EMBEDDER) \
            if swapper != "classic" else EMBEDDER
    if "occlusion" in s.masks:
        models["occlude"] = s.occluder
    if "region" in s.masks:
        models["parse"] = s.face_parser
    if s.enhancer != "none":
        models["enhance"] = s.enhancer
    if swapper == "classic" and (set(s.masks) - {"box"} or s.pixel_boost):
        raise InputError("--mask occlusion/region/area and --pixel-boost | need a neural swapper "
                         "(the classic swapper has no aligned crop); drop them or pick one: "
                         f"{', '.join(NEURAL_SWAPPERS)}")
    if s.pixel_boost and swapper != "classic":
        size = ZOO[swapper].preprocess.size[0]
        if s.pixel_boost % size or s.pixel_boost < size:
            raise InputError(f"--pixel-boost | got {s.pixel_boost}; expected a multiple of "
                             f"{swapper}'s size {size} (e.g. {size * 2}, {size * 4})")
    # a built-in detector never runs synthetic; FaceFusion's may, with --allow-synthetic
    artifacts = {st: store.resolve(m, allow_synthetic=s.allow_synthetic
                                   and not (st == "detect" and ZOO[m].builtin))
                 for st, m in models.items()}
    artifacts["detect"] = with_anchor_count(artifacts["detect"], s.det_size)
    for st, art in artifacts.items():
        if art.synthetic:
            log.warning(synthetic_banner(models[st]))

    choices: dict[str, tuple[str, str]] = {}
    for st in artifacts:
        if asked[st] == "default":
            choices[st] = _default_engine(st, artifacts[st], kind)
        elif asked[st] != "auto":
            choices[st] = (asked[st], "asked for on the command line")
    auto = [st for st in artifacts if asked[st] == "auto"]
    if auto:
        candidates = [n for n in engine_names() if _measurable(n, kind)]
        choices.update(choose_measured({st: artifacts[st] for st in auto}, candidates,
                                       REFERENCE_ENGINE, device))
    graph, graph_why = frame_graph_plan(s, kind, kernels, {st: c[0] for st, c in choices.items()})
    if s.frame_graph and not graph:
        log.warning("frame graph | off: %s", graph_why)
    stages = {st: _stage(st, models[st], artifacts[st], *choices[st], device, s,
                         stage_batch(st, kernels, s), outer_graph=graph)
              for st in STAGES if st in artifacts}
    return Plan(s, device, kernels, swapper, stages, graph, graph_why)


# The stages the one-graph frame holds (``device/frame_graph.py``); a plan with any other
# stage runs stage by stage.
FRAME_GRAPH_STAGES = ("detect", "embed", "convert", "swap")


def frame_graph_plan(s: PipelineConfig, kind: str, kernels: str, engines: Mapping[str, str]
                     ) -> tuple[bool, str]:
    """(one CUDA graph per frame, why / why not) for ``s.frame_graph``: batch-1 frames on the
    device kernels, the largest face, detection on every frame, and detector and generator
    engines that can run inside a captured graph (``Engine.capturable``)."""
    if not s.frame_graph:
        return False, ""
    why = []
    if kind != "cuda" or kernels != "device":
        why.append("needs the device kernels on CUDA")
    if not s.cuda_graphs:
        why.append("CUDA graphs are off")
    if s.select != "largest":
        why.append(f"selection '{s.select}' (the graph picks the largest face)")
    if s.detect_every != 1:
        why.append("--detect-every > 1 (tracking runs on the host)")
    if s.pixel_boost:
        why.append("--pixel-boost (tiles)")
    if s.detector != DETECTOR or tuple(s.detector_angles) != (0,):
        why.append(f"detector '{s.detector}' at angles {tuple(s.detector_angles)} (the graph "
                   f"decodes {DETECTOR} at angle 0 only)")
    for st in ("detect", "swap"):
        if st in engines and not get_engine(engines[st]).capturable:
            can = [n for n in engine_names() if get_engine(n).capturable]
            why.append(f"{st} engine '{engines[st]}' cannot run inside a graph "
                       f"({', '.join(can)} can)")
    extra = [st for st in engines if st not in FRAME_GRAPH_STAGES]
    if extra:
        why.append(f"stage(s) {', '.join(extra)} are not in the frame graph")
    if why:
        return False, "; ".join(why)
    return True, "detect, align, swap and paste of a frame as one CUDA graph (batch 1)"


def _measurable(name: str, kind: str) -> bool:
    """Engines ``auto`` times on this device kind: available, able to run there, and on the CPU
    none that compiles (torch.compile costs minutes there, more than a short job saves)."""
    cls = get_engine(name)
    if not cls.available()[0] or not cls.runs_on("cuda" if kind == "cuda" else "cpu"):
        return False
    return kind == "cuda" or not cls.compiles


def _default_engine(stage: str, artifact: Artifact, kind: str) -> tuple[str, str]:
    order = DEFAULT_ENGINES[kind][stage]
    refused = []
    for name in order:
        ok, why = _usable(name, artifact)
        if ok:
            return name, f"default for {kind}" + (f" ({'; '.join(refused)})" if refused else "")
        refused.append(f"{name}: {(why.splitlines() or ['not usable'])[0][:100]}")
    raise EngineError(f"stage '{stage}' | no default engine for {kind} can run "
                      f"'{artifact.spec.name}': {'; '.join(refused)}")


def stage_engine_config(cls: Any, stage: str, device: str, s: PipelineConfig, batch: int = 1,
                        precision: str | None = None, outer_graph: bool = False
                        ) -> EngineConfig:
    """The engine settings a stage runs with for ``batch`` items per call: the one place they
    are chosen, from the engine's declared capabilities. ``plan_stages`` uses it for every
    path and ``fusionrt bench`` for every row, so the bench times what ``fusionrt swap`` runs.

    On CUDA: a CUDA graph for the static-shape stages (detector, generator) on engines that can
    capture one (measured on the H200: SimSwap-256 ORT CUDA FP16 bs1 5.7 → 2.5 ms, torch eager
    launch-bound without it), channels-last for the torch engines; the batch profile's ``opt``
    is the batch the stage runs (torch-compile picks its layer rewrites by it, TensorRT its
    kernels). ``precision`` (bench rows) overrides the settings' precision rule.
    ``outer_graph``: the stage runs inside the frame graph, so it captures no graph of its own.
    """
    cuda = device_kind(device) == "cuda"
    options: dict[str, Any] = {}
    if s.threads:
        options["threads"] = s.threads
    if stage == "detect":  # the letterboxed square: fixes H and W for TensorRT profiles
        options["dims"] = {"H": s.det_size, "W": s.det_size}
    if cls.tf32:
        options["tf32"] = s.precision == "tf32"
    if cuda and cls.channels_last:
        options["channels_last"] = True
    if cuda and cls.cuda_graphs:
        options["cuda_graph"] = bool(s.cuda_graphs) and stage in GRAPH_STAGES and not outer_graph
    if precision is None:
        precision = s.precision if stage in PRECISION_STAGES and s.precision in ("fp16", "bf16") \
            and s.precision in cls.precisions else "fp32"
    return EngineConfig(device=device, precision=precision,
                        batch=BatchProfile(1, batch, batch), options=options)


def stage_batch(stage: str, kernels: str, s: PipelineConfig) -> int:
    """Items per engine call: the device kernels batch generator crops (``gen_batch``, padded
    to few shapes for the CUDA graphs: ``device.batching``), enhancer crops (``ENHANCE_BATCH``)
    and mask crops (``MASK_BATCH``), none above ``gen_batch`` (live runs 1: a lone face is
    not padded to 8); everything else runs one frame or one face at a time."""
    if kernels != "device":
        return 1
    return {"swap": s.gen_batch, "enhance": min(ENHANCE_BATCH, s.gen_batch),
            "occlude": min(MASK_BATCH, s.gen_batch),
            "parse": min(MASK_BATCH, s.gen_batch)}.get(stage, 1)


def _stage(stage: str, model: str, artifact: Artifact, engine: str, reason: str, device: str,
           s: PipelineConfig, batch: int = 1, outer_graph: bool = False) -> StagePlan:
    cls = get_engine(engine)
    if not cls.runs_on(device):
        can = [n for n in engine_names() if get_engine(n).runs_on(device)]
        raise EngineError(f"engine '{engine}' | runs on {', '.join(cls.devices)}; --device "
                          f"{device} needs one of: {', '.join(can)} (or --engine default)")
    config = stage_engine_config(cls, stage, device, s, batch, outer_graph=outer_graph)
    return StagePlan(stage, model, artifact, engine, device, config.precision, config.options,
                     reason, accepts_stream=bool(device_kind(device) == "cuda"
                                                 and cls.accepts_stream), batch=config.batch)
