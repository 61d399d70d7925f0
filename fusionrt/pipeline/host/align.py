"""Face alignment: 5 landmarks → a similarity transform onto a named template → an aligned crop.

Every function is pure and returns the matrix it used, so paste-back can invert exactly that.
Landmark order everywhere: left eye, right eye, nose, left mouth corner, right mouth corner
(image left/right, as RetinaFace and ArcFace give them).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...errors import InputError


@dataclass(frozen=True)
class Template:
    """Five landmark positions in a square crop of side ``size`` (pixels)."""

    name: str
    points: np.ndarray  # (5, 2) float32, pixels at ``size``
    size: int

    def at(self, size: int) -> np.ndarray:
        """The points for a crop of side ``size`` (templates scale with the crop)."""
        return (self.points * (size / self.size)).astype(np.float32)


def _t(name: str, pts: list[list[float]], size: int) -> Template:
    arr = np.asarray(pts, np.float32)
    arr.setflags(write=False)
    return Template(name, arr, size)


# insightface ``arcface_dst`` (utils/face_align.py): ArcFace recognition crops.
ARCFACE_TEMPLATE_112 = _t("arcface_112", [
    [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
    [41.5493, 92.3655], [70.7299, 92.2041]], 112)

# insightface ``estimate_norm(lmk, 128)``: size % 128 == 0 → ratio = size/128, x shifted by
# 8·ratio. At 128 that is arcface_dst + (8, 0): the crop inswapper_128 was trained on.
ARCFACE_TEMPLATE_128 = _t("arcface_128", (ARCFACE_TEMPLATE_112.points + [8.0, 0.0]).tolist(), 128)

# FaceFusion face_helper ``arcface_112_v1`` (normalised ×112): insightface's older frontal
# template, used by SimSwap.
ARCFACE_TEMPLATE_112_V1 = _t("arcface_112_v1", [
    [39.7300, 51.1380], [72.2700, 51.1380], [56.0000, 68.4930],
    [42.4630, 87.0100], [69.5370, 87.0100]], 112)

# FaceFusion ``ffhq_512`` (normalised ×512): FFHQ-style crop, whole face plus some hair/chin.
FFHQ_TEMPLATE_512 = _t("ffhq_512", (np.array([
    [0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
    [0.39308822, 0.72541100], [0.61150205, 0.72490465]]) * 512).tolist(), 512)

# FaceFusion ``mtcnn_512`` (normalised ×512): the crop hififace_unofficial_256 was trained on.
MTCNN_TEMPLATE_512 = _t("mtcnn_512", (np.array([
    [0.36562865, 0.46733799], [0.63305391, 0.46585885], [0.50019127, 0.61942959],
    [0.39032951, 0.77598822], [0.61178945, 0.77476328]]) * 512).tolist(), 512)

TEMPLATES: dict[str, Template] = {t.name: t for t in (
    ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_128, ARCFACE_TEMPLATE_112_V1, FFHQ_TEMPLATE_512,
    MTCNN_TEMPLATE_512)}


def get_template(name: str | Template) -> Template:
    """A template by name; an unknown name lists the known ones."""
    if isinstance(name, Template):
        return name
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"template '{name}' | unknown; expected one of: "
                         f"{', '.join(TEMPLATES)}") from None


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto
    ``dst``: Umeyama (1991), closed form, the ``skimage.transform.SimilarityTransform`` that
    insightface's ``norm_crop`` uses, i.e. the alignment ArcFace and inswapper were trained with.

    Why not ``cv2.estimateAffinePartial2D(..., LMEDS)``: with 5 points LMEDS fits on a random
    minimal subset and scores by the median residual, so one poorly placed landmark (a mouth
    corner on a profile) can tilt the crop; the least-squares fit spreads error over all five,
    needs no sampling and is deterministic. Returns a (2, 3) float64 matrix.
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"landmarks | got {src.shape} and {dst.shape}; expected two (K, 2), K >= 2")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # no reflections
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var = (s0 ** 2).sum() / len(src)
    if var <= 0:
        raise ValueError("landmarks | all points coincide; expected a spread-out face")
    scale = (sig * d).sum() / var
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix."""
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (K, 2) points."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return p @ np.asarray(m, np.float64)[:, :2].T + np.asarray(m, np.float64)[:, 2]


def estimate_matrix(landmarks: np.ndarray, template: str | Template, size: int) -> np.ndarray:
    """The (2, 3) matrix taking frame landmarks onto ``template`` at ``size``×``size``."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (5, 2) or not np.isfinite(lm).all():
        raise InputError(f"landmarks | got shape {lm.shape}; expected finite (5, 2)")
    return estimate_similarity(lm, get_template(template).at(size))


def warp_face(image: np.ndarray, landmarks: np.ndarray, template: str | Template,
              size: int) -> tuple[np.ndarray, np.ndarray]:
    """Aligned ``size``×``size`` crop of the face and the frame→crop matrix that made it.

    Bilinear, zero border (insightface ``norm_crop``): the models saw black outside the frame.
    """
    m = estimate_matrix(landmarks, template, size)
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, m
