"""FaceFusion 3.8.1's face-mask models, by FaceFusion's names: the XSeg occluders and the
BiSeNet face parsers.

Every fact is read from FaceFusion 3.8.1 ``facefusion/face_masker.py``:
``create_static_model_set`` (URLs, ``size``, vendor, licence, year), ``create_occlusion_mask``
and ``forward_occlude_face`` (xseg: the crop resized to 256x256, BGR, / 255, NHWC, fed by name
as ``input``; output 0 batch 0 is a (256, 256, 1) mask, clipped to [0, 1]) and
``create_region_mask`` / ``forward_parse_face`` (bisenet: the crop resized to 512x512, RGB,
ImageNet mean / std, NCHW, fed as ``input``; output 0 batch 0 is (19, 512, 512) class logits,
argmax over the classes). FaceFusion reads outputs by position, so the output names here are
unverified. ``--face-occluder-model`` defaults to xseg_1 (``many`` = the minimum of all three),
``--face-parser-model`` to bisenet_resnet_34 (``facefusion/program.py``).
"""

from __future__ import annotations

from .facefusion import CRC32_ONLY, F32, ff_links, ff_url
from .spec import ModelSpec, Preprocess, TensorSpec

FF_MASKER_CODE = "https://github.com/facefusion/facefusion/blob/3.8.1/facefusion/face_masker.py"

XSEG_STANDIN = ("The synthetic stand-in (fusionrt/models/arch/standin_mask.py xseg_standin) is "
                "an XSeg-shaped encoder-decoder (DeepFaceLab XSegNet's channel plan 32..256, six "
                "levels, 4x4 dense bottleneck, skip connections, FRN + TLU, sigmoid) with random "
                "weights: 17.72 M parameters, 34.81 GFLOP per 256x256 crop at width 1 "
                "(measured with fusionrt.models.arch.profile); the real files' exact graph and "
                "FLOPs are not published here.")
BISENET_STANDIN = ("The synthetic stand-in (fusionrt/models/arch/standin_mask.py) is BiSeNet "
                   "after yakhyo/face-parsing's published architecture (ResNet-{depth} context "
                   "path, attention refinement, feature fusion, 19-class head; only the main "
                   "output) with random weights: {params} M parameters, {gflop} GFLOP per "
                   "512x512 crop at width 1 (measured with fusionrt.models.arch.profile).")


def _xseg(name: str, release: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        task="occlude",
        arch="xseg_standin",
        inputs=(TensorSpec("input", F32, ("N", 256, 256, 3)),),
        outputs=(TensorSpec("output", F32, ("N", 256, 256, 1)),),
        # create_occlusion_mask: cv2.resize(crop, (256, 256)), float32 / 255, BGR, NHWC
        preprocess=Preprocess((256, 256), (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), "BGR",
                              layout="NHWC"),
        template=None,
        url=ff_url(name, release),
        sha256=None, size=None,
        license="GPL-3.0 (DeepFaceLab, 2021)",
        source=FF_MASKER_CODE,
        sha256_verified=False,
        notes=(f"FaceFusion's face occluder {name} (DeepFaceLab XSeg): input 'input' "
               "(N, 256, 256, 3) = the target crop before the swap, resized to 256x256, BGR, "
               "/ 255, NHWC (create_occlusion_mask; the name is confirmed by "
               "forward_occlude_face). Output 0 is read by position: its batch item is "
               "transposed with three axes and cv2.resize'd to the crop, so it is (256, 256, 1) "
               "per face, NHWC like DeepFaceLab's own export (out_mask:0); the name 'output' is "
               "unverified. The mask is clipped to [0, 1], resized to the crop, blurred "
               f"(sigma 5) and remapped ((m.clip(0.5, 1) - 0.5) * 2). {CRC32_ONLY} "
               f"{XSEG_STANDIN}"),
        extra={"facefusion_vendor": "DeepFaceLab", "facefusion_year": 2021,
               "output": "mask in [0, 1], NHWC", "unverified_io": ["output"],
               "standin": XSEG_STANDIN,
               **ff_links(name, release)},
    )


def _bisenet(depth: int, release: str, params: str, gflop: str) -> ModelSpec:
    name = f"bisenet_resnet_{depth}"
    standin = BISENET_STANDIN.format(depth=depth, params=params, gflop=gflop)
    return ModelSpec(
        name=name,
        task="parse",
        arch=f"bisenet_resnet{depth}_standin",
        inputs=(TensorSpec("input", F32, ("N", 3, 512, 512)),),
        outputs=(TensorSpec("output", F32, ("N", 19, 512, 512)),),
        # create_region_mask: RGB, / 255, ImageNet mean (0.485, 0.456, 0.406) and std
        # (0.229, 0.224, 0.225); here in pixels
        preprocess=Preprocess((512, 512), (123.675, 116.28, 103.53), (58.395, 57.12, 57.375),
                              "RGB"),
        template=None,
        url=ff_url(name, release),
        sha256=None, size=None,
        license="MIT (yakhyo/face-parsing, 2024)",
        source=FF_MASKER_CODE,
        sha256_verified=False,
        notes=(f"FaceFusion's face parser {name} (yakhyo/face-parsing BiSeNet, CelebAMask-HQ's "
               "19 classes): input 'input' (N, 3, 512, 512) = the swapped crop resized to "
               "512x512, RGB, (x / 255 - mean) / std with ImageNet's mean and std, NCHW "
               "(create_region_mask; the name is confirmed by forward_parse_face). Output 0 "
               "(N, 19, 512, 512) holds class logits (argmax over axis 0 of each face, then "
               "the chosen regions' class ids); yakhyo's onnx_export.py names it 'output' and "
               "exports two auxiliary heads after it, which FaceFusion never reads (unverified "
               f"for FaceFusion's file). {CRC32_ONLY} {standin}"),
        extra={"facefusion_vendor": "yakhyo", "facefusion_year": 2024, "classes": 19,
               "output": "class logits, argmax over axis 1", "unverified_io": ["output"],
               "standin": standin,
               **ff_links(name, release)},
    )


XSEG_1 = _xseg("xseg_1", "models-3.1.0")
XSEG_2 = _xseg("xseg_2", "models-3.1.0")
XSEG_3 = _xseg("xseg_3", "models-3.2.0")
BISENET_RESNET_18 = _bisenet(18, "models-3.1.0", "13.15", "26.77")
BISENET_RESNET_34 = _bisenet(34, "models-3.0.0", "23.26", "46.10")

OCCLUDERS = (XSEG_1, XSEG_2, XSEG_3)
PARSERS = (BISENET_RESNET_18, BISENET_RESNET_34)
MASKERS = OCCLUDERS + PARSERS
