"""FaceFusion 3.8.1's face masks on the host (numpy / OpenCV): box, occlusion (XSeg), area (68
landmarks) and region (BiSeNet), each a (S, S) float32 weight in [0, 1] on the swap crop, and
their combination.

Each function copies ``facefusion/face_masker.py`` (the function named in its docstring); the
choices and defaults are ``facefusion/choices.py`` and ``facefusion/program.py``
(``--face-mask-blur`` 0.3, ``--face-mask-padding`` 0 0 0 0, all areas, all regions,
``--face-occluder-model`` xseg_1, ``--face-parser-model`` bisenet_resnet_34, mask types
``box``). ``processors/modules/face_swapper/core.py`` ``swap_face`` says which crop each mask
is made on: box and occlusion on the target crop before the swap, area and region on the
swapped crop (area with the 68 landmarks moved into the crop by the swap's matrix); the masks
are combined by ``numpy.minimum.reduce(masks).clip(0, 1)`` and used as paste-back's mask.

The one difference from FaceFusion is batching: the models run once for all K crops (a batch
axis) where FaceFusion runs them one crop at a time; each crop's mask is the same.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

from ...engines.base import Engine
from ...errors import InputError, ModelError
from .paste import box_mask as feathered_box

MASK_TYPES = ("box", "occlusion", "area", "region")
# facefusion/choices.py face_mask_region_set: region -> BiSeNet (CelebAMask-HQ) class id
REGIONS: dict[str, int] = {
    "skin": 1, "left-eyebrow": 2, "right-eyebrow": 3, "left-eye": 4, "right-eye": 5,
    "glasses": 6, "nose": 10, "mouth": 11, "upper-lip": 12, "lower-lip": 13}
# facefusion/choices.py face_mask_area_set: area -> indices into the 68 landmarks
AREAS: dict[str, tuple[int, ...]] = {
    "upper-face": (0, 1, 2, 31, 32, 33, 34, 35, 14, 15, 16, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                   17),
    "lower-face": (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 35, 34, 33, 32, 31),
    "mouth": (48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67)}
OCCLUDER_MODELS = ("many", "xseg_1", "xseg_2", "xseg_3")  # 'many': the minimum of all three
PARSER_MODELS = ("bisenet_resnet_18", "bisenet_resnet_34")
DEFAULT_BLUR = 0.3                 # --face-mask-blur
DEFAULT_PADDING = (0, 0, 0, 0)     # --face-mask-padding: top, right, bottom, left, in %
SOFTEN_SIGMA = 5                   # the fixed blur of the occlusion, area and region masks
PARSER_CLASSES = 19


def _names(kind: str, given: Iterable[str] | str, valid: Sequence[str]) -> tuple[str, ...]:
    got = (given,) if isinstance(given, str) else tuple(given)
    bad = [g for g in got if g not in valid]
    if bad or not got:
        what = f"'{bad[0]}' is unknown" if bad else "none given"
        raise InputError(f"{kind} {list(got)} | {what}; expected one or more of: "
                         f"{', '.join(valid)}")
    return tuple(dict.fromkeys(got))


def check_mask_types(types: Iterable[str] | str) -> tuple[str, ...]:
    """The mask types, validated (FaceFusion's ``--face-mask-types`` choices)."""
    return _names("mask types", types, MASK_TYPES)


def check_regions(regions: Iterable[str] | str) -> tuple[str, ...]:
    """The regions, validated (``--face-mask-regions``)."""
    return _names("mask regions", regions, tuple(REGIONS))


def check_areas(areas: Iterable[str] | str) -> tuple[str, ...]:
    """The areas, validated (``--face-mask-areas``)."""
    return _names("mask areas", areas, tuple(AREAS))


def occluder_models(name: str) -> tuple[str, ...]:
    """The zoo models behind ``--face-occluder-model`` ``name`` ('many' = all three xseg)."""
    if name not in OCCLUDER_MODELS:
        raise InputError(f"occluder model '{name}' | unknown; expected one of: "
                         f"{', '.join(OCCLUDER_MODELS)}")
    return OCCLUDER_MODELS[1:] if name == "many" else (name,)


def normalize_padding(values: Sequence[int] | int) -> tuple[int, int, int, int]:
    """1 to 4 percentages -> (top, right, bottom, left), as FaceFusion's ``normalize_space``
    (``facefusion/normalizer.py``); each must be in 0..100 (``face_mask_padding_range``)."""
    v = [values] if isinstance(values, (int, np.integer)) else list(values)
    if not 1 <= len(v) <= 4 or any(not isinstance(x, (int, np.integer)) or not 0 <= x <= 100
                                   for x in v):
        raise InputError(f"mask padding {v} | expected 1 to 4 integers in 0..100 "
                         "(top, right, bottom, left)")
    v = [int(x) for x in v]
    return tuple({1: v * 4, 2: v * 2, 3: v + v[1:2], 4: v}[len(v)])  # type: ignore[return-value]


def check_blur(blur: float) -> float:
    """``--face-mask-blur``, in 0..1 (``face_mask_blur_range``)."""
    if not 0.0 <= float(blur) <= 1.0:
        raise InputError(f"mask blur {blur} | out of range; expected 0 <= blur <= 1")
    return float(blur)


# -- box ---------------------------------------------------------------------------------------

def box_mask(size: int, blur: float = DEFAULT_BLUR,
             padding: Sequence[int] = DEFAULT_PADDING) -> np.ndarray:
    """face_masker.py ``create_box_mask`` for a size x size crop: 1 inside, the edges (at least
    blur/4 of the side, or ``padding`` % of it: top, right, bottom, left) 0, Gaussian-blurred by
    sigma = int(size * 0.5 * blur) / 4."""
    blur = check_blur(blur)
    pad = normalize_padding(padding)
    if int(size) < 1:
        raise InputError(f"mask size {size} | expected a positive crop side")
    w = h = int(size)
    blur_amount = int(w * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    m = np.ones((w, h), np.float32)
    m[:max(blur_area, int(h * pad[0] / 100)), :] = 0
    m[-max(blur_area, int(h * pad[2] / 100)):, :] = 0
    m[:, :max(blur_area, int(w * pad[3] / 100))] = 0
    m[:, -max(blur_area, int(w * pad[1] / 100)):] = 0
    if blur_amount > 0:
        m = cv2.GaussianBlur(m, (0, 0), blur_amount * 0.25)
    return m


def paste_box(s, size: int) -> np.ndarray:
    """The box part of the swap's paste mask for settings ``s`` at crop side ``size``:
    FaceFusion's ``create_box_mask`` when ``s.facefusion_box``, else fusionrt's feathered box
    (``paste.box_mask``, paste-back's default mask)."""
    if s.facefusion_box:
        return box_mask(size, s.box_blur, s.mask_padding)
    return feathered_box(size, s.feather)


def soften(mask: np.ndarray) -> np.ndarray:
    """FaceFusion's finishing of the occlusion, area and region masks:
    (GaussianBlur(clip(m, 0, 1), sigma 5).clip(0.5, 1) - 0.5) * 2 (hard edges become a ramp
    that reaches 0 where the mask was about half covered)."""
    m = cv2.GaussianBlur(np.asarray(mask, np.float32).clip(0, 1), (0, 0), SOFTEN_SIGMA)
    return (m.clip(0.5, 1) - 0.5) * 2


def _crops(crops: Sequence[np.ndarray]) -> tuple[list[np.ndarray], int]:
    crops = list(crops)
    if not crops:
        raise InputError("mask crops | got none; expected one or more (S, S, 3) BGR crops")
    size = crops[0].shape[0]
    for c in crops:
        if c.ndim != 3 or c.shape != (size, size, 3):
            raise InputError(f"mask crops | got shapes {sorted({c.shape for c in crops})}; "
                             "expected equal square (S, S, 3) BGR crops")
    return crops, size


def check_model(engine: Engine, task: str, what: str) -> None:
    spec = engine.spec
    if spec.task != task or spec.preprocess.size is None:
        raise ModelError(f"model '{spec.name}' | task '{spec.task}'; expected a {what} "
                         f"(task '{task}')")


# -- occlusion ---------------------------------------------------------------------------------

class Occluder:
    """face_masker.py ``create_occlusion_mask`` over one or more XSeg engines ('many' = all
    three: the per-crop minimum), each run once for all crops."""

    def __init__(self, engine: Engine | Sequence[Engine]) -> None:
        self.engines = [engine] if isinstance(engine, Engine) else list(engine)
        if not self.engines:
            raise ModelError("occluder | got no engine; expected one or more xseg engines")
        for e in self.engines:
            check_model(e, "occlude", "face occluder (xseg)")

    def raw(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(K, S, S): the minimum over the models of each clipped, resized model mask, before
        ``soften``."""
        crops, size = _crops(crops)
        out = None
        for e in self.engines:
            w, h = e.spec.preprocess.size
            # cv2.resize in the crop's dtype (FaceFusion's target crop is uint8), float32 / 255
            x = np.stack([cv2.resize(c, (w, h)) for c in crops]).astype(np.float32) / 255.0
            y = np.asarray(e.run({e.inputs[0].name: x})[e.outputs[0].name], np.float32)
            if y.shape != (len(crops), h, w, 1):
                raise ModelError(f"output '{e.outputs[0].name}' | got shape {y.shape}; "
                                 f"expected {(len(crops), h, w, 1)}")
            m = np.stack([cv2.resize(y[k, :, :, 0].clip(0, 1).astype(np.float32), (size, size))
                          for k in range(len(crops))])
            out = m if out is None else np.minimum(out, m)
        return out

    def masks(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(K, S, S) float32 occlusion masks of K target crops (BGR, (S, S, 3))."""
        return np.stack([soften(m) for m in self.raw(crops)])


# -- region ------------------------------------------------------------------------------------

class FaceParser:
    """face_masker.py ``create_region_mask`` over a BiSeNet engine, run once for all crops."""

    def __init__(self, engine: Engine, regions: Iterable[str] | str = tuple(REGIONS)) -> None:
        check_model(engine, "parse", "face parser (bisenet)")
        self.engine = engine
        self.regions = check_regions(regions)
        self.class_ids = np.array([REGIONS[r] for r in self.regions])
        p = engine.spec.preprocess
        # FaceFusion's constants: (x / 255 - mean) / std with mean/std per unit, RGB
        self.mean = (np.asarray(p.mean, np.float64) / 255.0).astype(np.float32)
        self.std = (np.asarray(p.std, np.float64) / 255.0).astype(np.float32)

    def prepare(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(K, 3, 512, 512) model input, as FaceFusion builds it for each crop."""
        crops, _ = _crops(crops)
        w, h = self.engine.spec.preprocess.size
        x = np.stack([cv2.resize(c, (w, h))[:, :, ::-1].astype(np.float32) / 255.0
                      for c in crops])
        x = np.divide(np.subtract(x, self.mean), self.std)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def labels(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(K, 512, 512) class index per pixel (argmax over the logits)."""
        e = self.engine
        x = self.prepare(crops)
        y = np.asarray(e.run({e.inputs[0].name: x})[e.outputs[0].name])
        h, w = x.shape[2:]
        if y.ndim != 4 or y.shape[0] != x.shape[0] or y.shape[2:] != (h, w) \
                or y.shape[1] < PARSER_CLASSES:
            raise ModelError(f"output '{e.outputs[0].name}' | got shape {y.shape}; expected "
                             f"{(x.shape[0], PARSER_CLASSES, h, w)}")
        return y.argmax(1)

    def masks(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(K, S, S) float32 region masks of K swapped crops (BGR, (S, S, 3), uint8 or float)."""
        crops, size = _crops(crops)
        sel = np.isin(self.labels(crops), self.class_ids)
        return np.stack([soften(cv2.resize(m.astype(np.float32), (size, size))) for m in sel])


# -- area --------------------------------------------------------------------------------------

def check_landmarks68(points: np.ndarray) -> np.ndarray:
    """``points`` as (68, 2) finite crop coordinates, or a one-line ``InputError``."""
    p = np.asarray(points)
    if p.shape != (68, 2) or not np.issubdtype(p.dtype, np.number) or not np.isfinite(p).all():
        got = f"shape {p.shape}" if p.shape != (68, 2) else "NaN, inf or non-numbers"
        raise InputError(f"landmarks68 | got {got}; expected (68, 2) finite crop coordinates")
    return p


def to_crop(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Frame points (N, 2) -> crop points through the frame->crop (2, 3) matrix, as swap_face
    moves the 68 landmarks (``cv2.transform``)."""
    p = np.asarray(points, np.float64).reshape(1, -1, 2)
    return cv2.transform(p, np.asarray(matrix, np.float64)).reshape(-1, 2)


def area_points(areas: Iterable[str] | str) -> list[int]:
    """The landmark indices of ``areas`` in FaceFusion's order (duplicates kept, as there)."""
    return [i for a in check_areas(areas) for i in AREAS[a]]


def area_mask(size: int, landmarks68: np.ndarray,
              areas: Iterable[str] | str = tuple(AREAS)) -> np.ndarray:
    """face_masker.py ``create_area_mask``: the convex hull of the areas' landmarks (crop
    coordinates, truncated to int32) filled with 1, then ``soften``."""
    pts = check_landmarks68(landmarks68)[area_points(areas)].astype(np.int32)
    m = np.zeros((int(size), int(size)), np.float32)
    cv2.fillConvexPoly(m, cv2.convexHull(pts), 1.0)  # type: ignore[call-overload]
    return soften(m)


# -- combination -------------------------------------------------------------------------------

def combine(masks: Sequence[np.ndarray]) -> np.ndarray:
    """swap_face's ``numpy.minimum.reduce(crop_masks).clip(0, 1)``: every mask must agree."""
    masks = list(masks)
    if not masks:
        raise InputError("masks | got none to combine; expected one or more")
    shapes = {np.shape(m) for m in masks}
    if len(shapes) != 1:
        raise InputError(f"masks | got shapes {sorted(shapes)}; expected one shape")
    return np.minimum.reduce([np.asarray(m, np.float32) for m in masks]).clip(0, 1)
