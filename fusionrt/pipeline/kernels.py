"""What both kernel sets share: the engines they open from the plan, closed together.

``host/kernels.py`` (numpy/OpenCV) and ``device/kernels.py`` (torch tensors) subclass it; a
front end that needs other engines for the same stages (Triton's BLS requests) overrides
``_open`` only.
"""

from __future__ import annotations

from typing import Any

from ..builders.open import open_engine
from ..engines.base import Engine


class KernelSet:
    """Opens each stage's engine as the plan says (``open_engine``) and closes them all."""

    name = "?"

    def __init__(self) -> None:
        self.engines: list[Engine] = []

    def _extra_options(self, stage_plan: Any) -> dict[str, Any]:
        """Engine options only the kernel set knows at open time (its CUDA stream, say)."""
        return {}

    def _open(self, stage_plan: Any) -> Engine:
        engine = open_engine(stage_plan.engine, stage_plan.artifact,
                             stage_plan.engine_config(**self._extra_options(stage_plan)))
        self.engines.append(engine)
        return engine

    def close(self) -> None:
        for e in self.engines:
            e.close()
        self.engines.clear()
