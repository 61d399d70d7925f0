"""The settings of a swap: one dataclass for every path (CLI, serve, Triton, Ray, bench), and
the check every path runs before planning (``plan.plan_stages`` turns them into a plan)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import EngineError, InputError, ModelError
from ..models.zoo import ZOO
from .select import MODES

# "auto" tries these in order (best quality first) and takes the first with real weights.
# (swap specs marked ``runnable: False``, FaceFusion's image-source blendswap/uniface, are
# contracts only: the pipeline feeds identity vectors, not source images)
NEURAL_SWAPPERS = tuple(n for n, s in ZOO.items()
                        if s.task == "swap" and s.extra.get("runnable", True))
SWAPPER_CHOICES = ("auto", "classic") + NEURAL_SWAPPERS
# the landmark stage (FaceFusion's 2dfan4) after detection, or none
LANDMARKER_CHOICES = ("none",) + tuple(n for n, s in ZOO.items() if s.task == "landmark")
DETECTOR_CHOICES = tuple(n for n, s in ZOO.items() if s.task == "detect")
# after the paste: FaceFusion's face enhancers (gfpgan_1.4, codeformer, …), or none
ENHANCER_CHOICES = ("none",) + tuple(n for n, s in ZOO.items() if s.task == "enhance")
OCCLUDER_CHOICES = tuple(n for n, s in ZOO.items() if s.task == "occlude")
PARSER_CHOICES = tuple(n for n, s in ZOO.items() if s.task == "parse")
KERNELS = ("auto", "host", "device")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


@dataclass
class PipelineConfig:
    """Every setting of a swap, on every path (CLI, serve, Triton, Ray, bench).

    ``swapper="auto"``: the first neural swapper with real weights installed, else
    ``"classic"``; synthetic weights only when named and ``allow_synthetic``."""

    swapper: str = "auto"
    engine: str = "default"  # one engine, "detect=ort-cuda,swap=trt", "default" or "auto"
    device: str = "cpu"      # cpu, cuda, cuda:N
    kernels: str = "auto"    # host (numpy), device (torch), auto: device on CUDA
    select: str = "largest"
    similarity_threshold: float = 0.4
    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    det_size: int = 640
    detector: str = "retinaface_mnet025"  # a detect-task zoo model (DETECTOR_CHOICES)
    detector_angles: tuple[int, ...] = (0,)  # also detect rotated by 90/180/270 (FaceFusion)
    landmarker: str = "none"  # 68 points after detection; its 5 replace the detector's
    feather: float = 0.1
    color_transfer: bool = False
    poisson: bool = False      # host kernels only
    allow_synthetic: bool = False
    threads: int | None = None  # CPU threads per engine (Ray workers share a machine)
    precision: str = "fp32"     # generator: fp32, tf32, fp16, bf16 (engines that support it)
    cuda_graphs: bool = True
    detect_every: int = 1       # 1: detect on every frame; N: track landmarks in between
    smoothing: float = 0.5      # landmark EMA weight at each detection when detect_every > 1
    gen_batch: int = 32         # crops per generator call (device kernels)
    timing: bool = True         # per-stage CUDA-event times (device kernels)
    frame_graph: bool = False   # batch 1 on CUDA: a frame's whole GPU work as one CUDA graph
    # FaceFusion's face enhancer after the paste (face_enhancer_model/_blend/_weight)
    enhancer: str = "none"
    enhancer_blend: float = 0.8     # FaceFusion's --face-enhancer-blend 80, as a fraction
    enhancer_weight: float = 0.5    # CodeFormer's fidelity input (--face-enhancer-weight)
    # FaceFusion's face masks (--face-mask-types), combined by their minimum
    masks: tuple[str, ...] = ("box",)
    mask_regions: tuple[str, ...] = ()   # region mask classes (); () = all of FaceFusion's
    mask_areas: tuple[str, ...] = ()     # area mask parts; () = all
    # None: fusionrt's feathered box (``feather``); a number: FaceFusion's create_box_mask blur
    mask_blur: float | None = None
    mask_padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, right, bottom, left, in %
    occluder: str = "xseg_1"             # FaceFusion's --face-occluder-model default
    face_parser: str = "bisenet_resnet_34"  # FaceFusion's --face-parser-model default
    pixel_boost: int = 0  # 0: the swapper's own size; N (a multiple of it): N x N through tiles

    def check(self) -> None:
        """Raise a one-line error for a setting no path accepts."""
        if self.select not in MODES:
            raise InputError(f"selection '{self.select}' | unknown; expected one of: "
                             f"{', '.join(MODES)}")
        if self.swapper in ZOO and ZOO[self.swapper].task == "swap" \
                and self.swapper not in NEURAL_SWAPPERS:
            raise ModelError(f"swapper '{self.swapper}' | takes the source face as an image, "
                             f"which the pipeline does not feed yet; expected one of: "
                             f"{', '.join(SWAPPER_CHOICES)}")
        if self.swapper not in SWAPPER_CHOICES:
            raise ModelError(f"swapper '{self.swapper}' | unknown; expected one of: "
                             f"{', '.join(SWAPPER_CHOICES)}")
        if self.landmarker not in LANDMARKER_CHOICES:
            what = (f"a '{ZOO[self.landmarker].task}' model" if self.landmarker in ZOO
                    else "unknown")
            raise ModelError(f"landmarker '{self.landmarker}' | {what}; expected one of: "
                             f"{', '.join(LANDMARKER_CHOICES)}")
        if self.kernels not in KERNELS:
            raise InputError(f"kernels '{self.kernels}' | unknown; expected one of: "
                             f"{', '.join(KERNELS)}")
        if self.precision not in PRECISIONS:
            raise EngineError(f"precision '{self.precision}' | unknown; expected one of: "
                              f"{', '.join(PRECISIONS)}")
        if not 64 <= int(self.det_size) <= 4096:
            raise InputError(f"--det-size | got {self.det_size}; expected 64 to 4096 (default "
                             "640; 320 is faster when faces are large)")
        if self.detect_every < 1 or self.gen_batch < 1:
            raise InputError(f"detect_every {self.detect_every}, gen_batch {self.gen_batch} | "
                             "expected both >= 1")
        if self.detector not in DETECTOR_CHOICES:
            what = f"a '{ZOO[self.detector].task}' model" if self.detector in ZOO else "unknown"
            raise ModelError(f"detector '{self.detector}' | {what}; expected one of: "
                             f"{', '.join(DETECTOR_CHOICES)}")
        from .host.detect import check_angles
        check_angles(self.detector_angles)
        self.check_post()

    @property
    def facefusion_box(self) -> bool:
        """The paste's box is FaceFusion's ``create_box_mask`` (``--mask-blur`` or
        ``--mask-padding`` given), not fusionrt's feathered box."""
        return self.mask_blur is not None or any(self.mask_padding)

    @property
    def box_blur(self) -> float:
        """FaceFusion's ``face_mask_blur``: ``--mask-blur``, else its default 0.3 (the
        enhancer's box and FaceFusion's box)."""
        from .host.masks import DEFAULT_BLUR
        return self.mask_blur if self.mask_blur is not None else DEFAULT_BLUR

    def check_post(self) -> None:
        """Enhancer, masks and pixel boost (FaceFusion's names and ranges)."""
        from .host.masks import check_areas, check_mask_types, check_regions, normalize_padding
        for name, value, choices in (("enhancer", self.enhancer, ENHANCER_CHOICES),
                                     ("occluder", self.occluder, OCCLUDER_CHOICES),
                                     ("face parser", self.face_parser, PARSER_CHOICES)):
            if value not in choices:
                what = f"a '{ZOO[value].task}' model" if value in ZOO else "unknown"
                raise ModelError(f"{name} '{value}' | {what}; expected one of: "
                                 f"{', '.join(choices)}")
        for name, v in (("--enhancer blend", self.enhancer_blend),
                        ("--enhancer-weight", self.enhancer_weight)):
            if not 0.0 <= float(v) <= 1.0:
                raise InputError(f"{name} | got {v}; expected 0..1 (or 0..100 as a percent)")
        self.masks = check_mask_types(self.masks)
        if not self.masks:
            raise InputError("--mask | empty; expected some of: box, occlusion, region, area")
        self.mask_regions = check_regions(self.mask_regions) if self.mask_regions else ()
        self.mask_areas = check_areas(self.mask_areas) if self.mask_areas else ()
        self.mask_padding = normalize_padding(self.mask_padding)
        if self.mask_blur is not None and not 0.0 <= float(self.mask_blur) <= 1.0:
            raise InputError(f"--mask-blur | got {self.mask_blur}; expected 0..1")
        if "area" in self.masks and self.landmarker == "none":
            raise InputError("--mask area | needs 68-point landmarks; add --landmarker 2dfan4")
        if self.pixel_boost < 0:
            raise InputError(f"--pixel-boost | got {self.pixel_boost}; expected 0 (off) or a "
                             "multiple of the swapper's size such as 256, 512 or 1024")
