"""Engine calls over a variable number of crops with few shapes.

The device kernels send every face of a batch of frames through a model at once, and the face
count changes from batch to batch. Each new input shape costs: a CUDA-graph engine captures a new
graph, and cuDNN's autotuner (``torch.backends.cudnn.benchmark``) times every convolution again.
Measured on the H200 (2026-12-01, enhance preset): an occluder called with whatever face count
each batch had spent 13.2 ms per frame in autotuning against ~0.6 ms per crop of model time.

So calls go in chunks of at most ``batch`` crops, each padded up to a multiple of ``step``
(zeros; the padded rows' outputs are dropped): at most ``batch / step`` shapes, all run once in
``warmup`` before the video loop's threads start, and never more than ``step - 1`` wasted rows
per call (padding everything to ``batch`` wasted 10 of 32 generator rows at 0.7 faces a frame).
Engines without CUDA graphs run the crops as they come.
"""

from __future__ import annotations

from typing import Any, Mapping

from ...engines.base import Engine
from ...errors import InputError
from . import require_torch

STEP = 8  # crops: padded call sizes are multiples of this


class StaticBatches:
    """Chunked, padded calls of one engine.

    Args:
        engine: a loaded engine taking tensors.
        batch: the most crops per call (capped by the engine's fixed batch, if it has one).
        device: the torch device the crops live on (padding only on CUDA with graphs).
        step: padded sizes are multiples of it (capped at ``batch``).
    """

    def __init__(self, engine: Engine, batch: int, device: Any, step: int = STEP) -> None:
        if int(batch) < 1 or int(step) < 1:
            raise InputError(f"batch {batch}, step {step} | expected >= 1")
        torch = require_torch()
        self.torch = torch
        self.engine = engine
        self.chunk = min(int(batch), engine.max_batch or int(batch))
        self.step = min(int(step), self.chunk)
        self.pad = bool(torch.device(device).type == "cuda"
                        and engine.config.options.get("cuda_graph"))

    def padded(self, k: int) -> int:
        """The call size for ``k`` (<= chunk) crops."""
        if not self.pad:
            return k
        return min(self.chunk, -(-k // self.step) * self.step)

    def sizes(self) -> list[int]:
        """Every call size ``run`` can make (what ``warmup`` runs once)."""
        if not self.pad:
            return [self.chunk]
        return sorted({self.padded(k) for k in range(1, self.chunk + 1)})

    def run(self, batched: Mapping[str, Any], fixed: Mapping[str, Any] | None = None,
            output: str | None = None):
        """``batched``: inputs with the crops on dim 0 (all the same length K); ``fixed``: inputs
        fed whole to every call. → the output named ``output`` (default: the first), float32,
        K rows, on the crops' device."""
        torch = self.torch
        first = next(iter(batched.values()))
        n, dev = int(first.shape[0]), first.device
        if n == 0:
            raise InputError("engine call | got 0 crops; expected >= 1 (callers skip empty "
                             "batches)")
        name = output or self.engine.outputs[0].name
        outs = []
        for s in range(0, n, self.chunk):
            k = min(self.chunk, n - s)
            size = self.padded(k)
            feeds = {}
            for key, x in batched.items():
                xb = x[s:s + k]
                if size > k:
                    xb = torch.cat([xb, xb.new_zeros((size - k,) + tuple(xb.shape[1:]))])
                feeds[key] = xb.contiguous()
            feeds.update(fixed or {})
            y = self.engine.run(feeds)[name]
            outs.append(torch.as_tensor(y).to(dev)[:k].float())
        return outs[0] if len(outs) == 1 else torch.cat(outs)
