"""A small re-implementation of FaceFusion 3.8.1's face detection: the oracle fusionrt's
detectors are checked against (no real weights are reachable here, so this is the evidence that
a real scrfd_2.5g / retinaface_10g / yoloface_8n file gives in fusionrt what it gives in
FaceFusion).

Each function copies one FaceFusion function; the file and function are named in its
docstring (github.com/facefusion/facefusion, tag 3.8.1). FaceFusion's ``state_manager`` items
become arguments (``face_detector_size``, ``face_detector_score``, ``face_detector_angles``);
``face_detector_margin`` is its default (0, 0, 0, 0), i.e. no margin. ``forward`` is the
``forward_with_*`` call: ``session.run(None, {'input': frame})``, outputs by index. Only numpy
and OpenCV, as FaceFusion.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

import cv2
import numpy

from facefusion_oracle import create_rotation_matrix_and_size, transform_points  # noqa: F401


def restrict_frame(vision_frame, resolution):
    """facefusion/vision.py ``restrict_frame``."""
    height, width = vision_frame.shape[:2]
    restrict_width, restrict_height = resolution
    if height > restrict_height or width > restrict_width:
        scale = min(restrict_height / height, restrict_width / width)
        new_width = int(width * scale)
        new_height = int(height * scale)
        return cv2.resize(vision_frame, (new_width, new_height))
    return vision_frame


def prepare_detect_frame(temp_vision_frame, face_detector_size):
    """facefusion/face_detector.py ``prepare_detect_frame`` (size as (width, height))."""
    face_detector_width, face_detector_height = face_detector_size
    detect_vision_frame = numpy.zeros((face_detector_height, face_detector_width, 3))
    detect_vision_frame[:temp_vision_frame.shape[0], :temp_vision_frame.shape[1], :] = \
        temp_vision_frame
    detect_vision_frame = numpy.expand_dims(detect_vision_frame.transpose(2, 0, 1),
                                            axis=0).astype(numpy.float32)
    return detect_vision_frame


def normalize_detect_frame(detect_vision_frame, normalize_range):
    """facefusion/face_detector.py ``normalize_detect_frame``."""
    if normalize_range == [-1, 1]:
        return (detect_vision_frame - 127.5) / 128.0
    if normalize_range == [0, 1]:
        return detect_vision_frame / 255.0
    return detect_vision_frame


def create_static_anchors(feature_stride, anchor_total, stride_height, stride_width):
    """facefusion/face_helper.py ``create_static_anchors``."""
    x, y = numpy.mgrid[:stride_width, :stride_height]
    anchors = numpy.stack((y, x), axis=-1)
    anchors = (anchors * feature_stride).reshape((-1, 2))
    anchors = numpy.stack([anchors] * anchor_total, axis=1).reshape((-1, 2))
    return anchors


def distance_to_bounding_box(points, distance):
    """facefusion/face_helper.py ``distance_to_bounding_box``."""
    x1 = points[:, 0] - distance[:, 0]
    y1 = points[:, 1] - distance[:, 1]
    x2 = points[:, 0] + distance[:, 2]
    y2 = points[:, 1] + distance[:, 3]
    return numpy.column_stack([x1, y1, x2, y2])


def distance_to_face_landmark_5(points, distance):
    """facefusion/face_helper.py ``distance_to_face_landmark_5``."""
    x = points[:, 0::2] + distance[:, 0::2]
    y = points[:, 1::2] + distance[:, 1::2]
    return numpy.stack((x, y), axis=-1)


def detect_with_scrfd(vision_frame, face_detector_size, face_detector_score, forward):
    """facefusion/face_detector.py ``detect_with_scrfd`` (``detect_with_retinaface`` is the
    same code with ``forward_with_retinaface``)."""
    bounding_boxes, face_scores, face_landmarks_5 = [], [], []
    feature_strides = [8, 16, 32]
    feature_map_channel = 3
    anchor_total = 2
    face_detector_width, face_detector_height = face_detector_size
    temp_vision_frame = restrict_frame(vision_frame, (face_detector_width, face_detector_height))
    ratio_height = vision_frame.shape[0] / temp_vision_frame.shape[0]
    ratio_width = vision_frame.shape[1] / temp_vision_frame.shape[1]
    detect_vision_frame = prepare_detect_frame(temp_vision_frame, face_detector_size)
    detect_vision_frame = normalize_detect_frame(detect_vision_frame, [-1, 1])
    detection = forward(detect_vision_frame)

    for index, feature_stride in enumerate(feature_strides):
        face_scores_raw = detection[index]
        keep_indices = numpy.where(face_scores_raw >= face_detector_score)[0]

        if numpy.any(keep_indices):
            stride_height = face_detector_height // feature_stride
            stride_width = face_detector_width // feature_stride
            anchors = create_static_anchors(feature_stride, anchor_total, stride_height,
                                            stride_width)
            bounding_boxes_raw = detection[index + feature_map_channel] * feature_stride
            face_landmarks_5_raw = detection[index + feature_map_channel * 2] * feature_stride

            for bounding_box_raw in distance_to_bounding_box(anchors,
                                                             bounding_boxes_raw)[keep_indices]:
                bounding_boxes.append(numpy.array([
                    bounding_box_raw[0] * ratio_width, bounding_box_raw[1] * ratio_height,
                    bounding_box_raw[2] * ratio_width, bounding_box_raw[3] * ratio_height]))
            for face_score_raw in face_scores_raw[keep_indices]:
                face_scores.append(face_score_raw[0])
            for face_landmark_raw_5 in distance_to_face_landmark_5(
                    anchors, face_landmarks_5_raw)[keep_indices]:
                face_landmarks_5.append(face_landmark_raw_5 * [ratio_width, ratio_height])
    return bounding_boxes, face_scores, face_landmarks_5


detect_with_retinaface = detect_with_scrfd


def detect_with_yolo_face(vision_frame, face_detector_size, face_detector_score, forward):
    """facefusion/face_detector.py ``detect_with_yolo_face``."""
    bounding_boxes, face_scores, face_landmarks_5 = [], [], []
    face_detector_width, face_detector_height = face_detector_size
    temp_vision_frame = restrict_frame(vision_frame, (face_detector_width, face_detector_height))
    ratio_height = vision_frame.shape[0] / temp_vision_frame.shape[0]
    ratio_width = vision_frame.shape[1] / temp_vision_frame.shape[1]
    detect_vision_frame = prepare_detect_frame(temp_vision_frame, face_detector_size)
    detect_vision_frame = normalize_detect_frame(detect_vision_frame, [0, 1])
    detection = forward(detect_vision_frame)
    detection = numpy.squeeze(detection).T
    bounding_boxes_raw, face_scores_raw, face_landmarks_5_raw = numpy.split(detection, [4, 5],
                                                                            axis=1)
    keep_indices = numpy.where(face_scores_raw > face_detector_score)[0]

    if numpy.any(keep_indices):
        bounding_boxes_raw, face_scores_raw, face_landmarks_5_raw = \
            bounding_boxes_raw[keep_indices], face_scores_raw[keep_indices], \
            face_landmarks_5_raw[keep_indices]
        for bounding_box_raw in bounding_boxes_raw:
            bounding_boxes.append(numpy.array([
                (bounding_box_raw[0] - bounding_box_raw[2] / 2) * ratio_width,
                (bounding_box_raw[1] - bounding_box_raw[3] / 2) * ratio_height,
                (bounding_box_raw[0] + bounding_box_raw[2] / 2) * ratio_width,
                (bounding_box_raw[1] + bounding_box_raw[3] / 2) * ratio_height]))
        face_scores = face_scores_raw.ravel().tolist()
        face_landmarks_5_raw[:, 0::3] = (face_landmarks_5_raw[:, 0::3]) * ratio_width
        face_landmarks_5_raw[:, 1::3] = (face_landmarks_5_raw[:, 1::3]) * ratio_height
        for face_landmark_raw_5 in face_landmarks_5_raw:
            face_landmarks_5.append(numpy.array(face_landmark_raw_5.reshape(-1, 3)[:, :2]))
    return bounding_boxes, face_scores, face_landmarks_5


DETECT_WITH = {"scrfd": detect_with_scrfd, "retinaface": detect_with_retinaface,
               "yolo_face": detect_with_yolo_face}


def normalize_bounding_box(bounding_box):
    """facefusion/face_helper.py ``normalize_bounding_box``."""
    x1, y1, x2, y2 = bounding_box
    x1, x2 = sorted([x1, x2])
    y1, y2 = sorted([y1, y2])
    return numpy.array([x1, y1, x2, y2])


def detect_faces(vision_frame, model, face_detector_size, face_detector_score, forward):
    """facefusion/face_detector.py ``detect_faces`` for one model, margin (0, 0, 0, 0)."""
    bounding_boxes, face_scores, face_landmarks_5 = DETECT_WITH[model](
        vision_frame, face_detector_size, face_detector_score, forward)
    bounding_boxes = [normalize_bounding_box(b) for b in bounding_boxes]
    return bounding_boxes, face_scores, face_landmarks_5






def transform_bounding_box(bounding_box, matrix):
    """facefusion/face_helper.py ``transform_bounding_box``."""
    points = numpy.array([
        [bounding_box[0], bounding_box[1]], [bounding_box[2], bounding_box[1]],
        [bounding_box[2], bounding_box[3]], [bounding_box[0], bounding_box[3]]])
    points = transform_points(points, matrix)
    x1, y1 = numpy.min(points, axis=0)
    x2, y2 = numpy.max(points, axis=0)
    return normalize_bounding_box(numpy.array([x1, y1, x2, y2]))


def detect_faces_by_angle(vision_frame, face_angle, *args):
    """facefusion/face_detector.py ``detect_faces_by_angle``."""
    rotation_matrix, rotation_size = create_rotation_matrix_and_size(
        face_angle, vision_frame.shape[:2][::-1])
    rotation_vision_frame = cv2.warpAffine(vision_frame, rotation_matrix, rotation_size)
    rotation_inverse_matrix = cv2.invertAffineTransform(rotation_matrix)
    bounding_boxes, face_scores, face_landmarks_5 = detect_faces(rotation_vision_frame, *args)
    bounding_boxes = [transform_bounding_box(b, rotation_inverse_matrix) for b in bounding_boxes]
    face_landmarks_5 = [transform_points(p, rotation_inverse_matrix) for p in face_landmarks_5]
    return bounding_boxes, face_scores, face_landmarks_5


def get_nms_threshold(face_detector_model, face_detector_angles):
    """facefusion/face_helper.py ``get_nms_threshold``."""
    if face_detector_model == "many":
        return 0.1
    return {2: 0.3, 3: 0.2, 4: 0.1}.get(len(face_detector_angles), 0.4)


def apply_nms(bounding_boxes, scores, score_threshold, nms_threshold):
    """facefusion/face_helper.py ``apply_nms``."""
    bounding_boxes_norm = [(x1, y1, x2 - x1, y2 - y1) for (x1, y1, x2, y2) in bounding_boxes]
    return cv2.dnn.NMSBoxes(bounding_boxes_norm, scores, score_threshold=score_threshold,
                            nms_threshold=nms_threshold)


def get_many_faces(vision_frame, model: str, face_detector_size: Sequence[int],
                   face_detector_score: float, forward: Callable,
                   face_detector_angles: List[int] = (0,)):
    """facefusion/face_creator.py ``get_many_faces`` up to ``create_faces``' NMS: [(box,
    score, landmarks_5)] in NMS order (highest score first)."""
    all_bounding_boxes, all_face_scores, all_face_landmarks_5 = [], [], []
    args = (model, tuple(face_detector_size), face_detector_score, forward)
    for face_detector_angle in face_detector_angles:
        if face_detector_angle == 0:
            found = detect_faces(vision_frame, *args)
        else:
            found = detect_faces_by_angle(vision_frame, face_detector_angle, *args)
        for store, values in zip((all_bounding_boxes, all_face_scores, all_face_landmarks_5),
                                 found):
            store.extend(values)
    if not all_bounding_boxes:
        return []
    nms_threshold = get_nms_threshold(model, face_detector_angles)
    keep = apply_nms(all_bounding_boxes, all_face_scores, face_detector_score, nms_threshold)
    return [(all_bounding_boxes[i], all_face_scores[i], all_face_landmarks_5[i]) for i in keep]
