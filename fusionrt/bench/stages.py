"""What the benchmark runs: one model per stage, its inputs, and how a row's outputs are compared
with the FP32 reference.

Inputs are the example photos resized to the stage's input and normalised per the model's
``ModelSpec`` (detector: the frame squashed to S×S; embed/swap: the photo as the crop), batches
alternate the two photos; swap ``source`` latents are seeded unit vectors. Timing does not depend
on pixel values, but parity on real-looking images says more than parity on noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..builders.parity import check, cosine, psnr
from ..models.spec import ModelSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEFAULT_FRAME = EXAMPLES / "grace_hopper.jpg"
DEFAULT_SOURCE = EXAMPLES / "astronaut.png"

SYNTHETIC_NOTE = "synthetic random weights: speed only; quality figures are for random weights"


@dataclass(frozen=True)
class StageDef:
    """One benchmark stage: the zoo model it runs (None: the whole pipeline) and its title."""

    key: str
    model: str | None
    title: str
    size: int | None = None  # square input side; None = from the model's spec


STAGES: dict[str, StageDef] = {s.key: s for s in (
    StageDef("detect", "retinaface_mnet025", "Detector RetinaFace MobileNet-0.25", 640),
    StageDef("embed", "arcface_w600k_r50", "ArcFace IResNet-50", 112),
    StageDef("swap128", "inswapper_128", "Generator inswapper_128", 128),
    StageDef("swap256", "simswap_256", "Generator simswap_256 (the seed's SimSwap-style row)", 256),
    StageDef("pipeline", None, "Whole pipeline on one frame (detect → embed → swap → paste)"),
    StageDef("video", None, "End to end 1080p video: the GPU path against the FaceFusion-style "
                            "loop (decode → swap → encode)"),
)}
MODEL_STAGES = ("detect", "embed", "swap128", "swap256")  # one model each, timed per batch


def _swapper_stages() -> dict[str, StageDef]:
    """Every other runnable swapper of the zoo as a stage named after it (``--stages
    hyperswap_1a_256``; ``--preset swappers`` runs them all). Stand-ins say so in the title."""
    from ..models.zoo import ZOO
    taken = {s.model for s in STAGES.values()}
    out = {}
    for name, spec in ZOO.items():
        if spec.task != "swap" or name in taken or not spec.extra.get("runnable", True) \
                or name.endswith("_fp16"):
            continue
        kind = " (synthetic stand-in architecture)" if "standin" in spec.extra else ""
        out[name] = StageDef(name, name, f"Generator {name}{kind}", spec.preprocess.size[0])
    return out


SWAPPER_STAGES = ("swap128", "swap256") + tuple(_swapper_stages())
STAGES.update(_swapper_stages())

# task → (metric, threshold). Detector: cosine of the raw heads (loc/conf/landmarks, the worst
# of the three); ArcFace: cosine of the embeddings; generators and the pipeline: PSNR in dB of
# the images (generator outputs in [0, 1], pipeline frames in 0..255).
PARITY_RULES: dict[str, tuple[str, float]] = {
    "detect": ("cosine", 0.999), "embed": ("cosine", 0.99), "swap": ("psnr", 30.0),
    "pipeline": ("psnr", 30.0)}


def read_images(paths: tuple[Path, ...]) -> list[np.ndarray]:
    """BGR uint8 photos; missing ones (e.g. a pip install without ``examples/``) are skipped."""
    import cv2
    images = []
    for p in paths:
        img = cv2.imread(str(p)) if Path(p).is_file() else None
        if img is not None:
            images.append(img)
    return images


def make_feeds(spec: ModelSpec, batch: int, size: int | None, images: list[np.ndarray],
               seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for ``batch`` items, each input per its ``TensorSpec`` and the spec's preprocess."""
    import cv2
    rng = np.random.default_rng(seed)
    pre = spec.preprocess
    feeds: dict[str, np.ndarray] = {}
    for t in spec.inputs:
        if len(t.shape) == 2:  # an identity latent (N, 512): unit length, as the pipeline feeds
            x = rng.standard_normal((batch, int(t.shape[1])))
            feeds[t.name] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(t.dtype)
            continue
        h = t.shape[2] if isinstance(t.shape[2], int) else size
        w = t.shape[3] if isinstance(t.shape[3], int) else size
        if not images:  # no photos: seeded noise in the 0..255 pixel range
            crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]
        else:
            crops = [cv2.resize(images[i % len(images)], (w, h), interpolation=cv2.INTER_AREA)
                     for i in range(batch)]
        x = np.stack(crops).astype(np.float32)
        if pre.channel_order == "RGB":
            x = x[..., ::-1]
        x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
        feeds[t.name] = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(t.dtype)
    return feeds


def slice_feeds(feeds: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[:n]) for k, v in feeds.items()}


def to_numpy(x: Any) -> np.ndarray:
    """A host float32 copy of a numpy array or torch tensor (any device, any float dtype)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)


def outputs_to_numpy(outs: Mapping[str, Any], items: int) -> dict[str, np.ndarray]:
    """The first ``items`` batch items of every output, on the host."""
    return {k: to_numpy(v)[:items] for k, v in outs.items()}


def parity(task: str, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> dict:
    """Compare ``got`` with the FP32 reference ``ref`` (same items): metric, value, threshold,
    passed. Items compared = the smaller of the two batches."""
    metric, threshold = PARITY_RULES[task]
    values = []
    items = None
    for name, r in ref.items():
        g = got.get(name)
        if g is None:
            raise ValueError(f"output '{name}' | missing from the row's outputs {sorted(got)}")
        n = min(len(r), len(g))
        items = n if items is None else min(items, n)
        if metric == "cosine":
            values.append(cosine(r[:n], g[:n]))
        else:
            rng = 255.0 if task == "pipeline" else 1.0
            values.append(psnr(r[:n], g[:n], data_range=rng))
    p = check(metric, min(values), threshold)
    value = p.value if np.isfinite(p.value) else None  # identical outputs: PSNR is inf
    return {"metric": p.metric, "value": value, "identical": not np.isfinite(p.value),
            "threshold": p.threshold, "passed": p.passed, "items": items}
