"""What the builders need from the pipeline's stages, and the library form of ``fusionrt build``.

- ``build_calibration_set``: face crops gathered the way a model sees them at run time (the
  real detector, the model's alignment template, ArcFace identities for generators), handed to
  the builders as a ``CalibrationSet`` of arrays;
- ``gate_inputs``: the quality gate's callables (FP32 ArcFace + re-alignment for the identity
  cosine, the detector heads' decode);
- ``build_artifact``: convert to FP16/INT8, gate on held-out inputs, refuse a failing artifact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..builders.calibrate import DETECT_SIZE, CalibrationSet, augment, letterbox_uint8
from ..builders.convert import holdout_feeds, make_artifact, torch_fp16_runner
from ..builders.open import open_engine
from ..engines.base import EngineConfig
from ..engines.registry import engine_names, get_engine
from ..errors import EngineError, InputError, ModelError, NoFaceError
from ..models.spec import Artifact, ModelSpec
from ..models.store import ModelStore
from ..models.zoo import get_spec
from .plan import REFERENCE_ENGINE

log = logging.getLogger(__name__)

EMBEDDER = "arcface_w600k_r50"


# -- stages on ort-cpu -------------------------------------------------------------------------

def default_detector():
    """The real RetinaFace (built-in weights) on ort-cpu."""
    from .host.detect import Detector
    return Detector(open_engine(REFERENCE_ENGINE, ModelStore().resolve("retinaface_mnet025")))


def id_embedder(allow_synthetic: bool):
    """FP32 ArcFace on ort-cpu for the generator's identity figure, or None if not installed."""
    from .host.embed import Embedder
    try:
        art = ModelStore().resolve(EMBEDDER, allow_synthetic=allow_synthetic)
    except ModelError as e:
        log.warning("identity cosine not measurable: %s", e)
        return None
    return Embedder(open_engine(REFERENCE_ENGINE, art))


# -- calibration sets ----------------------------------------------------------------------------

def iter_sources(source: Path | str, max_frames: int) -> Iterator[tuple[str, np.ndarray]]:
    """(name, BGR frame) from a folder of images (sorted by name) or a video (evenly spaced
    frames, at most ``max_frames``)."""
    from .image_io import IMAGE_EXTS, read_image
    src = Path(source)
    if src.is_dir():
        files = sorted(f for f in src.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise InputError(f"calibration images '{src}' | no images ({', '.join(IMAGE_EXTS)}) "
                             "in the folder; expected 500-1000 face photos")
        for f in files:
            yield f.name, read_image(f, "calibration image")
        return
    if not src.exists():
        raise InputError(f"calibration source '{src}' | not found; expected a folder of face "
                         "images or a video file")
    from .video.io import iter_frames, probe
    info = probe(src)  # InputError for unreadable/non-video files
    step = max(1, info.frames // max(1, max_frames))
    for i, frame in enumerate(iter_frames(src)):
        if i % step == 0:
            yield f"{src.name}#{i}", frame


def build_calibration_set(model: str, source: Path | str, count: int = 1000, seed: int = 0, *,
                          do_augment: bool = False, detector=None, embedder=None,
                          model_path: Path | None = None,
                          allow_synthetic: bool = False) -> CalibrationSet:
    """Detect → align → crop ``count`` faces from ``source`` for ``model``.

    Args:
        model: zoo name.
        source: folder of images or a video file.
        count: faces wanted; fewer are used (with a warning) unless ``do_augment`` fills up.
        seed: sampling (and augmentation, and identity pairing) seed.
        do_augment: top up with augmented variants of the source frames (test sets only).
        detector / embedder: injected stages (default: RetinaFace and ArcFace on ort-cpu).
        model_path: the model's ONNX file, for inswapper's ``emap`` (default: the store's).
        allow_synthetic: let the default embedder use a synthetic ArcFace.

    Raises:
        InputError: empty folder, unreadable image or video. NoFaceError: no face anywhere.
    """
    spec = get_spec(model)
    if count < 1:
        raise InputError(f"calibration count | got {count}; expected >= 1")
    rng = np.random.default_rng(seed)
    detector = detector or default_detector()
    size = spec.preprocess.size[0] if spec.preprocess.size else DETECT_SIZE
    frames = list(iter_sources(source, max_frames=count))
    pool = _faces(spec, frames, detector, size)
    if not pool:
        raise NoFaceError(f"calibration source '{source}' | no face found in {len(frames)} "
                          "image(s)/frame(s); expected photos or video with visible faces")
    augmented = 0
    if do_augment and len(pool) < count:
        k = 0
        while len(pool) < count and k < 4 * count:  # frames whose variant shows no face are skipped
            name, img = frames[k % len(frames)]
            found = _faces(spec, [(f"{name}~aug{k}", augment(img, rng))], detector, size)
            pool += found[:1]
            augmented += len(found[:1])
            k += 1
    if len(pool) < count:
        log.warning("calibration: %d faces found, %d asked for; using %d (calibrate on 500-1000 "
                    "faces for a representative set)", len(pool), count, len(pool))
    idx = np.sort(rng.choice(len(pool), min(count, len(pool)), replace=False))
    chosen = [pool[i] for i in idx]
    crops = np.stack([c[1] for c in chosen])
    latents, synthetic_id = None, None
    if spec.task == "swap":
        latents, synthetic_id = _latents(spec, chosen, rng, embedder, model_path, allow_synthetic)
    meta = {"count": len(chosen), "seed": seed, "template": spec.template, "size": size,
            "source": str(source), "frames": len(frames), "faces_found": len(pool) - augmented,
            "augmented": augmented, "items": [c[0] for c in chosen],
            "synthetic_embedder": synthetic_id,
            "diverse": False if augmented else None}
    log.info("calibration set for %s: %d crops (%d augmented) from %d frames",
             model, len(chosen), sum("~aug" in c[0] for c in chosen), len(frames))
    return CalibrationSet(model, crops, latents, meta)


def _faces(spec: ModelSpec, frames, detector, size: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(item name, model crop, 112px ArcFace crop)] for every face in ``frames``."""
    from .host.align import warp_face
    out = []
    for name, img in frames:
        if spec.task == "detect":
            out.append((name, letterbox_uint8(img, size, spec.preprocess.mean), None))
            continue
        for j, face in enumerate(detector.detect(img)):
            crop = warp_face(img, face.landmarks, spec.template, size)[0]
            id_crop = warp_face(img, face.landmarks, "arcface_112", 112)[0] \
                if spec.task == "swap" else None
            out.append((f"{name}/face{j}", crop, id_crop))
    return out


def _latents(spec, chosen, rng, embedder, model_path, allow_synthetic):
    """Each crop gets the identity of another sampled face (a swap never pairs a face with
    itself), mapped as the generator expects."""
    from .host.embed import l2norm
    synthetic = None
    if embedder is None:
        from .host.embed import Embedder
        art = ModelStore().resolve(EMBEDDER, allow_synthetic=allow_synthetic)
        embedder, synthetic = Embedder(open_engine(REFERENCE_ENGINE, art)), art.synthetic
    emb = np.concatenate([embedder.embed_crops([c[2] for c in chosen[i:i + 16]])
                          for i in range(0, len(chosen), 16)])
    n = len(chosen)
    shift = int(rng.integers(1, n)) if n > 1 else 0
    emb = emb[(np.arange(n) + shift) % n]
    transform = spec.extra.get("source_transform", "l2norm")
    if transform == "emap":
        from .host.swap import read_emap
        if model_path is None:
            model_path = ModelStore().resolve(spec.name, allow_synthetic=True).onnx_path
        emb = l2norm(l2norm(emb) @ read_emap(Path(model_path)))
    elif transform in ("l2norm", "converter_l2norm", "converter"):
        # converter models: calibration latents stay unit ArcFace vectors (the converter is a
        # separate stage; the generator's activation ranges, not the identity, matter here)
        emb = l2norm(emb)
    else:
        raise ModelError(f"model '{spec.name}' | source_transform {transform!r}; expected "
                         "'emap' or 'l2norm'")
    return np.ascontiguousarray(emb, np.float32), synthetic


# -- the quality gate's inputs ---------------------------------------------------------------

def identity_crops(spec: ModelSpec, out: np.ndarray) -> list[np.ndarray]:
    """Generator outputs (N, 3, S, S) RGB [0, 1] → 112px BGR ArcFace crops (float 0..255),
    re-aligned from the generator's template to ArcFace's."""
    import cv2
    from .host.align import ARCFACE_TEMPLATE_112, estimate_similarity, get_template
    size = out.shape[-1]
    m = estimate_similarity(get_template(spec.template).at(size), ARCFACE_TEMPLATE_112.points)
    imgs = out.transpose(0, 2, 3, 1)[..., ::-1] * 255.0
    return [cv2.warpAffine(np.ascontiguousarray(i, np.float32), m, (112, 112),
                           flags=cv2.INTER_LINEAR) for i in imgs]


def detector_decode(loc: np.ndarray, landmarks: np.ndarray, keep: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The RetinaFace heads of one square letterboxed image, anchors ``keep`` decoded (the
    input side follows from the anchor count)."""
    from .host.detect import decode, priors
    pri = _priors_for(len(loc), priors)
    return decode(loc[keep], landmarks[keep], pri[keep])


_PRIORS: dict[int, np.ndarray] = {}


def _priors_for(anchors: int, priors) -> np.ndarray:
    if anchors not in _PRIORS:
        size = next((s for s in range(32, 4097, 32) if len(priors(s)) == anchors), None)
        if size is None:
            raise ModelError(f"quality gate | {anchors} anchors match no square detector input")
        _PRIORS[anchors] = priors(size)
    return _PRIORS[anchors]


def gate_inputs(spec: ModelSpec, allow_synthetic: bool) -> dict[str, Any]:
    """The keyword arguments ``builders.gate.evaluate`` needs from the pipeline for ``spec``."""
    if spec.task == "swap":
        embedder = id_embedder(allow_synthetic)
        return {"id_embed": embedder.embed_crops if embedder is not None else None,
                "id_crops": identity_crops}
    if spec.task == "detect":
        return {"decode": detector_decode}
    return {}


# -- fusionrt build ------------------------------------------------------------------------------

@dataclass
class BuildResult:
    artifact: Path
    precision: str
    report: object | None = None  # GateReport
    details: dict = field(default_factory=dict)


def build_artifact(model: str, precision: str, *, calibration: Path | None = None,
                   engine: str = REFERENCE_ENGINE, method: str = "entropy",
                   allow_synthetic: bool = False,
                   out: Path | None = None, report: bool = False,
                   activations: str = "auto", require_id: bool = False) -> BuildResult:
    """Make and gate one reduced-precision artifact (library form of ``fusionrt build``).

    Without an FP32 ArcFace a swap model's identity cosine is not measured and the gate decides
    on PSNR/SSIM; ``require_id`` refuses instead (before converting anything)."""
    from ..builders.gate import ID_NOT_MEASURED, check_gated, evaluate, refusal
    spec = get_spec(model)
    art = ModelStore().resolve(model, allow_synthetic=allow_synthetic)
    fp32 = Path(art.onnx_path)
    if precision == "fp32":
        return BuildResult(fp32, "fp32")
    check_gated(spec)
    fit, held, notes = holdout_feeds(spec, calibration)
    if precision == "int8" and not fit:
        raise InputError(f"model '{spec.name}' | INT8 needs --calibration SET.npz; make one "
                         f"with: fusionrt calibrate {spec.name} --images DIR")
    out = Path(out) if out else fp32.with_name(f"{fp32.stem}.{precision}.onnx")
    inputs = gate_inputs(spec, allow_synthetic)
    if require_id and spec.task == "swap" and inputs.get("id_embed") is None:
        raise ModelError(f"model '{spec.name}' | --require-id: the identity cosine cannot be "
                         f"measured: {ID_NOT_MEASURED}")
    cls = get_engine(engine)
    casts = len(cls.precisions) > 1  # casts the FP32 module itself (torch): no graph to convert
    if casts and precision not in cls.precisions:
        graphs = ", ".join(n for n in engine_names() if _runs_graphs(n))
        raise EngineError(f"engine '{engine}' | has no INT8 path; INT8 runs as a Q/DQ graph on "
                          f"one of: {graphs}")
    cand_runner, details = None, {}
    if casts:
        cand_runner, out = torch_fp16_runner(spec, art), fp32
        details = {"torch": "fusionrt.builders.fp16.fp16_module (keep-list modules in FP32)"}
    else:
        if activations == "auto":  # measured: S8S8 graphs fuse only partly on x86 ORT CPU
            activations = "s8" if "cuda" in cls.devices else "u8"
        details = make_artifact(spec, fp32, precision, out, fit, method, activations)
    # The candidate graph is judged on the engine asked for where that engine loads a graph as
    # it is (ONNX Runtime); engines that build a plan first (TensorRT) or cast a module (torch)
    # are judged on ort-cpu.
    as_is = not casts and cls.needs(Artifact(spec, out), EngineConfig()) is None
    gate_on = engine if as_is else REFERENCE_ENGINE
    rep = evaluate(spec, fp32, out, precision, held, engine=gate_on, synthetic=art.synthetic,
                   candidate_runner=cand_runner, require_id=require_id, **inputs)
    rep.notes[:0] = notes
    rep.details = details
    stem = out.with_suffix("") if not casts else fp32.with_name(f"{fp32.stem}.torch-fp16")
    if report:
        for p in rep.write(stem):
            log.info("wrote %s", p)
    if not rep.passed:
        if not casts:
            out.unlink(missing_ok=True)
        passed = _fallbacks(model, precision, calibration, engine, allow_synthetic)
        raise refusal(rep, passed)
    return BuildResult(out, precision, rep, details)


def _runs_graphs(name: str) -> bool:
    """The engine runs the precision its ONNX graph holds (no precision of its own)."""
    try:
        return tuple(get_engine(name).precisions) == ("fp32",)
    except EngineError:
        return False


def _fallbacks(model, precision, calibration, engine, allow_synthetic) -> list[str]:
    """Which lower-risk precision passes, for the refusal message (INT8 → try FP16)."""
    if precision != "int8":
        return []
    import tempfile
    from ..errors import FusionError
    with tempfile.TemporaryDirectory() as tmp:
        try:
            build_artifact(model, "fp16", calibration=calibration, engine=engine,
                           allow_synthetic=allow_synthetic, out=Path(tmp) / "fp16.onnx")
            return ["fp16"]
        except FusionError:
            return []
