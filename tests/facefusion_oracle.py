"""A small re-implementation of FaceFusion 3.8.1's face-swapper pre- and post-processing: the
test oracle fusionrt's stages are checked against (no real weights are reachable here, so this
is the evidence that a real FaceFusion model file gets what FaceFusion would give it).

Each function copies one FaceFusion function; the file and function are named in its
docstring (github.com/facefusion/facefusion, tag 3.8.1). Only numpy and OpenCV, as FaceFusion.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy

# facefusion/face_helper.py WARP_TEMPLATE_SET (normalised to a 1x1 crop), the entries the
# swappers use.
WARP_TEMPLATE_SET = {
    "arcface_112_v1": numpy.array([
        [0.35473214, 0.45658929], [0.64526786, 0.45658929], [0.50000000, 0.61154464],
        [0.37913393, 0.77687500], [0.62086607, 0.77687500]]),
    "arcface_112_v2": numpy.array([
        [0.34191607, 0.46157411], [0.65653393, 0.45983393], [0.50022500, 0.64050536],
        [0.37097589, 0.82469196], [0.63151696, 0.82325089]]),
    "arcface_128": numpy.array([
        [0.36167656, 0.40387734], [0.63696719, 0.40235469], [0.50019687, 0.56044219],
        [0.38710391, 0.72160547], [0.61507734, 0.72034453]]),
    "mtcnn_512": numpy.array([
        [0.36562865, 0.46733799], [0.63305391, 0.46585885], [0.50019127, 0.61942959],
        [0.39032951, 0.77598822], [0.61178945, 0.77476328]]),
    "ffhq_512": numpy.array([
        [0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
        [0.39308822, 0.72541100], [0.61150205, 0.72490465]]),
}

# facefusion/processors/modules/face_swapper/core.py create_static_model_set: the options the
# functions below read (type, template, size, mean, standard_deviation).
MODEL_OPTIONS = {
    "hyperswap_1a_256": {"type": "hyperswap", "template": "arcface_128", "size": (256, 256),
                         "mean": [0.5, 0.5, 0.5], "standard_deviation": [0.5, 0.5, 0.5]},
    "simswap_256": {"type": "simswap", "template": "arcface_112_v1", "size": (256, 256),
                    "mean": [0.485, 0.456, 0.406], "standard_deviation": [0.229, 0.224, 0.225]},
    "ghost_1_256": {"type": "ghost", "template": "arcface_112_v1", "size": (256, 256),
                    "mean": [0.5, 0.5, 0.5], "standard_deviation": [0.5, 0.5, 0.5]},
    "hififace_unofficial_256": {"type": "hififace", "template": "mtcnn_512", "size": (256, 256),
                                "mean": [0.5, 0.5, 0.5], "standard_deviation": [0.5, 0.5, 0.5]},
    "simswap_unofficial_512": {"type": "simswap", "template": "arcface_112_v1",
                               "size": (512, 512), "mean": [0.0, 0.0, 0.0],
                               "standard_deviation": [1.0, 1.0, 1.0]},
}
MODEL_OPTIONS["ghost_2_256"] = MODEL_OPTIONS["ghost_3_256"] = MODEL_OPTIONS["ghost_1_256"]
MODEL_OPTIONS["hyperswap_1b_256"] = MODEL_OPTIONS["hyperswap_1c_256"] = \
    MODEL_OPTIONS["hyperswap_1a_256"]


def estimate_matrix_by_face_landmark_5(face_landmark_5, warp_template, crop_size):
    """facefusion/face_helper.py ``estimate_matrix_by_face_landmark_5``."""
    warp_template_norm = WARP_TEMPLATE_SET.get(warp_template) * crop_size
    return cv2.estimateAffinePartial2D(face_landmark_5, warp_template_norm, method=cv2.RANSAC,
                                       ransacReprojThreshold=100)[0]


def warp_face_by_face_landmark_5(temp_vision_frame, face_landmark_5, warp_template, crop_size):
    """facefusion/face_helper.py ``warp_face_by_face_landmark_5`` (OpenCV's warpAffine runs
    INTER_AREA as INTER_LINEAR; the border is replicated, fusionrt's is black)."""
    affine_matrix = estimate_matrix_by_face_landmark_5(face_landmark_5, warp_template, crop_size)
    crop_vision_frame = cv2.warpAffine(temp_vision_frame, affine_matrix, crop_size,
                                       borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_AREA)
    return crop_vision_frame, affine_matrix


def prepare_crop_frame(options, crop_vision_frame):
    """face_swapper/core.py ``prepare_crop_frame``: BGR -> RGB, / 255, (x - mean) / std, NCHW."""
    crop_vision_frame = crop_vision_frame[:, :, ::-1] / 255.0
    crop_vision_frame = (crop_vision_frame - options["mean"]) / options["standard_deviation"]
    crop_vision_frame = crop_vision_frame.transpose(2, 0, 1)
    return numpy.expand_dims(crop_vision_frame, axis=0).astype(numpy.float32)


def normalize_crop_frame(options, crop_vision_frame):
    """face_swapper/core.py ``normalize_crop_frame``: the model's output [0] (C, H, W) -> the
    BGR float crop in [0, 255] that paste_back receives."""
    crop_vision_frame = crop_vision_frame.transpose(1, 2, 0)
    if options["type"] in ["ghost", "hififace", "hyperswap", "uniface"]:
        crop_vision_frame = crop_vision_frame * options["standard_deviation"] + options["mean"]
    crop_vision_frame = crop_vision_frame.clip(0, 1)
    return crop_vision_frame[:, :, ::-1] * 255


def convert_source_embedding(forward_convert_embedding: Callable, source_embedding):
    """face_swapper/core.py ``convert_source_embedding`` (``forward_convert_embedding`` runs the
    converter with ``{'input': embedding}`` and returns output [0])."""
    source_embedding = forward_convert_embedding(source_embedding)
    source_embedding = source_embedding.ravel()
    source_embedding_norm = source_embedding / numpy.linalg.norm(source_embedding)
    return source_embedding, source_embedding_norm


def prepare_source_embedding(options, embedding, embedding_norm,
                             forward_convert_embedding: Callable | None = None,
                             model_initializer=None):
    """face_swapper/core.py ``prepare_source_embedding``: ``embedding`` is the raw recogniser
    output (face_recognizer.py ``calculate_face_embedding``), ``embedding_norm`` its unit
    vector."""
    model_type = options["type"]
    if model_type == "ghost":
        source_embedding = embedding.reshape(-1, 512)
        source_embedding, _ = convert_source_embedding(forward_convert_embedding, source_embedding)
        return source_embedding.reshape(1, -1)
    if model_type == "hyperswap":
        return embedding_norm.reshape((1, -1))
    if model_type == "inswapper":
        source_embedding = embedding.reshape((1, -1))
        return numpy.dot(source_embedding, model_initializer) / numpy.linalg.norm(source_embedding)
    source_embedding = embedding.reshape(-1, 512)
    _, source_embedding_norm = convert_source_embedding(forward_convert_embedding, source_embedding)
    return source_embedding_norm.reshape(1, -1)


def balance_source_embedding(options, source_embedding, target_embedding,
                             face_swapper_weight: float = 0.5):
    """face_swapper/core.py ``balance_source_embedding`` (0.5 is FaceFusion's default
    ``--face-swapper-weight``, which mixes in none of the target)."""
    face_swapper_weight = numpy.interp(face_swapper_weight, [0, 1], [0.35, -0.35]).astype(
        numpy.float32)
    if options["type"] in ["hififace", "hyperswap", "inswapper", "simswap"]:
        target_embedding = target_embedding / numpy.linalg.norm(target_embedding)
    source_embedding = source_embedding.reshape(1, -1)
    target_embedding = target_embedding.reshape(1, -1)
    return source_embedding * (1 - face_swapper_weight) + target_embedding * face_swapper_weight


# -- shared by the detector, landmarker, enhancer and mask oracles ------------------------------

def create_box_mask(crop_vision_frame, face_mask_blur, face_mask_padding):
    """facefusion/face_masker.py ``create_box_mask``."""
    crop_size = crop_vision_frame.shape[:2][::-1]
    blur_amount = int(crop_size[0] * 0.5 * face_mask_blur)
    blur_area = max(blur_amount // 2, 1)
    box_mask = numpy.ones(crop_size).astype(numpy.float32)
    box_mask[:max(blur_area, int(crop_size[1] * face_mask_padding[0] / 100)), :] = 0
    box_mask[-max(blur_area, int(crop_size[1] * face_mask_padding[2] / 100)):, :] = 0
    box_mask[:, :max(blur_area, int(crop_size[0] * face_mask_padding[3] / 100))] = 0
    box_mask[:, -max(blur_area, int(crop_size[0] * face_mask_padding[1] / 100)):] = 0
    if blur_amount > 0:
        box_mask = cv2.GaussianBlur(box_mask, (0, 0), blur_amount * 0.25)
    return box_mask


def create_rotation_matrix_and_size(angle, size):
    """facefusion/face_helper.py ``create_rotation_matrix_and_size``."""
    rotation_matrix = cv2.getRotationMatrix2D((size[0] / 2, size[1] / 2), angle, 1)
    rotation_size = numpy.dot(numpy.abs(rotation_matrix[:, :2]), size)
    rotation_matrix[:, -1] += (rotation_size - size) * 0.5
    rotation_size = int(rotation_size[0]), int(rotation_size[1])
    return rotation_matrix, rotation_size


def transform_points(points, matrix):
    """facefusion/face_helper.py ``transform_points``."""
    points = points.reshape(-1, 1, 2)
    points = cv2.transform(points, matrix)
    return points.reshape(-1, 2)
