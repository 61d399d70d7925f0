"""Where the time goes: per-stage GPU time (CUDA events), queue waits, GPU utilisation.

Stage times on the GPU are event pairs on the compute stream, read back only once the end event
has completed, so measuring never adds a synchronisation to the loop. On the CPU they are wall
times.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from typing import Iterator

log = logging.getLogger(__name__)


class StageTimer:
    """Accumulates milliseconds per stage name. ``enabled=False`` makes ``stage`` free."""

    def __init__(self, device, enabled: bool = True):
        self.dev = device
        self.enabled = enabled
        self.ms: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._pending: list[tuple[str, object, object]] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        if self.dev.cuda:
            start = self.dev.record(timing=True)
            try:
                yield
            finally:
                self._pending.append((name, start, self.dev.record(timing=True)))
                self.calls[name] += 1
                if len(self._pending) > 256:
                    self._collect(block=False)
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.ms[name] += (time.perf_counter() - t0) * 1e3
                self.calls[name] += 1

    def _collect(self, block: bool) -> None:
        keep = []
        for name, start, end in self._pending:
            if block:
                end.synchronize()
            if block or end.query():
                self.ms[name] += start.elapsed_time(end)
            else:
                keep.append((name, start, end))
        self._pending = keep

    def summary(self) -> dict[str, float]:
        """Stage → total milliseconds so far (waits for outstanding events)."""
        self._collect(block=True)
        return dict(self.ms)

    def reset(self) -> None:
        self._collect(block=True)
        self.ms.clear()
        self.calls.clear()


class Waits:
    """Seconds each pipeline thread spent blocked on its queues, and the queues' high-water
    marks (the bound must hold: that is what keeps memory flat on long videos)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.high_water: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] += seconds

    def saw(self, queue_name: str, size: int) -> None:
        with self._lock:
            self.high_water[queue_name] = max(self.high_water[queue_name], size)


class GpuUtilSampler:
    """Samples NVML GPU utilisation in a thread (``pynvml`` from nvidia-ml-py); a no-op with a
    reason in ``error`` when NVML is missing."""

    def __init__(self, index: int = 0, period_s: float = 0.05):
        self.index, self.period_s = index, period_s
        self.samples: list[tuple[float, int, int]] = []  # (time, gpu %, memory-controller %)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GpuUtilSampler":
        try:
            import pynvml
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self._nvml = pynvml
        except Exception as e:  # absent package or driver: report, never fail the run
            self.error = f"NVML unavailable: {e}"
            return self
        self._thread = threading.Thread(target=self._loop, name="fusionrt-nvml", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                u = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
                self.samples.append((time.perf_counter(), int(u.gpu), int(u.memory)))
            except Exception as e:  # driver hiccup: stop sampling, keep the run
                self.error = f"NVML query failed: {e}"
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass

    def mean(self) -> dict[str, float | None]:
        if not self.samples:
            return {"gpu_util_pct": None, "mem_util_pct": None, "samples": 0}
        n = len(self.samples)
        return {"gpu_util_pct": sum(s[1] for s in self.samples) / n,
                "mem_util_pct": sum(s[2] for s in self.samples) / n, "samples": n}
