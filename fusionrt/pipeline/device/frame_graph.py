"""The live path's whole per-frame GPU work as one CUDA graph.

colour in → letterbox → detector → decode + NMS + "largest face" on fixed-size tensors → align
→ generator → paste → colour out, captured once per frame size and replayed per frame: no host
round trip inside the frame (the per-stage path copies its detections to the host to decide
what runs next) and no per-kernel launch cost, so a frame's GPU time no longer depends on how
busy the host's Python threads are (capture, encode).

What makes it capturable: detection keeps the ``TOP_K`` best anchors (a fixed shape) and runs
greedy NMS as a fixed number of tensor passes; the face is chosen on the GPU; a frame without a
face is pasted with weight 0 (its pixels keep their exact values). The detector and generator
engines run eagerly inside the capture (``Engine.capturable``), not with their own graphs.

Semantics of the per-stage path (``DeviceKernels`` with ``select="largest"``,
``detect_every=1``), which ``tests/test_live.py`` checks on CPU torch by running the same body
without capture. Off CUDA (CPU torch) the body simply runs eagerly.
"""

from __future__ import annotations

import logging
from typing import Any

from ..host.detect import VARIANCES
from . import require_torch
from .detect import box_iou
from .frames import bgr_to_yuv420, hwc_to_nchw, merge_yuv420, nchw_to_hwc, yuv420_to_bgr
from .paste import color_transfer
from .warp import invert_affine, sampling_theta, similarity_batch

log = logging.getLogger(__name__)

TOP_K = 128        # anchors kept before NMS: many anchors fire per face, a few faces per frame
NMS_PASSES = 16    # fixed-point passes of greedy NMS; exact when suppression chains are shorter


def largest_face(detector: Any, loc, conf, lmk, scale, height: int, width: int):
    """Batch-1 detector outputs → (box (1, 4), landmarks (1, 5, 2), found (1,) float) of the
    largest face after threshold and greedy NMS, as ``GpuDetector.postprocess`` then
    ``select_faces(..., "largest")`` choose it, in fixed-size tensor ops only."""
    torch = require_torch()
    scores = conf[0, :, 1]
    k = min(TOP_K, scores.shape[0])
    top, idx = torch.topk(scores, k)  # sorted, highest first: NMS order
    valid = top > detector.score_threshold
    pri = detector.priors[idx]
    v0, v1 = VARIANCES
    l = loc[0, idx]
    cxcy = pri[:, :2] + l[:, :2] * v0 * pri[:, 2:]
    wh = pri[:, 2:] * torch.exp(l[:, 2:] * v1)
    kx, ky = detector.input_size / scale[0], detector.input_size / scale[1]
    box = torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1)
    # Python scalars, not a constant tensor: nothing is copied from the host inside a capture
    box = torch.stack([box[:, 0] * kx, box[:, 1] * ky, box[:, 2] * kx, box[:, 3] * ky], 1)
    pts = pri[:, None, :2] + lmk[0, idx].view(-1, 5, 2) * v0 * pri[:, None, 2:]
    pts = torch.stack([pts[..., 0] * kx, pts[..., 1] * ky], -1)
    # greedy NMS: i survives iff valid and no surviving higher-scored j overlaps it; iterate
    # the rule from "all valid" (entry i is final once every j < i is)
    over = (box_iou(box, box) > detector.nms_threshold).triu(1)  # over[j, i], j < i
    keep = valid
    for _ in range(NMS_PASSES):
        keep = valid & ~(over & keep[:, None]).any(0)
    clamped = torch.stack([box[:, 0].clamp(0, width), box[:, 1].clamp(0, height),
                           box[:, 2].clamp(0, width), box[:, 3].clamp(0, height)], 1)
    area = (clamped[:, 2] - clamped[:, 0]).clamp(min=0) * (clamped[:, 3] - clamped[:, 1]).clamp(min=0)
    area = torch.where(keep, area, area.new_full((), -1.0))
    # first of equal maxima: score order, as max() on the host; index_select, since indexing
    # with a 0-d tensor reads it on the host
    best = torch.argmax(area).reshape(1)
    found = keep.any().to(box.dtype).reshape(1)
    return clamped.index_select(0, best), pts.index_select(0, best), found


class FrameGraph:
    """One frame size's captured graph over ``kernels`` (a ``DeviceKernels``) for one source
    latent. ``run(raw)`` swaps the largest face of a batch-1 frame in place and returns the
    number of faces swapped (0 or 1; reading it waits for the frame)."""

    def __init__(self, kernels: Any, fmt: str, height: int, width: int):
        torch = self.torch = require_torch()
        self.k, self.fmt, self.height, self.width = kernels, fmt, height, width
        d = kernels.dev.device
        shape = (1, height * 3 // 2, width) if fmt == "yuv420p" else (1, height, width, 3)
        self.raw = torch.zeros(shape, dtype=torch.uint8, device=d)
        self.latent = None
        self.source: Any = None  # the latent tensor last copied in (by identity)
        self.found = None
        self.graph = None
        self.error = ""  # why capture failed, if it did

    def set_latent(self, latent) -> None:
        """Use ``latent`` (a source's generator vector); copied into the static buffer the
        captured graph reads only when it is another tensor than the last one."""
        if latent is self.source:
            return
        lat = latent.reshape(1, -1).float()
        if self.latent is None:
            self.latent = lat.clone()
        else:
            self.latent.copy_(lat)
        self.source = latent

    def body(self) -> None:
        """The frame's work on the static buffers (captured, or run eagerly off CUDA)."""
        torch, k, h, w = self.torch, self.k, self.height, self.width
        F = torch.nn.functional
        frames = yuv420_to_bgr(self.raw, h, w) if self.fmt == "yuv420p" else hwc_to_nchw(self.raw)
        x, scale = k.detector.letterbox(frames)
        loc, conf, lmk = k.detector.run_net(x)
        _, pts, found = largest_face(k.detector, loc, conf, lmk, scale, h, w)
        # a frame without a face: any finite landmarks (its paste weight is 0)
        pts = torch.where(found.view(1, 1, 1) > 0, pts, k.tpl_swap.to(pts.dtype)[None])
        mats = similarity_batch(pts, k.tpl_swap)
        size = k.neural.size
        theta = sampling_theta(invert_affine(mats), (h, w), (size, size))
        grid = F.affine_grid(theta, [1, 3, size, size], align_corners=False)
        crops = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False).round().clamp(0, 255)
        faces = k._generate(crops, self.latent)
        theta = sampling_theta(mats, (size, size), (h, w))
        grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
        face = F.grid_sample(faces, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)
        mask = (k.mask.to(frames.dtype) * found.to(frames.dtype)).expand(1, 1, size, size)
        a = F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False).clamp(0.0, 1.0)
        if k.settings.color_transfer:
            face = color_transfer(face.round(), frames, a)
        out = torch.where(a > 0, torch.round(face * a + frames * (1.0 - a)).clamp(0.0, 255.0),
                          frames)
        if self.fmt == "yuv420p":
            merge_yuv420(bgr_to_yuv420(out), self.raw, a, h, w)
        else:
            self.raw.copy_(nchw_to_hwc(out))
        if self.found is None:
            self.found = found.clone()
        else:
            self.found.copy_(found)

    def capture(self) -> None:
        """Warm up (cuDNN autotuning and lazy init stay out of the graph), then capture."""
        torch = self.torch
        if not self.k.dev.cuda:
            return
        stream = self.k.compute
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.body()
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            try:
                # thread_local: the live loop's capture and output threads may touch CUDA now
                with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                    self.body()
            except RuntimeError as e:
                log.warning("frame graph | capture failed (%s); the frame's work runs eagerly",
                            str(e).splitlines()[0][:200])
                self.error = str(e).splitlines()[0][:200]
                stream.synchronize()
                return
        stream.synchronize()
        self.graph = graph

    def run(self, raw) -> int:
        """Swap the frame ``raw`` (1, …) in place on the compute stream → faces swapped."""
        self.raw.copy_(raw, non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.body()
        raw.copy_(self.raw, non_blocking=True)
        return int(self.found.item())
