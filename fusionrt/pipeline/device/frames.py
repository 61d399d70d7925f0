"""Frames between host and device, and the colour conversions done on the device.

Decoded video arrives as yuv420p (1.5 bytes per pixel): it goes up as is and is converted to BGR
on the GPU, and the result is converted back to yuv420p before it comes down, so the CPU never
runs swscale and each transfer moves half the bytes of BGR. The conversions are BT.601
limited range, the matrix FFmpeg's swscale applies when PyAV turns frames into ``bgr24`` (what
the CPU path sees), with nearest-neighbour chroma (swscale's unscaled fast path; measured on the
test clip: mean |diff| 1.1 levels, max 3, against ``to_ndarray("bgr24")``).

Host buffers are pinned (page-locked) and copies are asynchronous on their own CUDA streams;
torch's caching host allocator reuses the pinned blocks once the copies that used them finish.
On CPU torch every function works the same, without pinning or streams.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np

from . import require_torch

# BT.601, limited range: Y in [16, 235], Cb/Cr in [16, 240].
_Y_SCALE = 255.0 / 219.0
_RGB_FROM_CBCR = ((0.0, 1.596027), (-0.391762, -0.812968), (2.017232, 0.0))  # R, G, B rows
_YUV_FROM_RGB = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))

FORMATS = ("yuv420p", "bgr")


class Device:
    """A torch device plus what the CUDA path needs (streams, events); inert on the CPU."""

    def __init__(self, name: str = "cuda"):
        torch = require_torch()
        self.torch = torch
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"

    def stream(self):
        return self.torch.cuda.Stream(self.device) if self.cuda else None

    def use(self, stream) -> contextlib.AbstractContextManager:
        return self.torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    def record(self, stream=None, timing: bool = False):
        """An event recorded on ``stream`` (current stream if None); None on the CPU."""
        if not self.cuda:
            return None
        ev = self.torch.cuda.Event(enable_timing=timing)
        ev.record(stream)
        return ev

    @staticmethod
    def wait(stream, event) -> None:
        if stream is not None and event is not None:
            stream.wait_event(event)

    def empty_host(self, shape: tuple[int, ...]):
        """A uint8 host tensor, pinned when there is a GPU to copy to."""
        return self.torch.empty(shape, dtype=self.torch.uint8, pin_memory=self.cuda)


def frame_shape(fmt: str, height: int, width: int) -> tuple[int, ...]:
    """Shape of one frame in ``fmt``: yuv420p is PyAV's packed (H * 3 / 2, W) layout."""
    if fmt == "yuv420p":
        if height % 2 or width % 2:
            raise ValueError(f"frame | {width}x{height} has an odd side; yuv420p needs even sides")
        return (height * 3 // 2, width)
    if fmt == "bgr":
        return (height, width, 3)
    raise ValueError(f"frame format '{fmt}' | unknown; expected one of {', '.join(FORMATS)}")


def copy_video_frame(frame: Any, out: np.ndarray) -> None:
    """Copy a PyAV yuv420p ``VideoFrame``'s planes into ``out`` ((H * 3 / 2, W) uint8) without
    the intermediate arrays ``to_ndarray`` makes (one copy, straight into pinned memory)."""
    flat = out.reshape(-1)
    pos = 0
    for plane in frame.planes:
        w, h = plane.width, plane.height
        rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:h, :w]
        flat[pos:pos + w * h].reshape(h, w)[...] = rows
        pos += w * h


def fill_host(frames: Sequence[Any], fmt: str, out: np.ndarray) -> None:
    """Write decoded frames (numpy arrays in ``fmt`` or PyAV frames) into ``out[i]``."""
    for i, f in enumerate(frames):
        if isinstance(f, np.ndarray):
            if f.shape != out.shape[1:] or f.dtype != np.uint8:
                raise ValueError(f"frame {i} | got {f.dtype} {f.shape}; expected uint8 "
                                 f"{out.shape[1:]} ({fmt})")
            out[i] = f
        elif fmt == "yuv420p":
            if f.format.name != "yuv420p":  # other pixel formats: one swscale pass on the CPU
                f = f.reformat(format="yuv420p")
            copy_video_frame(f, out[i])
        else:
            out[i] = f.to_ndarray(format="bgr24")


class Transfer:
    """Uploads and downloads on their own streams, so they overlap the compute stream."""

    def __init__(self, device: Device):
        self.dev = device
        self.h2d = device.stream()
        self.d2h = device.stream()

    def upload(self, frames: Sequence[Any], fmt: str) -> tuple[Any, Any]:
        """Frames → (N, ...) uint8 device tensor and the event that marks the copy done."""
        shape = (len(frames),) + tuple(_shape_of(frames[0], fmt))
        host = self.dev.empty_host(shape)
        fill_host(frames, fmt, host.numpy())
        with self.dev.use(self.h2d):
            dev = host.to(self.dev.device, non_blocking=True)
            return dev, self.dev.record(self.h2d)

    def download(self, tensor, ready_event) -> np.ndarray:
        """Device uint8 tensor (after ``ready_event``) → host array; blocks this thread only.
        The array views pinned memory that goes back to torch's cache when it is dropped."""
        if not self.dev.cuda:
            return tensor.numpy()
        host = self.dev.empty_host(tuple(tensor.shape))
        self.dev.wait(self.d2h, ready_event)
        with self.dev.use(self.d2h):
            host.copy_(tensor, non_blocking=True)
            done = self.dev.record(self.d2h)
        done.synchronize()
        return host.numpy()


def _shape_of(frame: Any, fmt: str) -> tuple[int, ...]:
    if isinstance(frame, np.ndarray):
        return frame.shape
    return frame_shape(fmt, frame.height, frame.width)


# -- small host data, constants ---------------------------------------------------------------

def to_device(values: Any, device, dtype=None):
    """Small host data (indices, landmarks) → device tensor without a stream sync: a plain
    ``torch.tensor(..., device="cuda")`` copies synchronously and stalls the host until the
    GPU has drained its queue; a pinned intermediate copy with ``non_blocking`` does not."""
    torch = require_torch()
    t = torch.as_tensor(np.asarray(values), dtype=dtype)
    if torch.device(device).type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


_CONSTANTS: dict = {}


def const(values: tuple, like):
    """A constant tensor on ``like``'s device and dtype, made once (one copy ever)."""
    key = (values, str(like.device), like.dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = require_torch().tensor(values, dtype=like.dtype, device=like.device)
    return _CONSTANTS[key]


# -- colour conversion (device tensors) --------------------------------------------------------

def yuv_planes(yuv, height: int, width: int):
    """(N, H * 3 / 2, W) uint8 → views of Y (N, H, W), U and V (N, H / 2, W / 2)."""
    n = yuv.shape[0]
    flat = yuv.reshape(n, -1)
    a, q = height * width, height * width // 4
    return (flat[:, :a].view(n, height, width), flat[:, a:a + q].view(n, height // 2, width // 2),
            flat[:, a + q:a + 2 * q].view(n, height // 2, width // 2))


def yuv420_to_bgr(yuv, height: int, width: int):
    """(N, H * 3 / 2, W) uint8 → (N, 3, H, W) float32 BGR, integer-valued in [0, 255] (what a
    uint8 decode gives, so every later stage sees the values the CPU path sees)."""
    torch = require_torch()
    y, u, v = (p.float() for p in yuv_planes(yuv, height, width))
    y = (y - 16.0) * _Y_SCALE
    n = y.shape[0]
    # the chroma terms at chroma resolution, then each sample to its 2x2 block at once: a
    # broadcast view, no kernel that sizes its output on the host (``repeat_interleave`` does,
    # which a CUDA-graph capture refuses); 5 passes over the frame instead of 13 (0.67 ms a
    # 1080p frame on the H200 before)
    u, v = u - 128.0, v - 128.0
    (_, rv), (gu, gv), (bu, _) = _RGB_FROM_CBCR
    c = torch.stack([bu * u, gu * u + gv * v, rv * v], 1)  # (N, 3, H / 2, W / 2)
    c = c[:, :, :, None, :, None].expand(n, 3, height // 2, 2, width // 2, 2) \
        .reshape(n, 3, height, width)
    return c.add_(y[:, None]).round_().clamp_(0.0, 255.0)


def bgr_to_yuv420(bgr):
    """(N, 3, H, W) float BGR in [0, 255] → (N, H * 3 / 2, W) uint8; chroma is the mean of each
    2x2 block (computed on the averaged RGB: the matrix is linear)."""
    torch = require_torch()
    F = torch.nn.functional
    n, _, h, w = bgr.shape
    rgb = bgr.flip(1) / 255.0
    (yr, yg, yb), cb, cr = _YUV_FROM_RGB
    y = 16.0 + yr * rgb[:, 0] + yg * rgb[:, 1] + yb * rgb[:, 2]
    small = F.avg_pool2d(rgb, 2)
    u = 128.0 + cb[0] * small[:, 0] + cb[1] * small[:, 1] + cb[2] * small[:, 2]
    v = 128.0 + cr[0] * small[:, 0] + cr[1] * small[:, 1] + cr[2] * small[:, 2]
    planes = [p.round_().clamp_(0, 255).to(torch.uint8).reshape(n, -1) for p in (y, u, v)]
    return torch.cat(planes, 1).view(n, h * 3 // 2, w)


def merge_yuv420(new, old, alpha, height: int, width: int) -> None:
    """Write ``new`` into ``old`` (both packed yuv420p) only where ``alpha`` (N, 1, H, W) > 0
    (chroma: where any pixel of the 2x2 block is), so untouched pixels keep their exact bytes."""
    torch = require_torch()
    touched = alpha > 0
    chroma = torch.nn.functional.max_pool2d(touched.float(), 2) > 0
    for p_new, p_old, m in zip(yuv_planes(new, height, width), yuv_planes(old, height, width),
                               (touched[:, 0], chroma[:, 0], chroma[:, 0])):
        p_old.copy_(torch.where(m, p_new, p_old))


def hwc_to_nchw(frames):
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 (same channel order)."""
    return frames.permute(0, 3, 1, 2).float()


def nchw_to_hwc(frames):
    """(N, 3, H, W) float in [0, 255] → (N, H, W, 3) uint8, rounded."""
    torch = require_torch()
    return frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
