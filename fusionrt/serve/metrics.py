"""Prometheus metrics of one app (own registry, so several apps in one process don't clash)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping

log = logging.getLogger(__name__)

# Latency buckets (s): a CPU swap takes ~0.1-0.5 s, a queued one seconds; GPUs go down to ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


def _prometheus():
    try:
        import prometheus_client
    except ImportError:
        from ..errors import EngineError
        raise EngineError("serve | needs prometheus-client: pip install 'fusionrt[serve]'") from None
    return prometheus_client


class GpuMemoryCollector:
    """``fusionrt_gpu_memory_bytes{device,kind}`` read at scrape time.

    Uses torch's allocator counters when torch is already imported (a torch engine is loaded),
    else NVML if ``nvidia-ml-py`` is installed; on a machine without a GPU the metric has no
    samples (its HELP/TYPE lines still appear).
    """

    def collect(self) -> Iterator:
        from prometheus_client.core import GaugeMetricFamily
        fam = GaugeMetricFamily("fusionrt_gpu_memory_bytes", "GPU memory in use",
                                labels=["device", "kind"])
        for device, kind, value in self._read():
            fam.add_metric([device, kind], float(value))
        yield fam

    @staticmethod
    def _read() -> list[tuple[str, str, int]]:
        out: list[tuple[str, str, int]] = []
        torch = sys.modules.get("torch")  # never import torch just to scrape
        try:
            if torch is not None and torch.cuda.is_available():
                for i in range(torch.cuda.device_count()):
                    out.append((f"cuda:{i}", "allocated", torch.cuda.memory_allocated(i)))
                    out.append((f"cuda:{i}", "reserved", torch.cuda.memory_reserved(i)))
                return out
            import pynvml  # nvidia-ml-py: sees ONNX Runtime / TensorRT allocations too
            pynvml.nvmlInit()
            for i in range(pynvml.nvmlDeviceGetCount()):
                info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
                out.append((f"cuda:{i}", "used", int(info.used)))
        except Exception:  # noqa: BLE001 - no GPU / no NVML: the metric has no samples
            pass
        return out


class Metrics:
    """The service's metrics; ``render()`` gives the ``/metrics`` body."""

    def __init__(self) -> None:
        pc = _prometheus()
        self.registry = r = pc.CollectorRegistry()
        self.content_type = pc.CONTENT_TYPE_LATEST
        self._generate = pc.generate_latest
        self.latency = pc.Histogram(
            "fusionrt_request_seconds", "Request latency by route", ["route", "method", "status"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.inflight = pc.Gauge("fusionrt_inflight_requests",
                                 "Swap/identity requests accepted and not yet answered",
                                 registry=r)
        self.queue_depth = pc.Gauge("fusionrt_queue_depth", "Work items waiting per batcher",
                                    ["stage"], registry=r)
        self.batch_size = pc.Histogram("fusionrt_batch_size", "Items per engine call",
                                       ["stage"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = pc.Histogram("fusionrt_batch_seconds", "Engine call time per batch",
                                          ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.rejected = pc.Counter("fusionrt_rejected_total", "Requests refused before work",
                                   ["reason"], registry=r)
        self.model_info = pc.Gauge("fusionrt_model_info",
                                   "1 for the model version serving new requests",
                                   ["version", "stage", "model"], registry=r)
        self.reloads = pc.Counter("fusionrt_reloads_total", "Model reloads by outcome",
                                  ["outcome"], registry=r)
        self.jobs = pc.Gauge("fusionrt_jobs", "Video jobs by state", ["state"], registry=r)
        r.register(GpuMemoryCollector())

    # hooks for the batchers
    def on_batch(self, stage: str, size: int, seconds: float) -> None:
        self.batch_size.labels(stage).observe(size)
        self.batch_seconds.labels(stage).observe(seconds)

    def on_depth(self, stage: str, delta: int) -> None:
        self.queue_depth.labels(stage).inc(delta)

    def set_model(self, version: str, stages: Mapping[str, str]) -> None:
        """Make ``version`` the one reported as serving."""
        self.model_info.clear()
        for stage, model in stages.items():
            self.model_info.labels(version, stage, model).set(1)

    def render(self) -> bytes:
        return self._generate(self.registry)
