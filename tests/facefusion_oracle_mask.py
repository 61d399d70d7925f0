"""A copy of FaceFusion 3.8.1's face-mask functions: the oracle fusionrt's masks are checked
against (no real xseg / bisenet weights are reachable here; probe models with the real I/O
contracts stand in for them).

Each function copies one function of ``facefusion/face_masker.py`` (github.com/facefusion/
facefusion, tag 3.8.1) and says which; the constants are ``facefusion/choices.py``'s. FaceFusion
reads its model choice and its models from global state; here the forward pass is an argument
(``forward(prepared) -> output 0, batch item 0``, as ``forward_occlude_face`` /
``forward_parse_face`` return it). Only numpy and OpenCV, as FaceFusion.
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy

from facefusion_oracle import create_box_mask  # noqa: F401

# facefusion/choices.py
face_mask_area_set = {
    "upper-face": [0, 1, 2, 31, 32, 33, 34, 35, 14, 15, 16, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                   17],
    "lower-face": [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 35, 34, 33, 32, 31],
    "mouth": [48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67],
}
face_mask_region_set = {
    "skin": 1, "left-eyebrow": 2, "right-eyebrow": 3, "left-eye": 4, "right-eye": 5,
    "glasses": 6, "nose": 10, "mouth": 11, "upper-lip": 12, "lower-lip": 13,
}
# face_masker.py create_static_model_set: 'size' of each model
MODEL_SIZE = {"xseg_1": (256, 256), "xseg_2": (256, 256), "xseg_3": (256, 256),
              "bisenet_resnet_18": (512, 512), "bisenet_resnet_34": (512, 512)}




def create_occlusion_mask(crop_vision_frame, model_names: Sequence[str],
                          forward: Callable[[numpy.ndarray, str], numpy.ndarray]):
    """face_masker.py ``create_occlusion_mask`` (``model_names``: ['xseg_1', 'xseg_2',
    'xseg_3'] for 'many', else the one model; ``forward`` = ``forward_occlude_face``)."""
    temp_masks = []

    for model_name in model_names:
        model_size = MODEL_SIZE[model_name]
        prepare_vision_frame = cv2.resize(crop_vision_frame, model_size)
        prepare_vision_frame = numpy.expand_dims(prepare_vision_frame,
                                                 axis=0).astype(numpy.float32) / 255.0
        prepare_vision_frame = prepare_vision_frame.transpose(0, 1, 2, 3)
        temp_mask = forward(prepare_vision_frame, model_name)
        temp_mask = temp_mask.transpose(0, 1, 2).clip(0, 1).astype(numpy.float32)
        temp_mask = cv2.resize(temp_mask, crop_vision_frame.shape[:2][::-1])
        temp_masks.append(temp_mask)

    occlusion_mask = numpy.minimum.reduce(temp_masks)
    occlusion_mask = (cv2.GaussianBlur(occlusion_mask.clip(0, 1), (0, 0), 5).clip(0.5, 1) - 0.5) * 2
    return occlusion_mask


def create_area_mask(crop_vision_frame, face_landmark_68, face_mask_areas):
    """face_masker.py ``create_area_mask``."""
    crop_size = crop_vision_frame.shape[:2][::-1]
    landmark_points = []

    for face_mask_area in face_mask_areas:
        if face_mask_area in face_mask_area_set:
            landmark_points.extend(face_mask_area_set.get(face_mask_area))

    convex_hull = cv2.convexHull(face_landmark_68[landmark_points].astype(numpy.int32))
    area_mask = numpy.zeros(crop_size).astype(numpy.float32)
    cv2.fillConvexPoly(area_mask, convex_hull, 1.0)
    area_mask = (cv2.GaussianBlur(area_mask.clip(0, 1), (0, 0), 5).clip(0.5, 1) - 0.5) * 2
    return area_mask


def create_region_mask(crop_vision_frame, face_mask_regions, model_name: str,
                       forward: Callable[[numpy.ndarray], numpy.ndarray]):
    """face_masker.py ``create_region_mask`` (``forward`` = ``forward_parse_face``)."""
    model_size = MODEL_SIZE[model_name]
    prepare_vision_frame = cv2.resize(crop_vision_frame, model_size)
    prepare_vision_frame = prepare_vision_frame[:, :, ::-1].astype(numpy.float32) / 255.0
    prepare_vision_frame = numpy.subtract(prepare_vision_frame,
                                          numpy.array([0.485, 0.456, 0.406]).astype(numpy.float32))
    prepare_vision_frame = numpy.divide(prepare_vision_frame,
                                        numpy.array([0.229, 0.224, 0.225]).astype(numpy.float32))
    prepare_vision_frame = numpy.expand_dims(prepare_vision_frame, axis=0)
    prepare_vision_frame = prepare_vision_frame.transpose(0, 3, 1, 2)
    region_mask = forward(prepare_vision_frame)
    region_mask = numpy.isin(region_mask.argmax(0), [face_mask_region_set.get(face_mask_region)
                                                     for face_mask_region in face_mask_regions])
    region_mask = cv2.resize(region_mask.astype(numpy.float32), crop_vision_frame.shape[:2][::-1])
    region_mask = (cv2.GaussianBlur(region_mask.clip(0, 1), (0, 0), 5).clip(0.5, 1) - 0.5) * 2
    return region_mask


def combine_masks(crop_masks):
    """processors/modules/face_swapper/core.py ``swap_face``: the paste mask."""
    return numpy.minimum.reduce(crop_masks).clip(0, 1)
