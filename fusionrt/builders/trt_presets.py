"""Named TensorRT build presets (``fusionrt build --profile NAME``, engine option ``profile``).

``edge`` is for full TensorRT on a Jetson Orin (compute capability 8.7, with JetPack's TensorRT;
TensorRT-RTX does not list 8.7): small workspace, batch-1 profile, the FP16 graph. It is written
and unit-tested here and has NOT been run on a Jetson (none is available to this project).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engines.base import BatchProfile
from ..errors import EngineError


@dataclass(frozen=True)
class BuildPreset:
    """Named build settings (``fusionrt build --profile NAME``, engine option ``profile``).

    Attributes:
        workspace_gb: builder workspace limit.
        batch: the only batch profile allowed (None: any).
        precision: the precision the preset builds when none is asked for (None: fp32).
        note: what the preset is for and what has been verified of it.
    """

    name: str
    workspace_gb: float = 4.0
    batch: BatchProfile | None = None
    precision: str | None = None
    note: str = ""


PRESETS: dict[str, BuildPreset] = {
    "default": BuildPreset("default"),
    # Jetson Orin (CC 8.7; JetPack's full TensorRT, not TensorRT-RTX, which does not list 8.7):
    # its 8-64 GB are shared with the CPU, so a 1 GiB workspace, batch-1 plans (live video is
    # one frame at a time) and the FP16 graph. Written and unit-tested here; not run on a Jetson.
    "edge": BuildPreset("edge", workspace_gb=1.0, batch=BatchProfile(1, 1, 1), precision="fp16",
                        note="Jetson Orin (CC 8.7), JetPack TensorRT; not run on a Jetson"),
}


def get_preset(name: str) -> BuildPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise EngineError(f"build profile '{name}' | unknown; expected one of: "
                          f"{', '.join(PRESETS)}") from None


def apply_preset(preset: BuildPreset, batch: BatchProfile | None, precision: str | None
                 ) -> tuple[BatchProfile, str]:
    """(batch profile, precision) for a build under ``preset``; the preset's fill the gaps, and a
    batch that contradicts it is refused."""
    if preset.batch is not None and batch is not None and batch != preset.batch:
        raise EngineError(f"build profile '{preset.name}' | got batch profile {batch}; expected "
                          f"{preset.batch} ({preset.note or 'fixed by the profile'})")
    return (batch or preset.batch or BatchProfile(),
            precision or preset.precision or "fp32")
