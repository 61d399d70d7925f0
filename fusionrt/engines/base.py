"""The engine interface: load a built artifact once, run feeds through it, close it.

Public methods validate and delegate; subclasses implement ``_load``, ``_run`` and ``_close``
(the Polygraphy runner pattern). Feeds are numpy arrays on the CPU path and device tensors
(torch) on the GPU path; validation reads only ``.shape`` and ``.dtype`` so both pass.

Engines only *load* (a file, or a ready module) and run. Whatever has to be *made* first (a
TensorRT plan, an AOTInductor package, a rewritten or FP16-cast torch module) is made by
``fusionrt.builders``: an engine class says which product it needs for a config (``needs``)
and takes it as a constructor keyword; ``fusionrt.builders.open.open_engine`` runs the builder
and returns the loaded engine. Code outside ``engines/`` reads the capability attributes
below, never an engine's name.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ..errors import EngineError
from ..models.spec import ModelSpec, TensorSpec

if TYPE_CHECKING:  # annotations only: Artifact lives in fusionrt.models.spec
    from ..models.spec import Artifact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchProfile:
    """Optimization profile for the batch axis (TensorRT min/opt/max)."""

    min: int = 1
    opt: int = 1
    max: int = 1

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        """``"8"`` → 8:8:8, ``"1:8:32"`` → min 1, opt 8, max 32."""
        try:
            parts = [int(p) for p in text.split(":")]
        except ValueError:
            raise ValueError(f"batch profile '{text}' | expected N or MIN:OPT:MAX") from None
        if len(parts) == 1:
            parts = parts * 3
        if len(parts) != 3:
            raise ValueError(f"batch profile '{text}' | expected N or MIN:OPT:MAX")
        if not (1 <= parts[0] <= parts[1] <= parts[2]):
            raise ValueError(f"batch profile '{text}' | expected 1 <= MIN <= OPT <= MAX")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class EngineConfig:
    """Settings common to every engine; engine-specific knobs go in ``options``."""

    device: str = "cpu"
    precision: str = "fp32"
    batch: BatchProfile = BatchProfile()
    options: Mapping[str, Any] = field(default_factory=dict)


def _dtype_name(dtype: Any) -> str:
    """numpy dtype or torch dtype → numpy-style name ('float32')."""
    s = str(dtype)
    return s.split(".", 1)[1] if s.startswith("torch.") else s


class Engine(ABC):
    """Base of every engine. Use as a context manager or call ``load``/``close``."""

    name: ClassVar[str] = "?"
    #: Device kinds it runs on ("cpu", "cuda"); "cuda" covers "cuda:N".
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: ``config.precision`` values the engine applies itself to an FP32 artifact. Engines that
    #: run an ONNX graph run the precision the graph holds (FP16/INT8 are converted graphs:
    #: ``fusionrt build``), so they list fp32 only.
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: Takes ``options["stream"]`` (a CUDA stream handle) and runs its kernels on it.
    accepts_stream: ClassVar[bool] = False
    #: Takes ``options["cuda_graph"]``: replays one captured CUDA graph per input shape.
    cuda_graphs: ClassVar[bool] = False
    #: Takes ``options["channels_last"]`` (NHWC memory format for images and weights).
    channels_last: ClassVar[bool] = False
    #: Takes ``options["tf32"]`` (TF32 matmuls and convolutions for FP32 on CUDA).
    tf32: ClassVar[bool] = False
    #: Compiles at load: minutes on a CPU, so never picked there without being asked for.
    compiles: ClassVar[bool] = False
    #: ``run`` on CUDA tensors can be captured inside a caller's CUDA graph (eager kernels on
    #: the current stream, no host synchronisation): the live path's one-graph frame.
    capturable: ClassVar[bool] = False

    def __init__(self, artifact: Artifact, config: EngineConfig | None = None):
        self.artifact = artifact
        self.config = config or EngineConfig()
        self._loaded = False

    # -- availability --------------------------------------------------------
    @classmethod
    def runs_on(cls, device: str) -> bool:
        """Can this engine run on ``device`` ("cpu", "cuda", "cuda:1")?"""
        return any(device == d or device.startswith(d + ":") for d in cls.devices)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(usable here, reason and fix if not). Must not raise."""
        return True, ""

    @classmethod
    def can_load(cls, artifact: Artifact) -> tuple[bool, str]:
        """(can run ``artifact`` here without extra packages, reason if not). Must not raise."""
        return cls.available()

    @classmethod
    def precision_refusal(cls, precision: str) -> str | None:
        """Why this engine can never run a ``precision`` artifact (e.g. a library without INT8
        activations), in the house form; None when it can. Checked before anything is built."""
        return None

    # -- products --------------------------------------------------------------
    @classmethod
    def needs(cls, artifact: Artifact, config: EngineConfig) -> str | None:
        """The product a builder must make before this engine can load ``artifact`` with
        ``config`` (a kind such as ``"trt-plan"``), or None when the engine loads it itself.
        ``fusionrt.builders.open`` maps kinds to builders."""
        return None

    def _needs_builder(self, what: str) -> EngineError:
        """The error for a config that asks for a product that was not given."""
        return EngineError(
            f"engine '{self.name}' | {what} is made by a builder, not by the engine; open it "
            f"with fusionrt.builders.open.open_engine('{self.name}', artifact, config)")

    # -- contract --------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        return self.artifact.spec

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.spec.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.spec.outputs

    # -- lifecycle -------------------------------------------------------------
    def load(self) -> "Engine":
        if not self._loaded:
            ok, why = self.available()
            if not ok:
                raise EngineError(f"engine '{self.name}' | not usable here: {why}")
            self._load()
            self._loaded = True
        return self

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run one batch. Raises ``EngineError`` naming the input that breaks the contract."""
        if not self._loaded:
            self.load()
        self.check_feeds(feeds)
        return self._run(feeds)

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded = False

    def __enter__(self) -> "Engine":
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_feeds(self, feeds: Mapping[str, Any]) -> None:
        expected = {t.name for t in self.inputs}
        missing = expected - set(feeds)
        extra = set(feeds) - expected
        if missing or extra:
            raise EngineError(
                f"model '{self.spec.name}' | got inputs {sorted(feeds)}; expected {sorted(expected)}")
        batch = None
        for t in self.inputs:
            a = feeds[t.name]
            got_dtype = _dtype_name(a.dtype)
            if got_dtype != t.dtype:
                raise EngineError(f"input '{t.name}' | got dtype {got_dtype}; expected {t.dtype}")
            shape = tuple(a.shape)
            if len(shape) != len(t.shape) or any(
                    isinstance(d, int) and d != s for d, s in zip(t.shape, shape)):
                raise EngineError(
                    f"input '{t.name}' | got shape {shape}; expected {t.shape_str()}")
            if t.shape and isinstance(t.shape[0], str):
                if batch is not None and shape[0] != batch:
                    raise EngineError(
                        f"input '{t.name}' | got batch {shape[0]}; other inputs have batch {batch}")
                batch = shape[0]
        prof = self.config.batch
        if batch is not None and self.fixed_batch_profile and not (prof.min <= batch <= prof.max):
            raise EngineError(
                f"model '{self.spec.name}' | got batch {batch}; this engine was built for "
                f"batch {prof.min}..{prof.max}")

    #: True for engines built for a batch range (TensorRT profiles, CUDA graphs).
    fixed_batch_profile: ClassVar[bool] = False

    @property
    def max_batch(self) -> int | None:
        """The most items one ``run`` may take: the built profile's max on engines whose plan
        fixes it (and, on ONNX Runtime, a graph exported with a fixed batch, such as the released
        inswapper_128 or a FaceFusion file exported for one face); None when any batch runs.
        Callers cut their batches into chunks of it."""
        return self.config.batch.max if self.fixed_batch_profile else None

    # -- implementation --------------------------------------------------------
    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]: ...

    def _close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r}, device={self.config.device!r}, " \
               f"precision={self.config.precision!r})"


class EngineOwner:
    """Mixin for a pipeline that loads engines into ``self._engines``: ``close()`` closes them
    all, and the pipeline is a context manager that does so on exit."""

    _engines: list[Engine]

    def close(self) -> None:
        for e in self._engines:
            e.close()
        self._engines.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
