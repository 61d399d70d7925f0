"""The inputs of each stage and its FP32 reference outputs, shared by every row of the stage.

The reference is ONNX Runtime CPU FP32 (``config.REFERENCE``): exact FP32 kernels, independent of
the GPU's TF32/cuDNN choices, on every machine fusionrt installs on. It runs on the first
K = min(--parity-items, largest batch) items; each row compares its first min(batch, K) items.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..builders.open import open_engine
from ..engines.base import EngineConfig
from ..models.spec import ModelSpec
from ..models.zoo import get_spec
from .config import REFERENCE
from .stages import STAGES, make_feeds, outputs_to_numpy, parity, slice_feeds

if TYPE_CHECKING:
    from ..models.store import ModelStore
    from .config import BenchConfig


class References:
    """Per stage: inputs at the largest batch (rows slice them) and reference outputs, lazily."""

    def __init__(self, cfg: "BenchConfig", store: "ModelStore", lookup: Callable[[str], type],
                 images: list):
        self.cfg, self.store, self.lookup, self.images = cfg, store, lookup, images
        self._feeds: dict[str, dict] = {}
        self._refs: dict[str, tuple[dict | None, str | None]] = {}

    @property
    def items(self) -> int:
        return min(self.cfg.parity_items, max(self.cfg.batches))

    def feeds(self, stage: str, spec: ModelSpec, size: int) -> dict:
        if stage not in self._feeds:
            self._feeds[stage] = make_feeds(spec, max(self.cfg.batches), size, self.images,
                                            self.cfg.seed)
        return self._feeds[stage]

    def outputs(self, stage: str) -> tuple[dict | None, str | None]:
        """(reference outputs, None) or (None, why there are none); computed once per stage."""
        if stage in self._refs:
            return self._refs[stage]
        try:
            if stage == "pipeline":
                from .pipeline_row import reference_frame
                ref = {"frame": reference_frame(self.cfg, self.store)}
            else:
                c = self.cfg
                base = self.store.resolve(STAGES[stage].model, allow_synthetic=c.allow_synthetic)
                size = c.detect_size if stage == "detect" else STAGES[stage].size
                feeds = slice_feeds(self.feeds(stage, base.spec, size), self.items)
                with open_engine(self.lookup(REFERENCE), base, EngineConfig("cpu", "fp32")) as eng:
                    ref = outputs_to_numpy(eng.run(feeds), self.items)
            self._refs[stage] = (ref, None)
        except Exception as e:  # the row still has its timing; parity says why it is missing
            self._refs[stage] = (None, f"no FP32 reference ({REFERENCE}): "
                                       f"{type(e).__name__}: {e}")
        return self._refs[stage]

    def parity(self, stage: str, batch: int, out: Any) -> dict:
        """A row's parity entry: its last outputs against the reference."""
        ref, why = self.outputs(stage)
        if ref is None:
            return {"passed": None, "reason": why}
        if stage == "pipeline":
            task, got = "pipeline", {"frame": out.astype("float32")}
        else:
            task = get_spec(STAGES[stage].model).task
            got = outputs_to_numpy(out, min(batch, self.items))
        try:
            return {"reference": f"{REFERENCE}/fp32", **parity(task, ref, got)}
        except ValueError as e:
            return {"passed": None, "reason": str(e)}
