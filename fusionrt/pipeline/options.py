"""The enhancer, mask and pixel-boost flags, FaceFusion's options under fusionrt's spellings:
one definition for every front end that takes them (``fusionrt swap``, ``serve``, ``live``,
``batch``); and ``--max-pixels``.

``--enhancer gfpgan_1.4:80`` is FaceFusion's ``--face-enhancer-model gfpgan_1.4
--face-enhancer-blend 80``; ``--mask box,occlusion,region`` its ``--face-mask-types``, and so
on. ``post_settings(args)`` turns them into ``PipelineConfig`` fields.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InputError
from .host.masks import AREAS, MASK_TYPES, REGIONS
from .image_io import MAX_PIXELS
from .settings import ENHANCER_CHOICES, OCCLUDER_CHOICES, PARSER_CHOICES


def add_post_args(p: argparse.ArgumentParser) -> None:
    """Add the flags to a sub-command's parser."""
    g = p.add_argument_group("enhancer, masks and pixel boost (FaceFusion's options)")
    g.add_argument("--enhancer", default="none", metavar="NAME[:BLEND]",
                   help="face enhancer after the swap: "
                        f"{', '.join(ENHANCER_CHOICES)}; BLEND 0-100 (default 80) or 0-1")
    g.add_argument("--enhancer-weight", type=float, default=0.5, metavar="W",
                   help="CodeFormer's fidelity input, 0-1 (default 0.5)")
    g.add_argument("--mask", default="box", metavar="TYPES",
                   help=f"paste masks, combined by their minimum: {','.join(MASK_TYPES)} "
                        "(area needs --landmarker 2dfan4)")
    g.add_argument("--mask-regions", default="", metavar="R,R,...",
                   help=f"region mask classes (default all): {','.join(REGIONS)}")
    g.add_argument("--mask-areas", default="", metavar="A,A,...",
                   help=f"area mask parts (default all): {','.join(AREAS)}")
    g.add_argument("--mask-blur", type=float, default=None, metavar="B",
                   help="FaceFusion's box mask with this blur, 0-1 (default: fusionrt's "
                        "feathered box; FaceFusion's default is 0.3)")
    g.add_argument("--mask-padding", default="0", metavar="T[,R,B,L]",
                   help="box mask padding in %% of the crop, 1 to 4 values (default 0)")
    g.add_argument("--occluder", default="xseg_1", choices=OCCLUDER_CHOICES,
                   help="occlusion mask model")
    g.add_argument("--face-parser", default="bisenet_resnet_34", choices=PARSER_CHOICES,
                   help="region mask model")
    g.add_argument("--pixel-boost", type=int, default=0, metavar="N",
                   help="swap at N x N through tiles of the swapper's size, e.g. 512 or 1024 "
                        "for inswapper_128 (default 0: the swapper's own size)")


def add_max_pixels_arg(p: argparse.ArgumentParser) -> None:
    """``--max-pixels`` (``fusionrt swap``, ``batch``): the input size limit."""
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                   help="refuse images and video frames larger than N pixels, checked from the "
                        f"header before decoding (default {MAX_PIXELS:,}: 8K and 50 MP photos; "
                        "0 = no limit)")


def max_pixels(args: argparse.Namespace) -> int | None:
    """``--max-pixels`` as the limit ``read_image`` and ``VideoConfig`` take (None: no limit)."""
    limit = getattr(args, "max_pixels", MAX_PIXELS)
    if limit is not None and limit < 0:
        raise InputError(f"--max-pixels {limit} | expected >= 0 (0 = no limit)")
    return limit if limit else None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in str(text).split(",") if t.strip())


def parse_enhancer(text: str) -> tuple[str, float]:
    """``NAME`` or ``NAME:BLEND`` → (name, blend in 0..1): a BLEND above 1 is a percent, as
    FaceFusion's ``--face-enhancer-blend 80``."""
    name, _, blend = str(text).partition(":")
    if not blend:
        return name, 0.8
    try:
        b = float(blend)
    except ValueError:
        raise InputError(f"--enhancer '{text}' | blend '{blend}' is not a number; expected "
                         "NAME:80 or NAME:0.8") from None
    b = b / 100.0 if b > 1.0 else b
    if not 0.0 <= b <= 1.0:
        raise InputError(f"--enhancer '{text}' | blend {blend} out of range; expected 0-100")
    return name, b


def post_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as ``PipelineConfig`` fields (a parser without them: the defaults)."""
    name, blend = parse_enhancer(getattr(args, "enhancer", "none"))
    try:
        padding = tuple(int(v) for v in _csv(getattr(args, "mask_padding", "0")))
    except ValueError:
        raise InputError(f"--mask-padding '{args.mask_padding}' | expected 1 to 4 integers "
                         "0-100, e.g. 10 or 0,5,10,5") from None
    return dict(enhancer=name, enhancer_blend=blend,
                enhancer_weight=float(getattr(args, "enhancer_weight", 0.5)),
                masks=_csv(getattr(args, "mask", "box")),
                mask_regions=_csv(getattr(args, "mask_regions", "")),
                mask_areas=_csv(getattr(args, "mask_areas", "")),
                mask_blur=getattr(args, "mask_blur", None),
                mask_padding=padding or (0,),  # 1 to 4 values: PipelineConfig.check expands
                occluder=getattr(args, "occluder", "xseg_1"),
                face_parser=getattr(args, "face_parser", "bisenet_resnet_34"),
                pixel_boost=int(getattr(args, "pixel_boost", 0)))
