"""FaceFusion 3.8.1's face enhancers, by FaceFusion's names (task ``"enhance"``).

Every fact is read from FaceFusion 3.8.1 ``facefusion/processors/modules/face_enhancer/``:
``core.py`` ``create_static_model_set`` gives the URL, template, size, vendor and licence;
``prepare_crop_frame`` the input (BGR -> RGB, x / 255, (x - 0.5) / 0.5, NCHW float32);
``forward`` feeds the graph inputs by name, ``'input'`` always and ``'weight'`` where the graph
has one (``has_weight_input``: CodeFormer), as ``numpy.array([face_enhancer_weight])
.astype(numpy.double)``, a float64 (1,) array; ``normalize_crop_frame`` maps output [0][0] with
clip(-1, 1), (x + 1) / 2, x 255, round, RGB -> BGR. Defaults: ``--face-enhancer-blend`` 80
(of 0..100) and ``--face-enhancer-weight`` 0.5 (of 0..1 by 0.05) from ``core.py``
``register_args`` and ``choices.py``; ``--face-mask-blur`` 0.3 (``facefusion/program.py``).
FaceFusion publishes CRC32 ``.hash`` files only, never sha256: every file here needs
``--trust``.
"""

from __future__ import annotations

from .facefusion import CRC32_ONLY, F32, ff_links, ff_url
from .spec import ModelSpec, Preprocess, TensorSpec

FF_ENHANCER_CODE = ("https://github.com/facefusion/facefusion/blob/3.8.1/"
                    "facefusion/processors/modules/face_enhancer/core.py")
DEFAULT_BLEND = 0.8   # --face-enhancer-blend 80 (percent)
DEFAULT_WEIGHT = 0.5  # --face-enhancer-weight 0.5
DEFAULT_MASK_BLUR = 0.3  # --face-mask-blur 0.3

# Per face, GFLOP = 2 x MACs: (public architecture's, measured; stand-in's, measured). Public
# ones: the authors' code at its release config, random weights, torch.utils.flop_counter
# (conv + matmul + attention) on torch 2.13 CPU; stand-ins: fusionrt.models.arch.profile.
ENHANCER_GFLOP = {
    "gfpgan_1.4": (395.6, 390.0, "TencentARC/GFPGAN@7552a77 gfpgan/archs/gfpganv1_clean_arch.py "
                   "GFPGANv1Clean(out_size=512, channel_multiplier=2, sft_half=True), 86.4 M "
                   "parameters"),
    "gpen_bfr_256": (17.4, 18.0, "yangxy/GPEN@2c73670 face_model/gpen_model.py FullGenerator("
                     "256, 512, 8, channel_multiplier=1, narrow=0.5), 18.9 M parameters"),
    "gpen_bfr_512": (276.2, 274.9, "yangxy/GPEN@2c73670 face_model/gpen_model.py FullGenerator("
                     "512, 512, 8, channel_multiplier=2, narrow=1), 71.0 M parameters"),
    "codeformer": (809.8, 795.0, "sczhou/CodeFormer@b33cc7d basicsr/archs/codeformer_arch.py "
                   "CodeFormer(dim_embd=512, codebook_size=1024, n_head=8, n_layers=9, "
                   "connect_list=['32', '64', '128', '256']), w=0.5, 94.1 M parameters"),
    "restoreformer_plus_plus": (687.6, 680.4, "wzhouxiff/RestoreFormerPlusPlus@59d250f "
                                "gradio_demo/RestoreFormer_arch.py "
                                "VQVAEGANMultiHeadTransformer(head_size=4, ex_multi_scale_num=1), "
                                "73.5 M parameters"),
}

# normalize_crop_frame's output mapping, as NeuralSwapper's "tanh" range does it.
DENORM = "clip(out, -1, 1) * 0.5 + 0.5, * 255, round, RGB -> BGR"


def _enhancer(name: str, *, arch: str, template: str, size: int, license: str, vendor: str,
              weight: bool = False) -> ModelSpec:
    real, standin, where = ENHANCER_GFLOP[name]
    standin_note = (f"stand-in, {standin} GFLOP per face (a same-contract U-Net with random "
                    f"weights, not {vendor}'s architecture); real model's FLOPs: {real} GFLOP "
                    f"({where}; measured here on the public architecture, not on FaceFusion's "
                    "ONNX file)")
    inputs = [TensorSpec("input", F32, ("N", 3, size, size))]
    if weight:
        inputs.append(TensorSpec("weight", "float64", (1,)))
    weight_note = (" 'weight' is FaceFusion's --face-enhancer-weight as a float64 (1,) array "
                   "(one value for the whole batch; CodeFormer's fidelity w)." if weight else "")
    return ModelSpec(
        name=name,
        task="enhance",
        arch=arch,
        inputs=tuple(inputs),
        outputs=(TensorSpec("output", F32, ("N", 3, size, size)),),
        # prepare_crop_frame: BGR -> RGB, / 255, (x - 0.5) / 0.5; here in pixels.
        preprocess=Preprocess((size, size), (127.5, 127.5, 127.5), (127.5, 127.5, 127.5), "RGB"),
        template=template,
        url=ff_url(name, "models-3.0.0"),
        sha256=None, size=None,
        license=f"{license} ({vendor}, as FaceFusion states)",
        source=FF_ENHANCER_CODE,
        sha256_verified=False,
        notes=(f"FaceFusion face enhancer ({vendor}): template {template} at {size}, input "
               "'input' RGB (x/255 - 0.5)/0.5 fed by name in forward;" + weight_note +
               f" Output [0] is in [-1, 1]: {DENORM} (normalize_crop_frame). {CRC32_ONLY} The "
               "output name 'output' and whether the released graph takes a batch above 1 are "
               "unverified (FaceFusion reads output [0] and feeds one face per call). "
               f"Synthetic: {standin_note}."),
        extra={"facefusion_template": template, "output": "tanh", "output_denorm": DENORM,
               "has_weight_input": weight, "default_blend": DEFAULT_BLEND,
               "default_weight": DEFAULT_WEIGHT, "default_mask_blur": DEFAULT_MASK_BLUR,
               "unverified_io": ["output"], "standin": standin_note,
               "gflop": {"real": real, "standin": standin, "real_source": where},
               **ff_links(name, "models-3.0.0")},
    )


GFPGAN_1_4 = _enhancer("gfpgan_1.4", arch="gfpgan_standin", template="ffhq_512", size=512,
                       license="Apache-2.0", vendor="TencentARC")
GPEN_BFR_256 = _enhancer("gpen_bfr_256", arch="gpen256_standin", template="arcface_128",
                         size=256, license="Non-Commercial", vendor="yangxy")
GPEN_BFR_512 = _enhancer("gpen_bfr_512", arch="gpen512_standin", template="ffhq_512", size=512,
                         license="Non-Commercial", vendor="yangxy")
CODEFORMER = _enhancer("codeformer", arch="codeformer_standin", template="ffhq_512", size=512,
                       license="S-Lab-1.0", vendor="sczhou", weight=True)
RESTOREFORMER_PLUS_PLUS = _enhancer("restoreformer_plus_plus", arch="restoreformer_standin",
                                    template="ffhq_512", size=512, license="Apache-2.0",
                                    vendor="wzhouxiff")

ENHANCERS = (GFPGAN_1_4, GPEN_BFR_256, GPEN_BFR_512, CODEFORMER, RESTOREFORMER_PLUS_PLUS)
