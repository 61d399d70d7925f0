"""Parity metrics: how close an engine's outputs are to the FP32 reference.

Cosine for embeddings, PSNR/SSIM for generated faces, IoU and pixel error for detections. Used by
the conformance tests, the quality gate of reduced-precision artifacts and ``--engine auto``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean row-wise cosine similarity of two (N, D) arrays (flattened per row)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float((num / den).mean())


def psnr(ref: np.ndarray, out: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole array; inf when identical."""
    mse = float(np.mean((np.asarray(ref, np.float64) - np.asarray(out, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range ** 2 / mse)


def ssim(ref: np.ndarray, out: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM (Gaussian window 11, sigma 1.5) over images laid out (..., C, H, W)."""
    import cv2
    ref = np.asarray(ref, np.float64).reshape(-1, *np.shape(ref)[-2:])
    out = np.asarray(out, np.float64).reshape(-1, *np.shape(out)[-2:])
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    vals = []
    for x, y in zip(ref, out):
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between (N, 4) and (M, 4) x1y1x2y2 boxes."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-12)


#: Metrics where a smaller value is better (checked with <=).
LOWER_IS_BETTER = frozenset({"max_abs", "landmark_err"})


@dataclass(frozen=True)
class Parity:
    """One comparison's figures; ``passed`` against the thresholds it was checked with."""

    metric: str
    value: float
    threshold: float
    passed: bool

    def __str__(self) -> str:
        op = "<=" if self.metric in LOWER_IS_BETTER else ">="
        return f"{self.metric} {self.value:.6g} ({'pass' if self.passed else 'FAIL'}: {op} " \
               f"{self.threshold:g})"


def check(metric: str, value: float, threshold: float) -> Parity:
    ok = value <= threshold if metric in LOWER_IS_BETTER else value >= threshold
    return Parity(metric, float(value), threshold, bool(ok))
