"""A device batch processor as the video loop's ``FrameStage`` (``pipeline.video.loop``):
``FaceSwapper.frame_stage()`` on the device kernels, and the loop's tests' fakes.

    upload   (upload thread):   decoded frames → pinned host buffer → device tensor, copied on
                                the H2D stream, plus the event that marks the copy done
    compute  (caller's thread): the compute stream waits on that event (a GPU-side wait, the
                                host never blocks), ``FaceSwapper.process`` swaps in place, an
                                event marks the end
    download (download thread): D2H on its own stream after that event

The loop knows nothing of tensors, streams or events: they travel in the batch handle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .frames import Transfer

# the loop's frame formats -> the names frames.py and FaceSwapper.process use
_FORMATS = {"yuv420p": "yuv420p", "bgr24": "bgr"}


class DeviceFrameStage:
    """A ``FrameStage`` around a swapper with ``dev`` (``frames.Device``), ``compute`` (its CUDA
    stream, or None), ``process(tensor, fmt, h, w) -> faces per frame`` and, optionally,
    ``warmup(batch, h, w)`` and ``timer`` (a ``timing.StageTimer``)."""

    def __init__(self, swapper: Any, frame_format: str = "yuv420p"):
        if frame_format not in _FORMATS:
            raise ValueError(f"frame format '{frame_format}' | unknown; expected one of "
                             f"{', '.join(_FORMATS)}")
        self.swapper, self.frame_format = swapper, frame_format
        self._fmt = _FORMATS[frame_format]
        self.transfer = Transfer(swapper.dev)
        self.frames = 0
        self._ms0: dict[str, float] = {}

    def warmup(self, batch: int, height: int, width: int) -> None:
        if hasattr(self.swapper, "warmup"):
            self.swapper.warmup(batch, height, width)
        self.frames, self._ms0 = 0, self._timer_ms()  # stage times from here on

    def upload(self, frames: list) -> tuple[Any, Any]:
        return self.transfer.upload(frames, self._fmt)  # (tensor, copy-done event)

    def compute(self, batch: tuple[Any, Any]) -> tuple[tuple[Any, Any], list[int]]:
        tensor, ready = batch
        sw = self.swapper
        sw.dev.wait(sw.compute, ready)
        if sw.compute is not None:
            # allocated on the H2D stream: without this the caching allocator could hand its
            # memory to the next upload while the compute stream still uses it
            tensor.record_stream(sw.compute)
        if self._fmt == "yuv420p":  # (N, H * 3 / 2, W)
            height, width = tensor.shape[1] * 2 // 3, tensor.shape[2]
        else:  # (N, H, W, 3)
            height, width = tensor.shape[1], tensor.shape[2]
        counts = sw.process(tensor, self._fmt, height, width)
        self.frames += tensor.shape[0]
        return (tensor, sw.dev.record(sw.compute)), list(counts)

    def download(self, batch: tuple[Any, Any]) -> list[np.ndarray]:
        tensor, done = batch
        return list(self.transfer.download(tensor, done))

    def stage_ms(self) -> dict[str, float]:
        """GPU milliseconds per frame by stage (CUDA events; wall time on CPU torch) over the
        frames computed since ``warmup``."""
        n = max(self.frames, 1)
        return {k: (v - self._ms0.get(k, 0.0)) / n for k, v in self._timer_ms().items()
                if v > self._ms0.get(k, 0.0)}

    def _timer_ms(self) -> dict[str, float]:
        timer = getattr(self.swapper, "timer", None)
        return timer.summary() if timer is not None else {}
