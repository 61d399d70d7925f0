"""A small re-implementation of FaceFusion 3.8.1's 68-point landmarking with ``2dfan4``: the test
oracle fusionrt's landmark stage is checked against (no real weights are reachable here, so
this is the evidence that a real ``2dfan4.onnx`` gets what FaceFusion would give it, and that
its outputs are read as FaceFusion reads them).

Each function copies one FaceFusion function; the file and function are named in its docstring
(github.com/facefusion/facefusion, tag 3.8.1). Only numpy and OpenCV, as FaceFusion. The model
is passed in as ``forward`` (FaceFusion's ``forward_with_2dfan4``: feeds ``input``, returns the
outputs in order).
"""

from __future__ import annotations

import cv2
import numpy

from facefusion_oracle import create_rotation_matrix_and_size, transform_points  # noqa: F401

# facefusion/face_landmarker.py create_static_model_set: '2dfan4' 'size'
MODEL_SIZE = (256, 256)
# facefusion/program.py: --face-landmarker-score default
FACE_LANDMARKER_SCORE = 0.5






def warp_face_by_translation(temp_vision_frame, translation, scale, crop_size):
    """facefusion/face_helper.py ``warp_face_by_translation``."""
    affine_matrix = numpy.array([[scale, 0, translation[0]], [0, scale, translation[1]]])
    crop_vision_frame = cv2.warpAffine(temp_vision_frame, affine_matrix, crop_size)
    return crop_vision_frame, affine_matrix


def conditional_optimize_contrast(crop_vision_frame):
    """facefusion/face_landmarker.py ``conditional_optimize_contrast`` (RGB flags on FaceFusion's
    BGR frames, as written there)."""
    crop_vision_frame = cv2.cvtColor(crop_vision_frame, cv2.COLOR_RGB2Lab)
    if numpy.mean(crop_vision_frame[:, :, 0]) < 30:
        crop_vision_frame[:, :, 0] = cv2.createCLAHE(clipLimit=2).apply(crop_vision_frame[:, :, 0])
    return cv2.cvtColor(crop_vision_frame, cv2.COLOR_Lab2RGB)


def prepare_2dfan4(temp_vision_frame, bounding_box, face_angle):
    """The first half of facefusion/face_landmarker.py ``detect_with_2dfan4``: the model input
    (1, 3, 256, 256) and the two matrices the second half inverts."""
    model_size = MODEL_SIZE
    scale = 195 / numpy.subtract(bounding_box[2:], bounding_box[:2]).max().clip(1, None)
    translation = (model_size[0] - numpy.add(bounding_box[2:], bounding_box[:2]) * scale) * 0.5
    rotation_matrix, rotation_size = create_rotation_matrix_and_size(face_angle, model_size)
    crop_vision_frame, affine_matrix = warp_face_by_translation(temp_vision_frame, translation,
                                                                scale, model_size)
    crop_vision_frame = cv2.warpAffine(crop_vision_frame, rotation_matrix, rotation_size)
    crop_vision_frame = conditional_optimize_contrast(crop_vision_frame)
    crop_vision_frame = crop_vision_frame.transpose(2, 0, 1).astype(numpy.float32) / 255.0
    # forward_with_2dfan4 feeds [ crop_vision_frame ]: a batch of one
    return numpy.expand_dims(crop_vision_frame, 0), affine_matrix, rotation_matrix


def detect_with_2dfan4(temp_vision_frame, bounding_box, face_angle, forward):
    """facefusion/face_landmarker.py ``detect_with_2dfan4`` → (68 points, score)."""
    x, affine_matrix, rotation_matrix = prepare_2dfan4(temp_vision_frame, bounding_box,
                                                       face_angle)
    face_landmark_68, face_heatmap = forward(x)
    face_landmark_68 = face_landmark_68[:, :, :2][0] / 64 * 256
    face_landmark_68 = transform_points(face_landmark_68,
                                        cv2.invertAffineTransform(rotation_matrix))
    face_landmark_68 = transform_points(face_landmark_68, cv2.invertAffineTransform(affine_matrix))
    face_landmark_score_68 = numpy.amax(face_heatmap, axis=(2, 3))
    face_landmark_score_68 = numpy.mean(face_landmark_score_68)
    face_landmark_score_68 = numpy.interp(face_landmark_score_68, [0, 0.9], [0, 1])
    return face_landmark_68, face_landmark_score_68


def convert_to_face_landmark_5(face_landmark_68):
    """facefusion/face_helper.py ``convert_to_face_landmark_5`` (the brief's
    ``convert_face_landmark_68_to_5``; renamed by 3.8.1)."""
    return numpy.array([
        numpy.mean(face_landmark_68[36:42], axis=0),
        numpy.mean(face_landmark_68[42:48], axis=0),
        face_landmark_68[30],
        face_landmark_68[48],
        face_landmark_68[54]])


def estimate_face_angle(face_landmark_68):
    """facefusion/face_helper.py ``estimate_face_angle``."""
    x1, y1 = face_landmark_68[0]
    x2, y2 = face_landmark_68[16]
    theta = numpy.arctan2(y2 - y1, x2 - x1)
    theta = numpy.degrees(theta) % 360
    angles = numpy.linspace(0, 360, 5)
    index = numpy.argmin(numpy.abs(angles - theta))
    return int(angles[index] % 360)


def landmark_5_68(vision_frame, bounding_box, face_landmark_5, face_angle, forward,
                  face_landmarker_score=FACE_LANDMARKER_SCORE):
    """facefusion/face_creator.py ``create_faces``, the landmark part: (landmark_set '5/68',
    landmark_set '68', landmarker score). FaceFusion's '68' falls back to fan_68_5's estimate
    (not reproduced here: None) when the landmarker does not run."""
    face_landmark_5_68 = face_landmark_5
    face_landmark_68 = None
    face_landmark_score_68 = 0.0
    if face_landmarker_score > 0:
        face_landmark_68, face_landmark_score_68 = detect_with_2dfan4(vision_frame, bounding_box,
                                                                      face_angle, forward)
    if face_landmark_score_68 > face_landmarker_score:
        face_landmark_5_68 = convert_to_face_landmark_5(face_landmark_68)
    return face_landmark_5_68, face_landmark_68, face_landmark_score_68
