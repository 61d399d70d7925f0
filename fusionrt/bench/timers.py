"""Timing sources behind one small interface, so the runner never knows which clock it reads and
tests can inject fixed durations.

- ``CudaEventTimer``: per run, a CUDA event pair around the call on the current stream plus a
  host wall clock (``perf_counter``) around call + device synchronize. Each run is synchronised,
  so a latency is one request's submit-to-finish time, not pipelined throughput.
- ``PerfCounterTimer``: CPU engines; ``perf_counter`` around the (synchronous) call.
- ``FixedTimer``: calls the function like the others but reports given durations (tests).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence, Union

import numpy as np


class RowKey(NamedTuple):
    """Which row is being timed (lets a stub timer answer per engine/precision/stage/batch)."""

    stage: str
    engine: str
    precision: str
    batch: int


@dataclass(frozen=True)
class Timing:
    """Per-run latencies of one row. ``latency_ms`` is the primary clock (CUDA events on the GPU,
    ``perf_counter`` on the CPU); ``wall_ms`` is the host wall clock of the same runs."""

    source: str
    latency_ms: tuple[float, ...]
    wall_ms: tuple[float, ...]

    @property
    def runs(self) -> int:
        return len(self.latency_ms)

    @property
    def total_wall_s(self) -> float:
        return sum(self.wall_ms) / 1000.0


def summarize(samples: Sequence[float]) -> dict[str, float] | None:
    """mean, p50, p95, p99, min, max, std of ``samples`` (ms); None when empty."""
    if not samples:
        return None
    a = np.asarray(samples, np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"mean": float(a.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "min": float(a.min()), "max": float(a.max()), "std": float(a.std())}


class TimingSource(Protocol):
    """What the runner needs from a clock."""

    name: str

    def measure(self, fn: Callable[[], Any], runs: int, key: RowKey) -> tuple[Timing, Any]:
        """Call ``fn`` ``runs`` times, timing each call; returns the timing and the last result."""
        ...

    def time_once(self, fn: Callable[[], Any], key: RowKey | None = None) -> tuple[float, Any]:
        """Host wall ms of one call, device work included (loads, first runs)."""
        ...


class PerfCounterTimer:
    """CPU engines: their ``run`` returns host arrays, so the call is the whole latency."""

    name = "perf-counter"

    def measure(self, fn: Callable[[], Any], runs: int, key: RowKey) -> tuple[Timing, Any]:
        wall, out = [], None
        for _ in range(runs):
            t0 = time.perf_counter()
            out = fn()
            wall.append((time.perf_counter() - t0) * 1000.0)
        return Timing(self.name, tuple(wall), tuple(wall)), out

    def time_once(self, fn: Callable[[], Any], key: RowKey | None = None) -> tuple[float, Any]:
        t0 = time.perf_counter()
        out = fn()
        return (time.perf_counter() - t0) * 1000.0, out


class CudaEventTimer:
    """CUDA events on the current stream of ``device`` plus a host wall clock.

    Engines may work on their own streams (ONNX Runtime does unless given ours), so every run
    ends with ``torch.cuda.synchronize(device)``: the end event and the wall clock then both
    cover all of the run's device work.
    """

    name = "cuda-event"

    def __init__(self, device: str = "cuda"):
        import torch
        self.torch = torch
        self.device = torch.device(device)

    def measure(self, fn: Callable[[], Any], runs: int, key: RowKey) -> tuple[Timing, Any]:
        torch = self.torch
        with torch.cuda.device(self.device):
            # Events made up front: creating them inside the loop would be timed too.
            pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                     for _ in range(runs)]
            wall, out = [], None
            torch.cuda.synchronize(self.device)
            for start, end in pairs:
                t0 = time.perf_counter()
                start.record()
                out = fn()
                end.record()
                torch.cuda.synchronize(self.device)
                wall.append((time.perf_counter() - t0) * 1000.0)
            lat = [s.elapsed_time(e) for s, e in pairs]
        return Timing(self.name, tuple(lat), tuple(wall)), out

    def time_once(self, fn: Callable[[], Any], key: RowKey | None = None) -> tuple[float, Any]:
        torch = self.torch
        torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize(self.device)
        return (time.perf_counter() - t0) * 1000.0, out


Durations = Union[Mapping[tuple[str, str], float], Callable[[RowKey], float]]


class FixedTimer:
    """Test double: runs ``fn`` for real (outputs feed parity) but reports fixed durations.

    ``durations`` maps ``(engine, precision)`` to ms, or is a callable ``RowKey -> ms``;
    ``time_once`` reports ``once_ms``.
    """

    name = "fixed"

    def __init__(self, durations: Durations, once_ms: float = 1.0):
        self.durations = durations
        self.once_ms = float(once_ms)

    def _ms(self, key: RowKey) -> float:
        if callable(self.durations):
            return float(self.durations(key))
        return float(self.durations[(key.engine, key.precision)])

    def measure(self, fn: Callable[[], Any], runs: int, key: RowKey) -> tuple[Timing, Any]:
        out = None
        for _ in range(runs):
            out = fn()
        ms = (self._ms(key),) * runs
        return Timing(self.name, ms, ms), out

    def time_once(self, fn: Callable[[], Any], key: RowKey | None = None) -> tuple[float, Any]:
        return self.once_ms, fn()


def default_timer(device: str) -> TimingSource:
    """CUDA events for a CUDA device, ``perf_counter`` otherwise."""
    return CudaEventTimer(device) if device.startswith("cuda") else PerfCounterTimer()
