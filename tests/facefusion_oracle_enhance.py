"""A small re-implementation of FaceFusion 3.8.1's face enhancer: the test oracle fusionrt's
enhance stages (``fusionrt/pipeline/host/enhance.py``, ``device/enhance.py``) are checked
against. No real weights are reachable here, so this plus probe models with the real I/O
contract is the evidence that a real FaceFusion enhancer file gets what FaceFusion gives it.

Each function copies one FaceFusion function (github.com/facefusion/facefusion, tag 3.8.1);
its file and function are named in its docstring. Alignment comes from ``facefusion_oracle``
(``face_helper.py`` ``warp_face_by_face_landmark_5``). Only numpy and OpenCV, as FaceFusion.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy

from facefusion_oracle import create_box_mask, warp_face_by_face_landmark_5  # noqa: F401

# processors/modules/face_enhancer/core.py create_static_model_set: template and size.
MODEL_OPTIONS = {
    "codeformer": {"template": "ffhq_512", "size": (512, 512)},
    "gfpgan_1.4": {"template": "ffhq_512", "size": (512, 512)},
    "gpen_bfr_256": {"template": "arcface_128", "size": (256, 256)},
    "gpen_bfr_512": {"template": "ffhq_512", "size": (512, 512)},
    "restoreformer_plus_plus": {"template": "ffhq_512", "size": (512, 512)},
}
# core.py register_args / facefusion/program.py defaults
FACE_ENHANCER_BLEND = 80
FACE_ENHANCER_WEIGHT = 0.5
FACE_MASK_BLUR = 0.3




def transform_points(points, matrix):
    """facefusion/face_helper.py ``transform_points`` (float points: cv2.transform refuses
    int64 arrays on some OpenCV builds)."""
    points = points.reshape(-1, 1, 2).astype(numpy.float64)
    points = cv2.transform(points, matrix)
    return points.reshape(-1, 2)


def calculate_paste_area(temp_vision_frame, crop_vision_frame, affine_matrix):
    """facefusion/face_helper.py ``calculate_paste_area``."""
    temp_height, temp_width = temp_vision_frame.shape[:2]
    crop_height, crop_width = crop_vision_frame.shape[:2]
    inverse_matrix = cv2.invertAffineTransform(affine_matrix)
    crop_points = numpy.array([[0, 0], [crop_width, 0], [crop_width, crop_height],
                               [0, crop_height]])
    paste_region_points = transform_points(crop_points, inverse_matrix)
    paste_region_point_min = numpy.floor(paste_region_points.min(axis=0)).astype(int)
    paste_region_point_max = numpy.ceil(paste_region_points.max(axis=0)).astype(int)
    x1, y1 = numpy.clip(paste_region_point_min, 0, [temp_width, temp_height])
    x2, y2 = numpy.clip(paste_region_point_max, 0, [temp_width, temp_height])
    paste_matrix = inverse_matrix.copy()
    paste_matrix[0, 2] -= x1
    paste_matrix[1, 2] -= y1
    return numpy.array([x1, y1, x2, y2]), paste_matrix


def paste_back(temp_vision_frame, crop_vision_frame, crop_vision_mask, affine_matrix):
    """facefusion/face_helper.py ``paste_back`` (the blend is truncated to uint8)."""
    paste_bounding_box, paste_matrix = calculate_paste_area(temp_vision_frame,
                                                            crop_vision_frame, affine_matrix)
    x1, y1, x2, y2 = paste_bounding_box
    paste_width = x2 - x1
    paste_height = y2 - y1
    inverse_vision_mask = cv2.warpAffine(crop_vision_mask, paste_matrix,
                                         (paste_width, paste_height)).clip(0, 1)
    inverse_vision_mask = numpy.expand_dims(inverse_vision_mask, axis=-1)
    inverse_vision_frame = cv2.warpAffine(crop_vision_frame, paste_matrix,
                                          (paste_width, paste_height),
                                          borderMode=cv2.BORDER_REPLICATE)
    temp_vision_frame = temp_vision_frame.copy()
    paste_vision_frame = temp_vision_frame[y1:y2, x1:x2]
    paste_vision_frame = (paste_vision_frame * (1 - inverse_vision_mask)
                          + inverse_vision_frame * inverse_vision_mask)
    temp_vision_frame[y1:y2, x1:x2] = paste_vision_frame.astype(temp_vision_frame.dtype)
    return temp_vision_frame


def prepare_crop_frame(crop_vision_frame):
    """face_enhancer/core.py ``prepare_crop_frame``."""
    crop_vision_frame = crop_vision_frame[:, :, ::-1] / 255.0
    crop_vision_frame = (crop_vision_frame - 0.5) / 0.5
    return numpy.expand_dims(crop_vision_frame.transpose(2, 0, 1), axis=0).astype(numpy.float32)


def normalize_crop_frame(crop_vision_frame):
    """face_enhancer/core.py ``normalize_crop_frame`` (``crop_vision_frame`` is output [0][0])."""
    crop_vision_frame = numpy.clip(crop_vision_frame, -1, 1)
    crop_vision_frame = (crop_vision_frame + 1) / 2
    crop_vision_frame = crop_vision_frame.transpose(1, 2, 0)
    crop_vision_frame = (crop_vision_frame * 255.0).round()
    return crop_vision_frame.astype(numpy.uint8)[:, :, ::-1]


def forward(run: Callable, input_names, crop_vision_frame, face_enhancer_weight):
    """face_enhancer/core.py ``forward``: feeds 'input' and, where the graph has it, 'weight';
    ``run(feeds)`` is ``face_enhancer.run(None, feeds)``; returns output [0][0]."""
    face_enhancer_inputs = {}
    for name in input_names:
        if name == "input":
            face_enhancer_inputs[name] = crop_vision_frame
        if name == "weight":
            face_enhancer_inputs[name] = face_enhancer_weight
    return run(face_enhancer_inputs)[0][0]


def blend_frame(source_vision_frame, target_vision_frame, blend_factor):
    """facefusion/vision.py ``blend_frame``."""
    return cv2.addWeighted(source_vision_frame, 1 - blend_factor, target_vision_frame,
                           blend_factor, 0)


def blend_paste_frame(temp_vision_frame, paste_vision_frame, blend=FACE_ENHANCER_BLEND):
    """face_enhancer/core.py ``blend_paste_frame``."""
    face_enhancer_blend = 1 - (blend / 100)
    return blend_frame(temp_vision_frame, paste_vision_frame, 1 - face_enhancer_blend)


def enhance_face(model_name, run: Callable, input_names, landmark_5, temp_vision_frame,
                 blend=FACE_ENHANCER_BLEND, weight=FACE_ENHANCER_WEIGHT,
                 face_mask_blur=FACE_MASK_BLUR, extra_masks: Callable | None = None):
    """face_enhancer/core.py ``enhance_face`` for one face; ``extra_masks(crop)`` stands for
    the occlusion mask FaceFusion appends when 'occlusion' is a face mask type."""
    options = MODEL_OPTIONS[model_name]
    crop_vision_frame, affine_matrix = warp_face_by_face_landmark_5(
        temp_vision_frame, landmark_5, options["template"], options["size"])
    crop_masks = [create_box_mask(crop_vision_frame, face_mask_blur, (0, 0, 0, 0))]
    if extra_masks is not None:
        crop_masks.append(extra_masks(crop_vision_frame))
    crop_vision_frame = prepare_crop_frame(crop_vision_frame)
    face_enhancer_weight = numpy.array([weight]).astype(numpy.double)
    crop_vision_frame = forward(run, input_names, crop_vision_frame, face_enhancer_weight)
    crop_vision_frame = normalize_crop_frame(crop_vision_frame)
    crop_mask = numpy.minimum.reduce(crop_masks).clip(0, 1)
    paste_vision_frame = paste_back(temp_vision_frame, crop_vision_frame, crop_mask,
                                    affine_matrix)
    return blend_paste_frame(temp_vision_frame, paste_vision_frame, blend)
