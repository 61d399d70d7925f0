"""A ``FaceSwapPipeline`` over the files a repository serves (its served versions).

Used by the PyTriton server, by the in-process reference in tests, and by the pipeline model's
stage contracts. ``RepoStore`` stands in for the model store: each zoo name resolves to
``<repo>/<stage model>/<served version>/model.onnx``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engines.base import Artifact
from ..errors import ModelError
from ..models.store import ModelStore
from ..models.zoo import get_spec
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


@dataclass
class Loaded:
    """A built pipeline and the versions it serves."""

    pipe: object  # FaceSwapPipeline
    versions: dict[str, int]


def build_pipeline(repo: Path | str, warm: bool = True) -> Loaded:
    """Build the repository's pipeline on ort-cpu; ``warm`` swaps the example photos once and
    refuses a version that produces no valid swapped image."""
    from ..pipeline.pipeline import FaceSwapPipeline, PipelineConfig
    store = RepoStore(repo)
    det = int(store.manifest.get("options", {}).get("det_size", 640))
    cfg = PipelineConfig(swapper=store.swapper, engine="ort-cpu", det_size=det,
                         allow_synthetic=any(e[1] for e in store.entries.values()))
    pipe = FaceSwapPipeline(cfg, store)
    if warm:
        try:
            warm_up(pipe)
        except BaseException:
            pipe.close()
            raise
    return Loaded(pipe, store.versions)


def warm_up(pipe) -> None:
    """First runs (ORT allocations) on the example photos, checked like the serving gate."""
    import cv2
    src, tgt = (cv2.imread(str(EXAMPLES / n)) for n in ("astronaut.png", "grace_hopper.jpg"))
    if src is None or tgt is None:
        log.warning("warm-up photos not found under %s; warming the detector only", EXAMPLES)
        pipe.detector.detect(np.full((256, 256, 3), 128, np.uint8))
        return
    pipe.set_source(src, "astronaut.png")
    out, n = pipe.process_frame(tgt)
    if out.shape != tgt.shape or out.dtype != np.uint8 or n < 1:
        raise ModelError(f"warm-up | got {out.dtype} {out.shape} with {n} face(s) swapped; "
                         f"expected uint8 {tgt.shape} with >= 1")
