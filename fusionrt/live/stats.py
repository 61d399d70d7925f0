"""What a live run measured, and the ``--stats`` file.

``{"summary": {"height", "width", "fps_target", "fps", "frames", "captured", "dropped",
"p50_ms", "p95_ms", "p99_ms", "gpu_p50_ms", "gpu_p99_ms", …}, "latency_ms": {…},
"gpu_ms": {…}, "compute_ms": {…}, "stage_ms": {…}, "engines": {…}, …}``

Latency is per frame from capture (the instant a paced file's frame was due, or a camera's
frame arrived) to encoded (the sink's ``write`` returned). GPU ms is the CUDA-event time of each
frame's compute on the compute stream (None off CUDA); compute ms is the host's wall time in the
compute call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._fs import atomic_write_bytes
from ..errors import OutputError

QUANTILES = (50, 95, 99)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99, mean and max in ms (rounded to µs); None each when there are no values."""
    if not len(values):
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None, "n": 0}
    a = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {f"p{q}": round(float(np.percentile(a, q)), 3) for q in QUANTILES}
    out.update(mean=round(float(a.mean()), 3), max=round(float(a.max()), 3), n=int(a.size))
    return out


@dataclass
class LiveStats:
    """Counts and per-frame samples of one run (the runner fills it)."""

    width: int = 0
    height: int = 0
    fps_target: float = 0.0
    captured: int = 0           # frames the source delivered (after warm-up)
    frames: int = 0             # frames encoded
    dropped_compute: int = 0    # pushed out of the compute slot: compute was late
    dropped_output: int = 0     # pushed out of the output slot: the output was late
    faces: int = 0
    seconds: float = 0.0        # first capture to last encoded frame
    stopped_by: str = "end of input"
    latency_ms: list[float] = field(default_factory=list)
    gpu_ms: list[float] = field(default_factory=list)
    compute_ms: list[float] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)  # a paced frame decoded after it was due
    stage_ms: dict[str, float] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return self.dropped_compute + self.dropped_output

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        lat, gpu = percentiles(self.latency_ms), percentiles(self.gpu_ms)
        comp = percentiles(self.compute_ms)
        return {"width": self.width, "height": self.height,
                "fps_target": round(float(self.fps_target), 3), "fps": round(self.fps, 2),
                "frames": self.frames, "captured": self.captured, "dropped": self.dropped,
                "dropped_compute": self.dropped_compute, "dropped_output": self.dropped_output,
                "faces": self.faces, "seconds": round(self.seconds, 3),
                "p50_ms": lat["p50"], "p95_ms": lat["p95"], "p99_ms": lat["p99"],
                "max_ms": lat["max"], "gpu_p50_ms": gpu["p50"], "gpu_p99_ms": gpu["p99"],
                "compute_p50_ms": comp["p50"], "compute_p99_ms": comp["p99"],
                "stopped_by": self.stopped_by}

    def report(self, **extra: Any) -> dict[str, Any]:
        """The ``--stats`` document: summary, distributions, stage times and ``extra`` (engines,
        settings, input, output, machine...)."""
        late = [v for v in self.late_ms if v > 0]
        return {"summary": self.summary(), "latency_ms": percentiles(self.latency_ms),
                "gpu_ms": percentiles(self.gpu_ms), "compute_ms": percentiles(self.compute_ms),
                "source_late_ms": {**percentiles(late), "frames_late": len(late)},
                "stage_ms": {k: round(v, 4) for k, v in self.stage_ms.items()},
                "clocks": {"latency": "capture (due time of a paced frame, or arrival) to the "
                                      "sink's write returning; wall clock",
                           "gpu": "CUDA events on the compute stream around each frame's "
                                  "compute, from its upload being done",
                           "compute": "host wall time in the compute call",
                           "stage": "ms per frame by stage since warm-up (GPU time on CUDA)"},
                **extra}


def write_stats(path: str | Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as JSON atomically (a temp file renamed)."""
    p = Path(path)
    try:
        atomic_write_bytes(p, (json.dumps(doc, indent=1, default=str) + "\n").encode())
    except OSError as e:
        raise OutputError(f"stats '{p}' | cannot be written ({e.strerror}); expected a "
                          "writable path") from None
    return p


def check_stats_path(path: str | Path | None) -> None:
    """Fail before the run when the stats file could not be written afterwards."""
    if not path:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir() or not parent.is_dir():
        raise OutputError(f"stats '{p}' | is a folder or its folder does not exist; expected a "
                          "file path in an existing folder")
