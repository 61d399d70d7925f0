"""FaceFusion 3.8.1's own models, by FaceFusion's names: the identity converters and the
HyperSwap swappers.

Every fact here is read from FaceFusion 3.8.1 (``facefusion/processors/modules/face_swapper/
core.py``): ``create_static_model_set`` gives the URLs, template, size, mean / standard
deviation, model ``type`` and licence; ``prepare_source_embedding`` /
``convert_source_embedding`` say which identity vector each type gets, ``prepare_crop_frame`` /
``normalize_crop_frame`` the input normalisation and output de-normalisation. FaceFusion
publishes CRC32 ``.hash`` files only, never sha256, so every file here needs ``--trust``.

Identity transforms (``extra["source_transform"]``), as ``prepare_source_embedding`` applies
them per model type (at FaceFusion's default ``face_swapper_weight`` 0.5, where
``balance_source_embedding`` mixes in 0 % of the target embedding):
  * ``l2norm`` (hyperswap): ``source_face.embedding_norm``, the normalised ArcFace vector.
  * ``converter_l2norm`` (simswap, hififace): l2norm(converter(raw ArcFace embedding)).
  * ``converter`` (ghost): converter(raw ArcFace embedding), not normalised.
"""

from __future__ import annotations

from .spec import ModelSpec, Preprocess, TensorSpec

F32 = "float32"
FF_ASSETS = "https://github.com/facefusion/facefusion-assets/releases/download"
FF_SWAPPER_CODE = ("https://github.com/facefusion/facefusion/blob/3.8.1/"
                   "facefusion/processors/modules/face_swapper/core.py")
FF_HF = "https://huggingface.co/facefusion"
CRC32_ONLY = ("FaceFusion publishes only a CRC32 .hash file beside it; no public sha256 was "
              "found, so pulling it needs --trust.")


def ff_url(name: str, release: str) -> str:
    """The .onnx of FaceFusion's asset ``name`` in its ``release`` (e.g. "models-3.0.0")."""
    return f"{FF_ASSETS}/{release}/{name}.onnx"


def ff_links(name: str, release: str) -> dict[str, str]:
    """The spec ``extra`` entries every FaceFusion asset carries: its CRC32 .hash and the
    Hugging Face mirror, of the same release as ``ff_url``."""
    return {"facefusion_hash": f"{FF_ASSETS}/{release}/{name}.hash",
            "mirror": f"{FF_HF}/{release}/resolve/main/{name}.onnx"}


# Not a real preprocessing: a converter takes a vector, not an image.
VECTOR = Preprocess(None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "RGB")


def _converter(name: str, swappers: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        task="convert",
        arch="converter512",
        inputs=(TensorSpec("input", F32, ("N", 512)),),
        outputs=(TensorSpec("output", F32, ("N", 512)),),
        preprocess=VECTOR,
        template=None,
        url=ff_url(name, "models-3.4.0"),
        sha256=None, size=None,
        license=("unknown (FaceFusion states none for its converters; FaceFusion's code is "
                 "OpenRAIL-AS)"),
        source=FF_SWAPPER_CODE,
        sha256_verified=False,
        notes=(f"FaceFusion's embedding converter for {swappers}: maps the raw (not normalised) "
               "arcface_w600k_r50 embedding into the ArcFace space the swapper was trained "
               "with (face_swapper/core.py forward_convert_embedding feeds it as 'input'). "
               f"{CRC32_ONLY} The output name 'output' is unverified (FaceFusion reads output "
               "[0]). Synthetic stand-in: one 512x512 linear layer with this contract (the real "
               "architecture is not published)."),
        extra={"embedder": "arcface_w600k_r50", "input": "raw embedding (not normalised)",
               "unverified_io": ["output"], "standin": "linear 512x512 (architecture unknown)",
               **ff_links(name, "models-3.4.0")},
    )


CROSSFACE_SIMSWAP = _converter("crossface_simswap", "simswap_256 and simswap_unofficial_512")
CROSSFACE_GHOST = _converter("crossface_ghost", "ghost_1_256, ghost_2_256 and ghost_3_256")
CROSSFACE_HIFIFACE = _converter("crossface_hififace", "hififace_unofficial_256")

# HyperSwap (FaceFusion, 2025): 'type': 'hyperswap', 'template': 'arcface_128', 'size': (256,
# 256), mean = std = 0.5, 'precision': 'fp16' (the file's weights; FaceFusion feeds float32
# arrays, so its I/O is float32), licence ResearchRAIL.
HYPERSWAP_FLOPS_NOTE = ("HyperSwap's architecture and FLOPs are not published and its file is "
                        "not reachable here; the synthetic stand-in is the SimSwap-256 AdaIN "
                        "generator (125.7 GFLOP at width 1) with a tanh output, so its cost is "
                        "an estimate, not the real model's.")


def _hyperswap(variant: str) -> ModelSpec:
    name = f"hyperswap_{variant}_256"
    return ModelSpec(
        name=name,
        task="swap",
        arch="hyperswap_standin",
        inputs=(TensorSpec("target", F32, ("N", 3, 256, 256)),
                TensorSpec("source", F32, ("N", 512))),
        outputs=(TensorSpec("output", F32, ("N", 3, 256, 256)),),
        # prepare_crop_frame: BGR -> RGB, / 255, (x - 0.5) / 0.5; here in pixels.
        preprocess=Preprocess((256, 256), (127.5, 127.5, 127.5), (127.5, 127.5, 127.5), "RGB"),
        template="arcface_128",
        url=ff_url(name, "models-3.3.0"),
        sha256=None, size=None,
        license="ResearchRAIL (FaceFusion)",
        source=FF_SWAPPER_CODE,
        sha256_verified=False,
        notes=(f"FaceFusion's own swapper ({name}; FaceFusion 3.8.1's --face-swapper-model "
               "default is hyperswap_1a_256). Inputs 'target' (RGB, (x/255 - 0.5)/0.5, "
               "arcface_128 template at 256) and 'source' (the L2-normalised w600k_r50 "
               "embedding, no converter) are fed by name in forward_swap_face; the output is "
               "in [-1, 1] and normalize_crop_frame maps it with x * 0.5 + 0.5, clip, RGB->BGR, "
               f"* 255. {CRC32_ONLY} The output name 'output' is unverified. "
               f"{HYPERSWAP_FLOPS_NOTE}"),
        extra={"source_transform": "l2norm", "embedder": "arcface_w600k_r50",
               "facefusion_type": "hyperswap", "facefusion_precision": "fp16",
               "output": "tanh", "output_denorm": "clip(out * 0.5 + 0.5, 0, 1) * 255, RGB",
               "unverified_io": ["output"], "standin": HYPERSWAP_FLOPS_NOTE,
               **ff_links(name, "models-3.3.0")},
    )


HYPERSWAP_1A_256 = _hyperswap("1a")
HYPERSWAP_1B_256 = _hyperswap("1b")
HYPERSWAP_1C_256 = _hyperswap("1c")

STANDIN_NOTE = ("The synthetic stand-in is a generator with this contract (the SimSwap AdaIN "
                "generator, tanh or clipped output as the contract says), not this model's "
                "published architecture; its FLOPs are an estimate.")


def _embedding_swapper(name: str, *, kind: str, release: str, template: str, size: int,
                       unit_mean: float, unit_std: float, converter: str, normalised: bool,
                       tanh: bool, license: str, vendor: str) -> ModelSpec:
    """A FaceFusion swapper fed an identity vector through a converter (ghost, hififace,
    simswap_unofficial_512), from its create_static_model_set entry."""
    transform = "converter_l2norm" if normalised else "converter"
    denorm = (f"clip(out * {unit_std} + {unit_mean}, 0, 1) * 255, RGB" if tanh
              else "clip(out, 0, 1) * 255, RGB (no de-normalisation)")
    return ModelSpec(
        name=name,
        task="swap",
        arch="tanh_standin" if tanh else "clip_standin",
        inputs=(TensorSpec("target", F32, ("N", 3, size, size)),
                TensorSpec("source", F32, ("N", 512))),
        outputs=(TensorSpec("output", F32, ("N", 3, size, size)),),
        preprocess=Preprocess((size, size), (unit_mean * 255,) * 3, (unit_std * 255,) * 3, "RGB"),
        template=template,
        url=ff_url(name, release),
        sha256=None, size=None,
        license=f"{license} ({vendor})",
        source=FF_SWAPPER_CODE,
        sha256_verified=False,
        notes=(f"FaceFusion type '{kind}' ({vendor}): template {template} at {size}, RGB "
               f"(x/255 - {unit_mean})/{unit_std}; source = "
               f"{'l2norm(' if normalised else ''}{converter}(raw w600k_r50 embedding)"
               f"{')' if normalised else ''} (prepare_source_embedding); output {denorm} "
               f"(normalize_crop_frame). {CRC32_ONLY} The output name 'output' is unverified. "
               f"{STANDIN_NOTE}"),
        extra={"source_transform": transform, "converter": converter,
               "embedder": "arcface_w600k_r50", "facefusion_type": kind,
               **({"output": "tanh"} if tanh else {}), "output_denorm": denorm,
               "unverified_io": ["output"], "standin": STANDIN_NOTE,
               **ff_links(name, release)},
    )


# tanh specs: out * 0.5 + 0.5 is (out + 1) / 2, NeuralSwapper's 'tanh' output mapping.
GHOSTS = tuple(_embedding_swapper(
    f"ghost_{i}_256", kind="ghost", release="models-3.0.0", template="arcface_112_v1", size=256,
    unit_mean=0.5, unit_std=0.5, converter="crossface_ghost", normalised=False, tanh=True,
    license="Apache-2.0", vendor="ai-forever") for i in (1, 2, 3))
HIFIFACE_UNOFFICIAL_256 = _embedding_swapper(
    "hififace_unofficial_256", kind="hififace", release="models-3.1.0", template="mtcnn_512",
    size=256, unit_mean=0.5, unit_std=0.5, converter="crossface_hififace", normalised=True,
    tanh=True, license="Unknown", vendor="GuijiAI")
SIMSWAP_UNOFFICIAL_512 = _embedding_swapper(
    "simswap_unofficial_512", kind="simswap", release="models-3.0.0", template="arcface_112_v1",
    size=512, unit_mean=0.0, unit_std=1.0, converter="crossface_simswap", normalised=True,
    tanh=False, license="Non-Commercial", vendor="neuralchen")

def _image_source_swapper(name: str, *, kind: str, source_template: str, source_size: int,
                          unit_mean: float, unit_std: float, tanh: bool, license: str,
                          vendor: str) -> ModelSpec:
    """A FaceFusion swapper whose 'source' is the source face itself, as an image
    (face_swapper/core.py ``prepare_source_frame``: blendswap, uniface). Contract only: the
    pipeline does not feed image sources yet, so these are not among the swapper choices."""
    denorm = (f"clip(out * {unit_std} + {unit_mean}, 0, 1) * 255, RGB" if tanh
              else "clip(out, 0, 1) * 255, RGB (no de-normalisation)")
    return ModelSpec(
        name=name,
        task="swap",
        arch="unpublished",
        inputs=(TensorSpec("target", F32, ("N", 3, 256, 256)),
                TensorSpec("source", F32, ("N", 3, source_size, source_size))),
        outputs=(TensorSpec("output", F32, ("N", 3, 256, 256)),),
        preprocess=Preprocess((256, 256), (unit_mean * 255,) * 3, (unit_std * 255,) * 3, "RGB"),
        template="ffhq_512",
        url=ff_url(name, "models-3.0.0"),
        sha256=None, size=None,
        license=f"{license} ({vendor})",
        source=FF_SWAPPER_CODE,
        sha256_verified=False,
        notes=(f"FaceFusion type '{kind}' ({vendor}): target = ffhq_512 crop at 256, RGB "
               f"(x/255 - {unit_mean})/{unit_std}; source = the source face warped with "
               f"{source_template} at {source_size}, RGB / 255, no mean/std "
               f"(prepare_source_frame); output {denorm}. {CRC32_ONLY} The output name "
               "'output' is unverified. Not runnable yet: the pipeline feeds identity vectors "
               "only; no synthetic stand-in."),
        extra={"source_transform": "image", "embedder": "arcface_w600k_r50",
               "source_template": source_template, "source_size": source_size,
               "facefusion_type": kind, **({"output": "tanh"} if tanh else {}),
               "output_denorm": denorm, "unverified_io": ["output"], "runnable": False,
               **ff_links(name, "models-3.0.0")},
    )


# FaceFusion's 'arcface_112_v2' is fusionrt's 'arcface_112' (insightface arcface_dst).
BLENDSWAP_256 = _image_source_swapper(
    "blendswap_256", kind="blendswap", source_template="arcface_112", source_size=112,
    unit_mean=0.0, unit_std=1.0, tanh=False, license="Non-Commercial", vendor="mapooon")
UNIFACE_256 = _image_source_swapper(
    "uniface_256", kind="uniface", source_template="ffhq_512", source_size=256,
    unit_mean=0.5, unit_std=0.5, tanh=True, license="Unknown", vendor="xc-csc101")

CONVERTERS = (CROSSFACE_SIMSWAP, CROSSFACE_GHOST, CROSSFACE_HIFIFACE)
SWAPPERS = (HYPERSWAP_1A_256, HYPERSWAP_1B_256, HYPERSWAP_1C_256, *GHOSTS,
            HIFIFACE_UNOFFICIAL_256, SIMSWAP_UNOFFICIAL_512, BLENDSWAP_256, UNIFACE_256)
