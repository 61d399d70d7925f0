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
        if self.kernels not in KERNELS:
            raise InputError(f"kernels '{self.kernels}' | unknown; expected one of: "
                             f"{', '.join(KERNELS)}")
        if self.precision not in PRECISIONS:
            raise EngineError(f"precision '{self.precision}' | unknown; expected one of: "
                              f"{', '.join(PRECISIONS)}")
        if self.detect_every < 1 or self.gen_batch < 1:
            raise InputError(f"detect_every {self.detect_every}, gen_batch {self.gen_batch} | "
                             "expected both >= 1")
