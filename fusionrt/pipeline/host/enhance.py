"""Face enhancement on the host (numpy/OpenCV): FaceFusion 3.8.1's face enhancer
(``facefusion/processors/modules/face_enhancer/core.py``) over any engine of a task
``"enhance"`` spec (GFPGAN, GPEN-BFR, CodeFormer, RestoreFormer++; zoo
``facefusion_enhancers``).

Per face, as ``enhance_face`` does: align on the spec's template at its size, a box mask
(``face_masker.py`` ``create_box_mask`` with ``--face-mask-blur``, no padding:
``host.masks.box_mask``) optionally intersected with extra masks (``numpy.minimum``), the
model (``prepare_crop_frame`` / ``forward`` / ``normalize_crop_frame``), paste-back with that
mask, then ``blend_paste_frame``: ``cv2.addWeighted(frame, 1 - blend, pasted, blend, 0)``.

Where fusionrt differs, on purpose: all faces of a frame go through ONE engine call, so every
crop is taken from the input frame (FaceFusion crops face k from the frame with faces < k
already enhanced: the same pixels unless two faces' crops overlap); the alignment is
``align.warp_face`` (least-squares similarity, black border; FaceFusion: RANSAC fit, replicated
border: the same crop for a face inside the frame, <= 1 level) and paste-back rounds where
FaceFusion truncates. Measured against a FaceFusion oracle (tests/test_enhancers.py): <= 1
level, but for a handful of values at 2 (24 of 4 M for one 512 face).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np

from ...engines.base import Engine
from ...errors import InputError, ModelError
from ..types import Face
from .align import invert, warp_face
from .embed import to_tensor
from .masks import box_mask
from .paste import paste_back

# crops (list of (S, S, 3) BGR uint8) -> (K, S, S) float32 weights in [0, 1]
ExtraMask = Callable[[list], np.ndarray]




def check_unit(name: str, value: float) -> float:
    """``value`` as a float in [0, 1], else an ``InputError`` naming the setting."""
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise InputError(f"{name} {value!r} | out of range; expected 0 <= {name} <= 1")
    return v


def enhance_spec(engine: Engine):
    """The engine's spec if it is a face enhancer's, else a ``ModelError``."""
    s = engine.spec
    names = {t.name for t in s.inputs}
    if s.task != "enhance" or s.template is None or s.preprocess.size is None \
            or "input" not in names or not names <= {"input", "weight"}:
        raise ModelError(f"model '{s.name}' | task {s.task!r}, inputs {sorted(names)}; expected "
                         "an enhance model with a template, a fixed size and inputs 'input' "
                         "(+ 'weight')")
    return s


@dataclass
class FaceEnhancer:
    """FaceFusion's face enhancer on the host.

    Args:
        engine: a loaded engine of a task ``"enhance"`` spec.
        blend: ``--face-enhancer-blend`` / 100: 1 pastes the enhanced face fully, 0 not at all.
        weight: ``--face-enhancer-weight``, fed as 'weight' where the model has one
            (CodeFormer); ignored otherwise.
        mask_blur: ``--face-mask-blur`` for the box mask.
    """

    engine: Engine
    blend: float = 0.8
    weight: float = 0.5
    mask_blur: float = 0.3
    box: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.spec = enhance_spec(self.engine)
        self.blend = check_unit("face enhancer blend", self.blend)
        self.weight = check_unit("face enhancer weight", self.weight)
        self.mask_blur = check_unit("face mask blur", self.mask_blur)
        self.size = int(self.spec.preprocess.size[0])
        self.template = self.spec.template
        self.has_weight = any(t.name == "weight" for t in self.spec.inputs)
        self.output_name = self.spec.outputs[0].name
        self.box = box_mask(self.size, self.mask_blur)  # create_box_mask, no padding
        self.chunk = self.engine.max_batch  # a file exported for one face: chunks of 1

    def enhance_crops(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Aligned BGR uint8 crops → enhanced BGR uint8 crops; one engine call for all (or one
        per fixed-batch chunk where the graph takes fewer)."""
        if len(crops) == 0:
            return []
        for c in crops:
            if c.shape != (self.size, self.size, 3) or c.dtype != np.uint8:
                raise InputError(f"crop | got {c.dtype} {c.shape}; expected uint8 "
                                 f"({self.size}, {self.size}, 3) BGR")
        p = self.spec.preprocess
        x = to_tensor(crops, p.channel_order, p.mean, p.std)  # prepare_crop_frame
        step = self.chunk or len(x)
        outs = []
        for s in range(0, len(x), step):
            feeds = {"input": x[s:s + step]}
            if self.has_weight:  # forward: numpy.array([weight]).astype(numpy.double)
                feeds["weight"] = np.array([self.weight], np.float64)
            outs.append(np.asarray(self.engine.run(feeds)[self.output_name], np.float32))
        y = np.concatenate(outs)
        # normalize_crop_frame: clip, (x + 1) / 2, * 255, round, uint8, RGB -> BGR
        y = (np.clip(y, -1, 1) + 1) / 2
        img = (y.transpose(0, 2, 3, 1) * 255.0).round().astype(np.uint8)
        if p.channel_order == "RGB":
            img = img[..., ::-1]
        return [np.ascontiguousarray(i) for i in img]

    def masks(self, crops: list[np.ndarray], extra_mask: ExtraMask | None) -> np.ndarray:
        """(K, S, S) paste masks: the box mask, ``np.minimum`` with ``extra_mask(crops)``."""
        m = np.broadcast_to(self.box, (len(crops), self.size, self.size))
        if extra_mask is not None:
            extra = np.asarray(extra_mask(crops), np.float32)
            if extra.shape != m.shape:
                raise InputError(f"extra mask | got shape {extra.shape}; expected {m.shape}")
            m = np.minimum(m, extra)
        return np.clip(m, 0, 1)

    def enhance(self, frame: np.ndarray, faces: Sequence[Face],
                extra_mask: ExtraMask | None = None) -> np.ndarray:
        """``frame`` (BGR uint8) with every face of ``faces`` enhanced, as a new frame; pixels
        outside the pasted masks' support keep their exact values."""
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3
                and frame.dtype == np.uint8):
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame)
            raise InputError(f"frame | got {got}; expected uint8 (H, W, 3) BGR")
        out = frame.copy()
        if not faces:
            return out
        warped = [warp_face(frame, f.landmarks, self.template, self.size) for f in faces]
        crops = [c for c, _ in warped]
        masks = self.masks(crops, extra_mask)
        for (_, m), enhanced, mask in zip(warped, self.enhance_crops(crops), masks):
            pasted = paste_back(out, enhanced, m, mask=mask)
            # blend_paste_frame over the pasted rectangle only: outside it pasted == out, and
            # addWeighted(a, 1 - b, a, b) rounds back to a, so this is the whole-frame result
            x0, y0, x1, y1 = _rect(out.shape, self.size, m)
            if x0 < x1 and y0 < y1:
                out[y0:y1, x0:x1] = cv2.addWeighted(out[y0:y1, x0:x1], 1 - self.blend,
                                                    pasted[y0:y1, x0:x1], self.blend, 0)
        return out


def _rect(shape: tuple[int, ...], size: int, m: np.ndarray) -> tuple[int, int, int, int]:
    """Frame rectangle covering the crop warped back (a pixel of margin), clipped."""
    inv = invert(m)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    pts = corners @ inv[:, :2].T + inv[:, 2]
    x0, y0 = np.floor(pts.min(0)).astype(int) - 2
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    h, w = shape[:2]
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
