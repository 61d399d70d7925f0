"""FaceFusion 3.8.1's face detectors, by FaceFusion's file names: ``scrfd_2.5g``,
``retinaface_10g`` and ``yoloface_8n``.

Every fact is read from FaceFusion 3.8.1 ``facefusion/face_detector.py``:
``create_static_model_set`` gives the URLs and licences; ``forward_with_*`` feed one array by the
name ``'input'`` and read the outputs *by index* (``run(None, ...)``); ``prepare_detect_frame`` /
``normalize_detect_frame`` the input; ``detect_with_scrfd`` / ``detect_with_retinaface`` /
``detect_with_yolo_face`` the decoding (``face_helper.py`` ``create_static_anchors``,
``distance_to_bounding_box``, ``distance_to_face_landmark_5``). ``choices.py``
``face_detector_set`` lists the sizes FaceFusion offers per model.

Input (all three): the BGR frame as read by OpenCV (FaceFusion never swaps channels), shrunk to
fit the square detector size if larger (``vision.py`` ``restrict_frame``: ``int()`` sizes,
``cv2.resize`` INTER_LINEAR, never enlarged), pasted at the top-left of a zero (black) canvas,
and the *whole canvas* normalised: ``(x - 127.5) / 128`` for scrfd/retinaface (range [-1, 1]),
``x / 255`` for yolo_face (range [0, 1]). So the padding is black pixels normalised, -0.996 for
scrfd — not zero after normalisation as for ``retinaface_mnet025``.

Outputs:
  * ``insightface_anchors`` (scrfd, retinaface: the same code in FaceFusion): 9 tensors, index
    0-2 scores (K_s, 1) for strides 8/16/32, 3-5 box distances (K_s, 4), 6-8 landmark offsets
    (K_s, 10), K_s = 2 (S/s)^2 (``anchor_total = 2`` per cell, no batch axis: FaceFusion's
    ``numpy.where(scores >= t)[0]`` indexes anchors, so the file has none). Anchors are the
    cells' top-left corners ``(col * s, row * s)``, each twice; raw values times the stride
    are distances in input pixels; scores ``>=`` the threshold are kept.
  * ``yolo`` (yolo_face): one (1, 20, 8400) tensor at 640x640 (8400 = 80^2 + 40^2 + 20^2);
    transposed, each row is cx, cy, w, h (input pixels), score, then 5 x (x, y, visibility);
    scores ``>`` the threshold are kept.
Output names are fusionrt's (FaceFusion reads by index; the files' own names are unverified).
"""

from __future__ import annotations

from .facefusion import CRC32_ONLY, F32, ff_links, ff_url
from .spec import ModelSpec, Preprocess, TensorSpec

FF_DETECTOR_CODE = ("https://github.com/facefusion/facefusion/blob/3.8.1/"
                    "facefusion/face_detector.py")
STRIDES = (8, 16, 32)
# normalize_detect_frame: [-1, 1] -> (x - 127.5) / 128; [0, 1] -> x / 255 (BGR, as read).
SYMMETRIC = Preprocess(None, (127.5, 127.5, 127.5), (128.0, 128.0, 128.0), "BGR")
UNIT = Preprocess(None, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), "BGR")
# choices.py face_detector_set
INSIGHTFACE_SIZES = (160, 320, 480, 512, 640)
STANDIN_NOTE = ("The synthetic stand-in (fusionrt.models.arch.standin_detect) is a small conv "
                "pyramid with this I/O contract and a cost near the published one, not this "
                "model's architecture; random weights, no meaningful detections.")


def _insightface(name: str, *, vendor_model: str, year: int, flops: str, arch: str) -> ModelSpec:
    outputs = tuple(TensorSpec(f"{kind}_{s}", F32, (f"A{s}", width))
                    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)) for s in STRIDES)
    return ModelSpec(
        name=name,
        task="detect",
        arch=arch,
        inputs=(TensorSpec("input", F32, (1, 3, "H", "W")),),
        outputs=outputs,
        preprocess=SYMMETRIC,
        template=None,
        url=ff_url(name, "models-3.0.0"),
        sha256=None, size=None,
        license=f"Non-Commercial (InsightFace, {year})",
        source=FF_DETECTOR_CODE,
        sha256_verified=False,
        notes=(f"FaceFusion's '{vendor_model}' face detector (InsightFace {flops}, with 5 "
               "keypoints). Input 'input' (1, 3, H, W), H = W a multiple of 32 (FaceFusion "
               f"offers {', '.join(map(str, INSIGHTFACE_SIZES))}); BGR (x - 127.5) / 128 over "
               "the zero-padded canvas. Outputs by index: scores, box distances, landmark "
               "offsets per stride 8/16/32, anchor_total 2, no batch axis. "
               f"{CRC32_ONLY} Output names are fusionrt's: FaceFusion reads outputs by index. "
               f"{STANDIN_NOTE}"),
        extra={"decoder": "insightface_anchors", "letterbox": "facefusion",
               "facefusion_model": vendor_model, "strides": list(STRIDES), "anchor_total": 2,
               "score_keep": ">=", "sizes": list(INSIGHTFACE_SIZES),
               "export_dims": {"H": 320, "W": 320},  # the stand-in is traced at 320x320
               "unverified_io": [t.name for t in outputs], "standin": STANDIN_NOTE,
               "flops_published": flops,
               **ff_links(name, "models-3.0.0")},
    )


SCRFD_2_5G = _insightface("scrfd_2.5g", vendor_model="scrfd", year=2021,
                          flops="SCRFD-2.5GF: 2.5 GFLOPs at 640x480, 0.82 M parameters",
                          arch="scrfd_standin")
# FaceFusion's 'retinaface' runs retinaface_10g.onnx through the same decode as scrfd (the
# insightface buffalo_l det_10g file is SCRFD-10GF with keypoints).
RETINAFACE_10G = _insightface("retinaface_10g", vendor_model="retinaface", year=2020,
                              flops="10 GFLOPs at 640x480 (SCRFD-10GF-KPS: 4.23 M parameters)",
                              arch="retinaface10g_standin")

YOLOFACE_8N = ModelSpec(
    name="yoloface_8n",
    task="detect",
    arch="yoloface_standin",
    inputs=(TensorSpec("input", F32, (1, 3, 640, 640)),),
    outputs=(TensorSpec("output", F32, (1, 20, 8400)),),
    preprocess=UNIT,
    template=None,
    url=ff_url("yoloface_8n", "models-3.0.0"),
    sha256=None, size=None,
    license="GPL-3.0 (derronqi/yolov8-face, 2022)",
    source=FF_DETECTOR_CODE,
    sha256_verified=False,
    notes=("FaceFusion's 'yolo_face' detector (YOLOv8n-face by derronqi; FaceFusion 3.8.1's "
           "default --face-detector-model). Input 'input' (1, 3, 640, 640) BGR / 255 over the "
           "zero-padded canvas (FaceFusion offers only 640x640); output [0] (1, 20, 8400): "
           "cx, cy, w, h, score, 5 x (x, y, visibility) per anchor, in input pixels, decoded in "
           f"the graph. {CRC32_ONLY} The output name 'output' is fusionrt's (FaceFusion reads "
           f"output [0]). {STANDIN_NOTE}"),
    extra={"decoder": "yolo", "letterbox": "facefusion", "facefusion_model": "yolo_face",
           "strides": list(STRIDES), "score_keep": ">", "sizes": [640],
           "unverified_io": ["output"], "standin": STANDIN_NOTE,
           "flops_published": "YOLOv8n: 8.7 GFLOPs at 640x640, 3.2 M parameters (detect head)",
           **ff_links("yoloface_8n", "models-3.0.0")},
)

DETECTORS = (SCRFD_2_5G, RETINAFACE_10G, YOLOFACE_8N)
