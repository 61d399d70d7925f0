"""FaceFusion 3.8.1's 68-point face landmarker ``2dfan4``, by FaceFusion's name.

Every fact is read from FaceFusion 3.8.1 ``facefusion/face_landmarker.py``:
``create_static_model_set`` (URL, ``size`` (256, 256), vendor breadbread1984, licence MIT),
``detect_with_2dfan4`` (the crop, the input, how the 68 points and the score come out of the
outputs) and ``forward_with_2dfan4`` (feeds ``input`` by name, reads the outputs by position);
``facefusion/face_creator.py`` ``create_faces`` (the 5 points are replaced by the 68's when the
score beats ``--face-landmarker-score``, default 0.5 in ``facefusion/program.py``).
"""

from __future__ import annotations

from .facefusion import CRC32_ONLY, F32, ff_links, ff_url
from .spec import ModelSpec, Preprocess, TensorSpec

FF_LANDMARKER_CODE = ("https://github.com/facefusion/facefusion/blob/3.8.1/"
                      "facefusion/face_landmarker.py")
FAN_STANDIN = ("The synthetic stand-in is the published 2D-FAN-4 network (4 stacked hourglasses, "
               "face-alignment's FAN; fusionrt/models/arch/standin_landmark.py) with random "
               "weights and face-alignment's heatmap decoding in the graph: 23.82 M parameters, "
               "50.47 GFLOP per face at width 1 (measured with fusionrt.models.arch.profile). "
               "The real file's in-graph decoding is not published.")

FAN_2DFAN4 = ModelSpec(
    name="2dfan4",
    task="landmark",
    arch="fan4_standin",
    inputs=(TensorSpec("input", F32, ("N", 3, 256, 256)),),
    outputs=(TensorSpec("landmarks", F32, ("N", 68, 3)),
             TensorSpec("heatmaps", F32, ("N", 68, 64, 64))),
    # detect_with_2dfan4: the uint8 crop (BGR, as FaceFusion's frames are) / 255, NCHW.
    preprocess=Preprocess((256, 256), (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), "BGR"),
    template=None,
    url=ff_url("2dfan4", "models-3.0.0"),
    sha256=None, size=None,
    license="MIT (breadbread1984, 2018; FaceFusion's code is OpenRAIL-AS)",
    source=FF_LANDMARKER_CODE,
    sha256_verified=False,
    notes=("FaceFusion's 68-point landmarker. Crop (detect_with_2dfan4): scale = 195 / the box's "
           "longer side, the box centred in 256x256 (warp_face_by_translation, bilinear, black "
           "border), turned upright by the face angle (create_rotation_matrix_and_size, "
           "multiples of 90 degrees), CLAHE on L when the crop is dark "
           "(conditional_optimize_contrast), / 255. Output 0 holds x, y on the 64x64 grid "
           "(points = out[:, :, :2] / 64 * 256, mapped back through both warps); score = "
           "interp(mean over the 68 of each heatmap's max, [0, 0.9], [0, 1]). The input name "
           "'input' is confirmed by FaceFusion's code; the output names are not (FaceFusion "
           f"reads them by position). {CRC32_ONLY} {FAN_STANDIN}"),
    extra={"crop": {"box_scale": 195.0, "size": 256, "warp": "warp_face_by_translation"},
           "heatmap_grid": 64, "score": "interp(mean(amax(heatmaps, (2, 3))), [0, 0.9], [0, 1])",
           "score_threshold": 0.5, "landmark_5": "convert_to_face_landmark_5",
           "facefusion_vendor": "breadbread1984",
           "unverified_io": ["landmarks", "heatmaps"], "standin": FAN_STANDIN,
           **ff_links("2dfan4", "models-3.0.0")},
)

LANDMARKERS = (FAN_2DFAN4,)
