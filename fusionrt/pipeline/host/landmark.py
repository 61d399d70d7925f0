"""68-point landmarks after detection: FaceFusion 3.8.1's ``2dfan4`` on a box-centred crop, and
the 5 alignment points taken from the 68 when the landmarker is confident.

Pre- and post-processing copy ``facefusion/face_landmarker.py`` ``detect_with_2dfan4`` (crop by
``warp_face_by_translation``, upright by ``create_rotation_matrix_and_size``,
``conditional_optimize_contrast``, / 255; points = out[:, :, :2] / 64 * 256 mapped back through
both warps; score = interp(mean of the heatmap maxima, [0, 0.9], [0, 1])) and
``facefusion/face_creator.py`` ``create_faces`` (landmark_set '5/68': the 5 points become
``convert_to_face_landmark_5`` of the 68 when the score beats ``--face-landmarker-score``).

One difference, on purpose: FaceFusion's face angle comes from a second model (``fan_68_5``
guesses 68 points from the detector's 5; ``estimate_face_angle`` reads its jaw line, points 0
and 16). Here the angle is read from the 5 points' eye line, which is parallel to the jaw line on
a face; both are snapped to the nearest multiple of 90 degrees, so they differ only for faces
tilted near 45 degrees.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import cv2
import numpy as np

from ...engines.base import Engine
from ...errors import InputError, ModelError
from ..types import Face

BOX_SCALE = 195.0       # detect_with_2dfan4: the box's longer side becomes 195 of the 256 px
SCORE_FULL = 0.9        # numpy.interp(score, [0, 0.9], [0, 1])
DARK_L = 30             # conditional_optimize_contrast: CLAHE on L when mean L < 30
CLAHE_CLIP = 2          # cv2.createCLAHE(clipLimit = 2)
LANDMARKER_SCORE = 0.5  # facefusion/program.py --face-landmarker-score default
ANGLES = np.linspace(0, 360, 5)  # estimate_face_angle snaps to these


def translation_matrix(box: np.ndarray, size: int) -> np.ndarray:
    """Frame → crop (2, 3) float64: the box's longer side scaled to 195 px, its centre at the
    crop's centre (``detect_with_2dfan4`` + ``warp_face_by_translation``)."""
    box = np.asarray(box)  # in its own dtype, as FaceFusion computes (float32 boxes: float32)
    scale = BOX_SCALE / np.subtract(box[2:], box[:2]).max().clip(1, None)
    translation = (size - np.add(box[2:], box[:2]) * scale) * 0.5
    return np.array([[scale, 0, translation[0]], [0, scale, translation[1]]])


def face_angle(landmarks5: np.ndarray) -> int:
    """0, 90, 180 or 270: the eye line's direction snapped as ``estimate_face_angle`` snaps the
    jaw line's (see the module docstring)."""
    (x1, y1), (x2, y2) = np.asarray(landmarks5, np.float64)[:2]
    theta = np.degrees(np.arctan2(y2 - y1, x2 - x1)) % 360
    return int(ANGLES[np.argmin(np.abs(ANGLES - theta))] % 360)


def rotation_matrix(angle: float, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``create_rotation_matrix_and_size``: the crop turned by ``angle`` about its centre, in a
    canvas that holds all of it."""
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1)
    rsize = np.dot(np.abs(matrix[:, :2]), (size, size))
    matrix[:, -1] += (rsize - size) * 0.5
    return matrix, (int(rsize[0]), int(rsize[1]))


def optimize_contrast(crop: np.ndarray) -> np.ndarray:
    """``conditional_optimize_contrast``, byte for byte: a round trip through OpenCV's 8-bit Lab
    (with FaceFusion's RGB flags on a BGR crop), CLAHE on L when the crop is dark."""
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2Lab)
    if np.mean(lab[:, :, 0]) < DARK_L:
        lab[:, :, 0] = cv2.createCLAHE(clipLimit=CLAHE_CLIP).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return cv2.transform(points.reshape(-1, 1, 2), matrix).reshape(-1, 2)


def landmarks_68_to_5(points: np.ndarray) -> np.ndarray:
    """``convert_to_face_landmark_5``: eye centres (36-41, 42-47), nose tip 30, mouth corners 48
    and 54 — the detector's order (image-left eye first on an upright face)."""
    return np.array([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48],
                     points[54]])


def scores_from_peaks(peaks: np.ndarray) -> np.ndarray:
    """(K, 68) heatmap maxima → (K,) landmarker scores in [0, 1]."""
    return np.interp(np.asarray(peaks, np.float64).mean(1), [0, SCORE_FULL], [0, 1])


def check_faces(faces: Sequence[Face]) -> None:
    for f in faces:
        box, lm = np.asarray(f.box, np.float64), np.asarray(f.landmarks, np.float64)
        if box.shape != (4,) or lm.shape != (5, 2):
            raise InputError(f"face | got box shape {box.shape}, landmarks shape {lm.shape}; "
                             "expected (4,) and (5, 2)")
        if not (np.isfinite(box).all() and np.isfinite(lm).all()):
            raise InputError(f"face | got box {box.tolist()} and landmarks with NaN or inf; "
                             "expected finite values")


def check_frame(frame) -> None:
    if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3
            and frame.shape[2] == 3):
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else \
            type(frame).__name__
        raise InputError(f"image | got {got}; expected uint8 (H, W, 3) BGR")


class Landmarker:
    """A ``landmark`` model (the 2dfan4 contract) on any engine: one engine call for every face
    of a frame or a batch of frames.

    Args:
        engine: loaded engine whose spec has task ``landmark``.
        threshold: the 5 points are replaced when the score is above it (FaceFusion: >).
    """

    def __init__(self, engine: Engine, threshold: float = LANDMARKER_SCORE):
        spec = engine.spec
        self.engine, self.threshold = engine, float(threshold)
        self.size = check_landmark_spec(spec)
        self.input_name = spec.inputs[0].name
        self.points_name, self.heatmaps_name = (t.name for t in spec.outputs)

    def prepare(self, frame: np.ndarray, faces: Sequence[Face]
                ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """(K, 3, S, S) float32 model input and each face's (translation, rotation) matrices."""
        check_frame(frame)
        check_faces(faces)
        crops, mats = [], []
        for f in faces:
            m = translation_matrix(f.box, self.size)
            r, rsize = rotation_matrix(face_angle(f.landmarks), self.size)
            crop = cv2.warpAffine(frame, m, (self.size, self.size))
            crops.append(optimize_contrast(cv2.warpAffine(crop, r, rsize)))
            mats.append((m, r))
        x = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        return np.ascontiguousarray(x), mats

    def run(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(K, 68, 2) grid points and (K, 68) heatmap maxima, numpy."""
        out = self.engine.run({self.input_name: x})
        pts, heat = (np.asarray(_numpy(out[n]), np.float32)
                     for n in (self.points_name, self.heatmaps_name))
        return check_outputs(self.engine.spec, pts, heat, len(x))

    def decode(self, grid_points: np.ndarray, peaks: np.ndarray,
               mats: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """(K, 68, 2) frame points and (K,) scores from the model's grid points and peaks."""
        side = peaks_grid(self.engine.spec)
        pts = [transform_points(transform_points(g / side * self.size,
                                                 cv2.invertAffineTransform(r)),
                                cv2.invertAffineTransform(m))
               for g, (m, r) in zip(grid_points, mats)]
        return np.stack(pts).astype(np.float32), scores_from_peaks(peaks)

    def apply(self, faces: Sequence[Face], points: np.ndarray, scores: np.ndarray) -> list[Face]:
        """The faces with ``landmarks68`` and the 68's 5 points where the score beats the
        threshold; the others as they came."""
        return [replace(f, landmarks=landmarks_68_to_5(p).astype(np.float32), landmarks68=p)
                if s > self.threshold else f for f, p, s in zip(faces, points, scores)]

    def refine(self, frame: np.ndarray, faces: Sequence[Face]) -> list[Face]:
        """``faces`` of one BGR uint8 frame, refined (one engine call)."""
        return self.refine_batch([frame], [faces])[0]

    def refine_batch(self, frames: Sequence[np.ndarray], faces: Sequence[Sequence[Face]]
                     ) -> list[list[Face]]:
        """Every frame's faces refined with one engine call for all of them."""
        if len(frames) != len(faces):
            raise InputError(f"landmarks | got {len(frames)} frames and {len(faces)} face lists; "
                             "expected one list per frame")
        flat = [(i, f) for i, fl in enumerate(faces) for f in fl]
        if not flat:
            return [list(fl) for fl in faces]
        xs, mats = [], []
        for i, fl in enumerate(faces):
            if fl:
                x, m = self.prepare(frames[i], fl)
                xs.append(x)
                mats += m
        grid_points, peaks = self.run(np.concatenate(xs))
        refined = iter(self.apply([f for _, f in flat], *self.decode(grid_points, peaks, mats)))
        return [[next(refined) for _ in fl] for fl in faces]


def peaks_grid(spec) -> int:
    """The heatmaps' side (64 for 2dfan4's 256 input)."""
    return int(spec.outputs[1].shape[-1])


def check_landmark_spec(spec) -> int:
    """The crop size of a ``landmark`` spec with 2dfan4's contract; ``ModelError`` otherwise."""
    shape = spec.inputs[0].shape if len(spec.inputs) == 1 else ()
    outs = [t.shape for t in spec.outputs]
    ok = (spec.task == "landmark" and len(shape) == 4 and shape[1] == 3
          and isinstance(shape[2], int) and shape[2] == shape[3] and len(outs) == 2
          and len(outs[0]) == 3 and len(outs[1]) == 4 and outs[0][1] == outs[1][1] == 68
          and isinstance(outs[1][-1], int) and outs[1][-1] == outs[1][-2])
    if not ok:
        raise ModelError(f"model '{spec.name}' | task '{spec.task}', input {shape}, outputs "
                         f"{outs}; expected a landmark model: input (N, 3, S, S), outputs "
                         "(N, 68, >=2) points and (N, 68, G, G) heatmaps")
    return int(shape[2])


def check_output_shapes(spec, pts_shape: tuple, heat_shape: tuple, k: int) -> None:
    """``ModelError`` naming the output unless the points are (K, 68, >=2) and the heatmaps
    (K, 68, G, G)."""
    g = peaks_grid(spec)
    pts_shape, heat_shape = tuple(pts_shape), tuple(heat_shape)
    if len(pts_shape) != 3 or pts_shape[:2] != (k, 68) or pts_shape[2] < 2:
        raise ModelError(f"output '{spec.outputs[0].name}' | got shape {pts_shape}; "
                         f"expected ({k}, 68, >=2)")
    if heat_shape != (k, 68, g, g):
        raise ModelError(f"output '{spec.outputs[1].name}' | got shape {heat_shape}; "
                         f"expected ({k}, 68, {g}, {g})")


def check_outputs(spec, pts: np.ndarray, heat: np.ndarray, k: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(K, 68, 2) points and (K, 68) heatmap maxima, after checking the outputs' shapes."""
    check_output_shapes(spec, pts.shape, heat.shape, k)
    return pts[:, :, :2], heat.max(axis=(2, 3))


def _numpy(a):
    """Engine outputs may be torch tensors (ort-cuda IOBinding, torch engines)."""
    return a.detach().cpu().numpy() if hasattr(a, "detach") else a
