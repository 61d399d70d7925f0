"""A ``FaceSwapper`` as the live loop's per-frame stage: its own video-loop stage at batch 1
(``FaceSwapper.frame_stage(1)``), plus CUDA events around each frame's compute on the GPU path.

On the device kernels a frame goes up once as yuv420p (capture thread), is converted, detected
(or tracked), aligned, swapped, pasted and converted back on the compute stream, and comes down
once (output thread); the detector and generator replay their CUDA graphs captured at batch 1.
On the host kernels (``--kernels host``, the CPU path, ``--baseline``) frames are BGR arrays and
the swapper's ``process_frame`` runs. Nothing here runs a stage itself.
"""

from __future__ import annotations

from typing import Any


class LiveStage:
    """What ``runner.run_live`` drives: ``upload``/``compute``/``download`` per frame (handles
    are opaque), ``warmup``, ``gpu_ms(handle)``, ``reset_timing()``, ``stage_ms()``.

    ``gpu_ms`` is the compute stream's time from the frame's upload being done to the end of its
    compute (CUDA events), gaps where the GPU waited for the host to launch work included: the
    figure a frame's GPU path costs. None off CUDA.
    """

    def __init__(self, swapper: Any):
        self.swapper = swapper
        self.inner = swapper.frame_stage(1)
        self.frame_format = self.inner.frame_format
        device = getattr(swapper.kernels, "name", "") == "device"
        self.dev = swapper.dev if device and swapper.dev.cuda else None

    def warmup(self, height: int, width: int) -> None:
        """CUDA graphs at batch 1 are captured here, before any thread starts."""
        self.inner.warmup(1, height, width)

    def upload(self, frames: list) -> Any:
        return self.inner.upload(frames)

    def compute(self, handle: Any) -> tuple[Any, list]:
        if self.dev is None:
            out, counts = self.inner.compute(handle)
            return (out, None, None), counts
        sw = self.swapper
        _, ready = handle
        self.dev.wait(sw.compute, ready)  # start the clock when the frame is on the GPU
        start = self.dev.record(sw.compute, timing=True)
        out, counts = self.inner.compute(handle)
        return (out, start, self.dev.record(sw.compute, timing=True)), counts

    def download(self, handle: Any) -> list:
        return self.inner.download(handle[0])

    @staticmethod
    def gpu_ms(handle: Any) -> float | None:
        _, start, end = handle
        if start is None:
            return None
        end.synchronize()
        return float(start.elapsed_time(end))

    def reset_timing(self) -> None:
        self.swapper.reset_timing()

    def stage_ms(self) -> dict[str, float]:
        """Milliseconds per frame by stage since ``reset_timing`` (GPU time on CUDA)."""
        return self.swapper.stage_ms()
