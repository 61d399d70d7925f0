"""Orchestration: which model and engine run each stage, and the per-frame loop.

detect → (embed) → select → swap → paste, on one frame at a time. Every stage's wall time is
accumulated so the CLI can say where the milliseconds went (``--explain``).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..engines.base import Engine, EngineConfig, EngineOwner
from ..engines.registry import get_engine
from ..errors import InputError, ModelError, NoFaceError
from ..models.store import ModelStore
from ..models.zoo import ZOO
from .host.classic import ClassicSwapper
from .host.detect import Detector
from .host.embed import Embedder
from .hybrid import Choice, choose_engines, parse_engine_spec
from .host.paste import paste_back
from .select import MODES, select_faces
from .host.swap import NeuralSwapper, SourceIdentity, Swapper

log = logging.getLogger(__name__)

DETECTOR = "retinaface_mnet025"
EMBEDDER = "arcface_w600k_r50"
# "auto" tries these in order (best quality first) and takes the first with real weights.
NEURAL_SWAPPERS = tuple(n for n, s in ZOO.items() if s.task == "swap")
SWAPPER_CHOICES = ("auto", "classic") + NEURAL_SWAPPERS

SYNTHETIC_BANNER = (
    "\n" + "!" * 78 + "\n"
    "!! SYNTHETIC WEIGHTS: '{name}' has random weights. Its output is garbage, made only for\n"
    "!! tests and speed work. For real swaps: fusionrt models pull {name}\n" + "!" * 78)


@dataclass
class SwapSettings:
    """The settings the per-frame pipeline and the GPU path share (same names, same meaning)."""

    swapper: str = "auto"
    engine: str = "ort-cpu"  # one engine, "detect=ort-cuda,swap=trt", or "auto" (measured)
    device: str = "cpu"      # where GPU engines run ("cuda", "cuda:1")
    select: str = "largest"
    similarity_threshold: float = 0.4
    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    det_size: int = 640
    feather: float = 0.1
    color_transfer: bool = False
    allow_synthetic: bool = False


@dataclass
class PipelineConfig(SwapSettings):
    """What runs where. ``swapper="auto"``: the first neural swapper with real weights
    installed, else ``"classic"``; synthetic weights only when named and ``allow_synthetic``."""

    threads: int | None = None  # CPU threads per engine (Ray workers share a machine)
    poisson: bool = False


class FaceSwapPipeline(EngineOwner):
    """Build the stages for ``config`` and swap faces frame by frame."""

    def __init__(self, config: PipelineConfig | None = None, store: ModelStore | None = None):
        self.config = c = config or PipelineConfig()
        self.store = store or ModelStore()
        if c.select not in MODES:
            raise InputError(f"selection '{c.select}' | unknown; expected one of: {', '.join(MODES)}")
        if c.swapper not in SWAPPER_CHOICES:
            raise ModelError(f"swapper '{c.swapper}' | unknown; expected one of: "
                             f"{', '.join(SWAPPER_CHOICES)}")
        self.engine_spec = parse_engine_spec(c.engine)
        self.choices: dict[str, Choice] = {}
        self._engines: list[Engine] = []
        self._stages: dict[str, str] = {}
        self.ms: dict[str, float] = defaultdict(float)
        self.frames = 0
        self.synthetic = False

        det_engine = self._engine(DETECTOR, allow_synthetic=False)
        self.detector = Detector(det_engine, c.score_threshold, c.nms_threshold, c.det_size)
        self.swapper: Swapper = self._make_swapper(c.swapper)
        self.embedder: Embedder | None = None
        if self.swapper.needs_embedding or c.select == "reference":
            swap_spec = getattr(self.swapper, "spec", None)  # neural swappers name their embedder
            name = swap_spec.extra.get("embedder", EMBEDDER) if swap_spec else EMBEDDER
            self.embedder = Embedder(self._engine(name, c.allow_synthetic, "embed"))
        self.source: SourceIdentity | None = None
        self.reference: np.ndarray | None = None
        self._stages["paste"] = "numpy/OpenCV on cpu" + (
            " + colour transfer" if c.color_transfer else "") + (" + Poisson" if c.poisson else "")

    # -- construction ----------------------------------------------------------
    def _engine(self, name: str, allow_synthetic: bool, stage: str = "detect") -> Engine:
        artifact = self.store.resolve(name, allow_synthetic=allow_synthetic)
        if artifact.synthetic:
            self.synthetic = True
            log.warning(SYNTHETIC_BANNER.format(name=name))
        choice = choose_engines(self.engine_spec, {stage: artifact}, self.config.device)[stage]
        self.choices[stage] = choice
        cls = get_engine(choice.engine)
        device = self.config.device if self.config.device in cls.devices or any(
            self.config.device.startswith(d) for d in cls.devices) else cls.devices[0]
        opts: dict = {"threads": self.config.threads} if self.config.threads else {}
        if stage == "detect":  # the letterboxed square: fixes H and W for TensorRT profiles
            opts["dims"] = {"H": self.config.det_size, "W": self.config.det_size}
        engine = cls(artifact, EngineConfig(device=device, options=opts)).load()
        self._engines.append(engine)
        kind = "SYNTHETIC" if artifact.synthetic else "real"
        self._stages[stage] = f"{name} ({kind} weights) on {cls.name} [{device}]: {choice.reason}"
        return engine

    def _make_swapper(self, name: str) -> Swapper:
        if name == "auto":
            name = next((n for n in NEURAL_SWAPPERS if self._real(n)
                         and self._real(ZOO[n].extra.get("embedder", EMBEDDER))), "classic")
            log.info("swapper 'auto' | chose '%s'", name)
        if name == "classic":
            self._stages["swap"] = "classic (landmark transplant, no model) on cpu"
            return ClassicSwapper()
        return NeuralSwapper(self._engine(name, self.config.allow_synthetic, "swap"))

    def _real(self, name: str) -> bool:
        try:
            return self.store.installed(name) == "real"
        except ModelError:
            return False

    @property
    def swapper_name(self) -> str:
        return self.swapper.name

    # -- sources ---------------------------------------------------------------
    @contextmanager
    def _timed(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[stage] += (time.perf_counter() - t0) * 1000.0

    def _identity(self, image: np.ndarray, path: str | None, role: str) -> SourceIdentity:
        faces = self.detector.detect(image)
        if not faces:
            raise NoFaceError(f"no face in the {role} image '{path or '<array>'}'")
        face = max(faces, key=lambda f: f.area)
        if self.embedder is not None:
            face = self.embedder.embed(image, [face])[0]
        return SourceIdentity(face, image, path)

    def set_source(self, image: np.ndarray, path: str | None = None) -> SourceIdentity:
        """Use the largest face of ``image`` as the identity to swap in.

        Raises:
            NoFaceError: ``no face in the source image 'path'``.
        """
        self.source = self._identity(image, path, "source")
        return self.source

    def set_reference(self, image: np.ndarray, path: str | None = None) -> np.ndarray:
        """Selection ``reference``: swap only faces that look like the largest face here."""
        if self.embedder is None:
            raise ModelError("selection 'reference' | needs an embedder; "
                             "set PipelineConfig(select='reference')")
        self.reference = self._identity(image, path, "reference").embedding
        return self.reference

    # -- frames ----------------------------------------------------------------
    def process_frame(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, int]:
        """Swap the selected faces of one BGR frame; returns (new frame, faces swapped)."""
        if self.source is None:
            raise InputError("pipeline | no source identity; call set_source first")
        c = self.config
        self.frames += 1
        with self._timed("detect"):
            faces = self.detector.detect(frame_bgr)
        if c.select == "reference" and faces:
            with self._timed("embed"):
                faces = self.embedder.embed(frame_bgr, faces)
        faces = select_faces(faces, c.select, self.reference, c.similarity_threshold)
        out = frame_bgr
        for face in faces:
            with self._timed("swap"):
                res = self.swapper.swap(out, face, self.source)
            with self._timed("paste"):
                out = paste_back(out, res.crop, res.matrix, mask=res.mask, feather=c.feather,
                                 color_transfer=c.color_transfer, poisson=c.poisson)
        return (out if faces else frame_bgr.copy()), len(faces)

    # -- reporting -------------------------------------------------------------
    def describe(self) -> dict[str, str]:
        """Stage → what ran it ("arcface_w600k_r50 (real weights) on ort-cpu")."""
        return dict(self._stages)

    def stage_ms(self) -> dict[str, float]:
        """Stage → mean milliseconds per processed frame."""
        n = max(self.frames, 1)
        return {k: v / n for k, v in self.ms.items()}
