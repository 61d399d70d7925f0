"""Stand-ins for FaceFusion's face detectors (``models/facefusion_detectors.py``): the real
files' I/O contracts as FaceFusion 3.8.1 reads them, a cost near the published one, random
weights. Never a claim about the real models' output.

* ``scrfd_standin`` / ``retinaface10g_standin``: input (1, 3, H, W), H = W a multiple of 32;
  9 outputs in FaceFusion's index order — scores (K_s, 1) after a sigmoid, box distances
  (K_s, 4), landmark offsets (K_s, 10) for strides 8, 16, 32 — with K_s = 2 (H / s)^2 and rows
  in ``create_static_anchors`` order (row, column, anchor): NHWC flattening of 2-anchor heads,
  the batch folded in as in insightface's non-batched SCRFD exports. A conv pyramid (stride
  4 stem, three stages, top-down FPN, one head shared by the levels as in SCRFD), measured with
  ``profile`` at 640x640: scrfd 3.33 GFLOP, 0.76 M parameters (SCRFD-2.5GF: 2.5 GFLOPs at
  640x480 = 3.3 at 640x640, 0.82 M); retinaface_10g 13.26 GFLOP, 4.21 M (SCRFD-10GF: 10 at
  640x480 = 13.3, 4.23 M).
* ``yoloface_standin``: input (1, 3, 640, 640) in [0, 1]; output (1, 20, 8400) decoded in the
  graph as YOLOv8-face exports are: cx, cy, w, h in input pixels, a sigmoid score, 5 x (x, y,
  sigmoid visibility) per anchor of the 80², 40², 20² grids. Pyramid with SiLU and one head per
  level (YOLOv8 style): 8.81 GFLOP, 3.22 M parameters (YOLOv8n: 8.7 GFLOPs, 3.2 M).
"""

from __future__ import annotations

import torch
from torch import nn

from . import scaled

STRIDES = (8, 16, 32)
ANCHORS = 2  # per cell: FaceFusion's anchor_total
# Score bias at initialisation, as SCRFD (mmdet bias_init_with_prob(0.01)) and YOLO heads start:
# random weights then rarely pass a 0.5 threshold, so a synthetic detector finds few "faces".
PRIOR_BIAS = -4.595


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1,
                 act: type[nn.Module] = nn.ReLU):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), act())


class Pyramid(nn.Module):
    """Stem to stride 4, three stages (strides 8, 16, 32), top-down FPN to ``neck`` channels."""

    def __init__(self, stem: int, stages: tuple[int, int, int], depth: int, neck: int,
                 act: type[nn.Module]):
        super().__init__()
        self.stem = nn.Sequential(ConvBNAct(3, stem // 2, 3, 2, act),
                                  ConvBNAct(stem // 2, stem, 3, 2, act))
        chans = (stem,) + stages
        self.stages = nn.ModuleList(
            nn.Sequential(ConvBNAct(chans[i], chans[i + 1], 3, 2, act),
                          *(ConvBNAct(chans[i + 1], chans[i + 1], 3, 1, act) for _ in range(depth)))
            for i in range(3))
        self.lateral = nn.ModuleList(nn.Conv2d(c, neck, 1) for c in stages)
        self.smooth = nn.ModuleList(ConvBNAct(neck, neck, 3, 1, act) for _ in stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        lat = [m(f) for m, f in zip(self.lateral, feats)]
        for i in (1, 0):  # top-down: a 2x nearest upsample of the coarser level, added
            lat[i] = lat[i] + nn.functional.interpolate(lat[i + 1], scale_factor=2.0,
                                                        mode="nearest")
        return [m(f) for m, f in zip(self.smooth, lat)]


class SCRFDStandin(nn.Module):
    """9 outputs: scores, boxes, landmarks per stride (insightface SCRFD export layout)."""

    def __init__(self, stem: int, stages: tuple[int, int, int], depth: int, neck: int,
                 head_convs: int):
        super().__init__()
        self.pyramid = Pyramid(stem, stages, depth, neck, nn.ReLU)
        self.head = nn.Sequential(*(ConvBNAct(neck, neck) for _ in range(head_convs)))
        self.cls = nn.Conv2d(neck, ANCHORS, 3, 1, 1)
        self.reg = nn.Conv2d(neck, ANCHORS * 4, 3, 1, 1)
        self.kps = nn.Conv2d(neck, ANCHORS * 10, 3, 1, 1)
        nn.init.constant_(self.cls.bias, PRIOR_BIAS)

    @staticmethod
    def _rows(x: torch.Tensor, width: int) -> torch.Tensor:
        # (N, A*c, h, w) -> (N*h*w*A, c): row, column, anchor, as create_static_anchors
        return x.permute(0, 2, 3, 1).reshape(-1, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        heads = [self.head(f) for f in self.pyramid(x)]
        scores = [self._rows(torch.sigmoid(self.cls(h)), 1) for h in heads]
        boxes = [self._rows(self.reg(h), 4) for h in heads]
        points = [self._rows(self.kps(h), 10) for h in heads]
        return (*scores, *boxes, *points)


def scrfd_standin(width: float = 1.0) -> SCRFDStandin:
    """~3.3 GFLOP at 640x640 at width 1 (SCRFD-2.5GF's cost)."""
    return SCRFDStandin(scaled(32, width), (scaled(56, width), scaled(88, width),
                                            scaled(176, width)), 1, scaled(56, width), 2)


def retinaface10g_standin(width: float = 1.0) -> SCRFDStandin:
    """~13 GFLOP at 640x640 at width 1 (SCRFD-10GF, FaceFusion's retinaface_10g)."""
    return SCRFDStandin(scaled(48, width), (scaled(96, width), scaled(192, width),
                                            scaled(336, width)), 2, scaled(100, width), 2)


class YoloFaceStandin(nn.Module):
    """(N, 3, S, S) -> (N, 20, sum (S/s)^2), decoded in the graph."""

    def __init__(self, stem: int, stages: tuple[int, int, int], depth: int, neck: int):
        super().__init__()
        self.pyramid = Pyramid(stem, stages, depth, neck, nn.SiLU)
        self.heads = nn.ModuleList(
            nn.Sequential(ConvBNAct(neck, neck, 3, 1, nn.SiLU),
                          ConvBNAct(neck, neck, 3, 1, nn.SiLU), nn.Conv2d(neck, 20, 1))
            for _ in STRIDES)
        for head in self.heads:
            nn.init.constant_(head[-1].bias[4], PRIOR_BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for head, f, s in zip(self.heads, self.pyramid(x), STRIDES):
            t = head(f)
            n, _, h, w = t.shape
            gy, gx = torch.meshgrid(torch.arange(h, dtype=t.dtype, device=t.device),
                                    torch.arange(w, dtype=t.dtype, device=t.device),
                                    indexing="ij")
            grid = torch.stack([gx, gy])[None] + 0.5  # cell centres, (1, 2, h, w)
            xy = (grid + torch.tanh(t[:, 0:2])) * s
            wh = torch.sigmoid(t[:, 2:4]) * (16 * s)
            score = torch.sigmoid(t[:, 4:5])
            kps = t[:, 5:].reshape(n, 5, 3, h, w)
            kxy = (grid[:, None] + 2 * torch.tanh(kps[:, :, :2])) * s
            kps = torch.cat([kxy, torch.sigmoid(kps[:, :, 2:])], 2).reshape(n, 15, h, w)
            out.append(torch.cat([xy, wh, score, kps], 1).reshape(n, 20, h * w))
        return torch.cat(out, 2)


def yoloface_standin(width: float = 1.0) -> YoloFaceStandin:
    """~8.7 GFLOP at 640x640 at width 1 (YOLOv8n's cost)."""
    return YoloFaceStandin(scaled(32, width), (scaled(64, width), scaled(144, width),
                                               scaled(288, width)), 2, scaled(96, width))
