"""``process_video``'s ``FrameStage``: a frame function on host BGR frames, inside the one video
loop (``loop.transcode``).

The frame function is the compute step, so it runs in the caller's thread (GPU contexts,
thread-bound sessions and Ctrl-C stay with the caller); the BGR conversion runs in the upload
thread, off the caller's back. Nothing goes to a device: download hands the frames on as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .io import Frame, FrameFn, to_bgr


class FrameFnStage:
    """``frame_fn`` as a ``FrameStage`` (frame_format ``bgr24``).

    With ``batch=1`` the function gets one frame per call, else a list of up to ``batch``
    frames; it returns a frame (or ``(frame, n_faces)``) per frame, same shape, uint8. Frames
    without a face count report None, so the video's ``faces_total`` stays None unless the
    function counts.
    """

    frame_format = "bgr24"

    def __init__(self, frame_fn: FrameFn, batch: int = 1):
        if batch < 1:
            raise ValueError(f"batch | got {batch}; expected >= 1")
        self.frame_fn, self.batch = frame_fn, batch

    def warmup(self, batch: int, height: int, width: int) -> None:
        """Nothing to capture on the host."""

    def upload(self, frames: list) -> list[Frame]:
        return [f if isinstance(f, np.ndarray) else to_bgr(f) for f in frames]

    def compute(self, frames: list[Frame]) -> tuple[list[Frame], list[int | None]]:
        results = [self.frame_fn(frames[0])] if self.batch == 1 else list(self.frame_fn(frames))
        if len(results) != len(frames):
            raise ValueError(f"frame_fn | returned {len(results)} results for {len(frames)} "
                             "frames; expected one per frame")
        out, counts = [], []
        for img, res in zip(frames, results):
            frame, n = _check_result(res, img)
            out.append(frame)
            counts.append(None if n is None else int(n))
        return out, counts

    def download(self, frames: list[Frame]) -> list[Frame]:
        return frames


def _check_result(out: Any, like: Frame) -> tuple[Frame, int | None]:
    frame, faces = out if isinstance(out, tuple) else (out, None)
    if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == like.shape):
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame_fn | returned {got}; expected uint8 array of shape {like.shape}")
    return frame, faces
