"""A ``FaceSwapper`` over the files a repository serves (its served versions).

Used by the PyTriton server, by the in-process reference in tests, and by the pipeline model
(which plans the same stages and runs them through BLS). ``RepoStore`` stands in for the model
store: each zoo name resolves to ``<repo>/<stage model>/<served version>/model.onnx``. Requests
carry their own source image: ``Identities`` keeps the prepared ones, and ``swap_frames`` swaps
frames with one identity each through the swapper's public stage API.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..engines.base import Engine
from ..errors import ModelError
from ..models.spec import Artifact
from ..models.store import ModelStore
from ..models.zoo import get_spec
from ..pipeline.host.kernels import HostKernels
from ..pipeline.settings import PipelineConfig
from ..pipeline.types import Identity
from .repository import MANIFEST
from .versions import served_version

log = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class RepoStore(ModelStore):
    """Resolves the repository's stage models; everything else is "not installed"."""

    def __init__(self, repo: Path | str):
        super().__init__()
        self.repo = Path(repo)
        try:
            self.manifest = json.loads((self.repo / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"repository '{self.repo}' | cannot read {MANIFEST}: {e}") from None
        self.entries: dict[str, tuple[Path, bool, str, int]] = {}
        for info in self.manifest["stages"].values():
            mdir = self.repo / info["model"]
            v = served_version(mdir)
            rel = mdir / str(v) / "release.json"
            synthetic = json.loads(rel.read_text()).get("synthetic", info["synthetic"]) \
                if rel.is_file() else info["synthetic"]
            self.entries[info["zoo"]] = (mdir / str(v) / "model.onnx", bool(synthetic),
                                         info["model"], v)

    @property
    def versions(self) -> dict[str, int]:
        """Triton model name -> served version."""
        return {m: v for _, _, m, v in self.entries.values()}

    @property
    def swapper(self) -> str:
        return self.manifest["stages"]["swap"]["zoo"]

    def installed(self, name: str) -> str | None:
        e = self.entries.get(name)
        return None if e is None else ("synthetic" if e[1] else "real")

    def resolve(self, name: str, allow_synthetic: bool = False) -> Artifact:
        if name not in self.entries:
            raise ModelError(f"model '{name}' | not in repository '{self.repo}'")
        path, synthetic, _, _ = self.entries[name]
        return Artifact(get_spec(name), path, synthetic=synthetic)


def repo_settings(store: RepoStore, swapper: str | None = None,
                  det_size: int | None = None) -> PipelineConfig:
    """The settings every front end of a repository swaps with: its swapper (or ``swapper``),
    its detector size (or ``det_size``), the largest face, the host kernels on the CPU, the
    plan's default engines."""
    det = det_size or int(store.manifest.get("options", {}).get("det_size", 640))
    return PipelineConfig(swapper=swapper or store.swapper, device="cpu", kernels="host",
                          det_size=det, allow_synthetic=any(e[1] for e in store.entries.values()))


class StageEngineKernels(HostKernels):
    """The host kernels, keeping each stage's engine by stage name: the server also serves the
    stages as tensor models (``fusionrt_detect`` …) on the engines the pipeline runs."""

    def __init__(self) -> None:
        super().__init__()
        self.stage_engines: dict[str, Engine] = {}

    def _open(self, stage_plan: Any) -> Engine:
        engine = super()._open(stage_plan)
        self.stage_engines[stage_plan.stage] = engine
        return engine


@dataclass
class Loaded:
    """A built pipeline, the versions it serves, and its engines by stage."""

    pipe: Any  # FaceSwapper
    versions: dict[str, int]
    engines: dict[str, Engine] = field(default_factory=dict)


def build_pipeline(repo: Path | str, warm: bool = True) -> Loaded:
    """Build the repository's ``FaceSwapper`` (host kernels, the plan's default engines on the
    CPU); ``warm`` swaps the example photos once and refuses a version that produces no valid
    swapped image."""
    from ..pipeline.plan import plan_stages
    from ..pipeline.swapper import FaceSwapper
    store = RepoStore(repo)
    kernels = StageEngineKernels()
    pipe = FaceSwapper(plan_stages(repo_settings(store), store), kernels)
    if warm:
        try:
            warm_up(pipe)
        except BaseException:
            pipe.close()
            raise
    return Loaded(pipe, store.versions, kernels.stage_engines)


class Identities:
    """Source identities of ``swapper`` by image content (sha1 of the bytes and the shape); the
    last ``size`` distinct sources are kept."""

    def __init__(self, swapper: Any, size: int = 8):
        self.swapper, self.size = swapper, size
        self.cache: dict[str, Identity] = {}

    def get(self, image: np.ndarray) -> Identity:
        """The identity of the largest face in ``image``. Raises NoFaceError."""
        image = np.ascontiguousarray(image)
        key = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()
        if key not in self.cache:
            ident = self.swapper.identity(image, "source")
            if len(self.cache) >= self.size:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = ident
        return self.cache[key]

    def __len__(self) -> int:
        return len(self.cache)


def swap_frames(swapper: Any, frames: Sequence[np.ndarray], identities: Sequence[Identity]
                ) -> list[tuple[np.ndarray, int]]:
    """``swapper.process_batch`` with one identity per frame (one generator call for every
    face), leaving ``swapper.source`` alone."""
    return swapper.process_batch([np.ascontiguousarray(f) for f in frames], list(identities))


def warm_up(pipe) -> None:
    """First runs (ORT allocations) on the example photos, checked like the serving gate."""
    import cv2
    src, tgt = (cv2.imread(str(EXAMPLES / n)) for n in ("astronaut.png", "grace_hopper.jpg"))
    if src is None or tgt is None:
        log.warning("warm-up photos not found under %s; warming the detector only", EXAMPLES)
        pipe.detect([np.full((256, 256, 3), 128, np.uint8)])
        return
    pipe.set_source(src, "astronaut.png")
    out, n = pipe.process_frame(tgt)
    if out.shape != tgt.shape or out.dtype != np.uint8 or n < 1:
        raise ModelError(f"warm-up | got {out.dtype} {out.shape} with {n} face(s) swapped; "
                         f"expected uint8 {tgt.shape} with >= 1")
