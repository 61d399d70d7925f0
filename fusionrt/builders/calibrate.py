"""Calibration sets: face crops made the way a model sees them at run time, stored as ``.npz``.

detect (RetinaFace) → align (the model's template and size) → crop; generators also get a source
latent per crop (the ArcFace embedding of *another* sampled face, mapped as the model expects:
``emap`` for inswapper, L2-norm for SimSwap). Sampling is seeded: the same images, count and seed
give the same set byte for byte. Crops are stored as uint8 BGR (a 1000-crop 256² set is ~200 MB
as float32, ~20 MB compressed uint8); ``CalibrationSet.feeds`` applies the model's preprocessing.

Calibrate on 500–1000 faces like the ones you will swap (lighting, pose, skin tones, age). The
``augment`` option (flips, scale, brightness, small rotations) stretches a handful of photos into
a test set; it is *not* a diverse set and INT8 ranges calibrated on it fit those faces only.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from ..errors import InputError, ModelError, NoFaceError
from ..models.spec import ModelSpec
from ..models.zoo import get_spec

log = logging.getLogger(__name__)

FORMAT = "fusionrt.calibration/1"
DETECT_SIZE = 640  # detector calibration frames: letterboxed to the detector's default input


@dataclass(frozen=True)
class CalibrationSet:
    """Aligned crops (N, S, S, 3) uint8 BGR, optional source latents (N, 512) and provenance."""

    model: str
    crops: np.ndarray
    latents: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, idx: Sequence[int]) -> "CalibrationSet":
        idx = np.asarray(idx, int)
        lat = None if self.latents is None else self.latents[idx]
        return CalibrationSet(self.model, self.crops[idx], lat, dict(self.meta, count=len(idx)))

    def split(self, holdout: int, seed: int = 1) -> tuple["CalibrationSet", "CalibrationSet"]:
        """(calibration part, held-out part): a seeded split, so the gate never sees data the
        quantizer calibrated on."""
        n = len(self)
        if n < 2:
            raise InputError(f"calibration set | {n} sample(s); expected >= 2 to hold some out")
        k = min(max(1, holdout), n - 1)
        perm = np.random.default_rng(seed).permutation(n)
        return self.subset(np.sort(perm[k:])), self.subset(np.sort(perm[:k]))

    def check(self, spec: ModelSpec) -> None:
        """Raise ``InputError`` if the crops do not fit ``spec``'s input."""
        size = spec.preprocess.size[0] if spec.preprocess.size else DETECT_SIZE
        tpl = self.meta.get("template")
        if self.crops.shape[1:3] != (size, size) or tpl != spec.template:
            raise InputError(f"calibration set for '{self.model}' | crops {self.crops.shape[1:3]} "
                             f"template {tpl!r}; model '{spec.name}' expects {size}x{size} "
                             f"template {spec.template!r}: run fusionrt calibrate {spec.name}")
        if spec.task == "swap" and self.latents is None:
            raise InputError(f"calibration set for '{self.model}' | has no source latents; "
                             f"model '{spec.name}' needs them: run fusionrt calibrate {spec.name}")

    def feeds(self, spec: ModelSpec, batch: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """The model's input feeds, ``batch`` samples at a time."""
        self.check(spec)
        p = spec.preprocess
        for i in range(0, len(self), batch):
            crops = self.crops[i:i + batch]
            x = crops.astype(np.float32)
            if p.channel_order == "RGB":
                x = x[..., ::-1]
            x = (x - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
            image = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            feed = {spec.inputs[0].name: image}
            if spec.task == "swap":
                feed = {"target": image, "source": np.ascontiguousarray(self.latents[i:i + batch])}
            yield feed

    def save(self, path: Path | str) -> Path:
        """Write a compressed ``.npz`` atomically."""
        import io
        from .._fs import atomic_write_bytes
        path = Path(path)
        buf = io.BytesIO()
        arrays = {"crops": self.crops, "meta": np.array(json.dumps(
            dict(self.meta, format=FORMAT, model=self.model), sort_keys=True))}
        if self.latents is not None:
            arrays["latents"] = self.latents
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
        return path


def load_calibration(path: Path | str) -> CalibrationSet:
    """Read a set written by ``CalibrationSet.save``; ``InputError`` on anything else."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"calibration set '{p}' | file not found; make one with: "
                         "fusionrt calibrate MODEL --images DIR --out SET.npz")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            crops = z["crops"]
            latents = z["latents"] if "latents" in z.files else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise InputError(f"calibration set '{p}' | unreadable ({e}); expected a .npz from "
                         "fusionrt calibrate") from None
    if meta.get("format") != FORMAT or crops.dtype != np.uint8 or crops.ndim != 4:
        raise InputError(f"calibration set '{p}' | format {meta.get('format')!r}, crops "
                         f"{crops.dtype} {crops.shape}; expected {FORMAT} uint8 (N, S, S, 3)")
    return CalibrationSet(meta["model"], crops, latents, meta)


# -- sources ---------------------------------------------------------------------------------

def iter_sources(source: Path | str, max_frames: int) -> Iterator[tuple[str, np.ndarray]]:
    """(name, BGR frame) from a folder of images (sorted by name) or a video (evenly spaced
    frames, at most ``max_frames``)."""
    from ..pipeline.image_io import IMAGE_EXTS, read_image
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
    from ..pipeline.video.io import iter_frames, probe
    info = probe(src)  # InputError for unreadable/non-video files
    step = max(1, info.frames // max(1, max_frames))
    for i, frame in enumerate(iter_frames(src)):
        if i % step == 0:
            yield f"{src.name}#{i}", frame


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random variant: horizontal flip, scale 0.8–1.2, rotation ±10°, brightness/contrast."""
    h, w = image.shape[:2]
    angle, scale = rng.uniform(-10, 10), rng.uniform(0.8, 1.2)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT101)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain, bias = rng.uniform(0.7, 1.3), rng.uniform(-20, 20)
    return np.ascontiguousarray(np.clip(out.astype(np.float32) * gain + bias, 0, 255)
                                .astype(np.uint8))


def letterbox_uint8(image: np.ndarray, size: int, mean: Sequence[float]) -> np.ndarray:
    """The detector's letterbox as uint8, padded with the mean colour (0 after normalising)."""
    h, w = image.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = np.clip(np.round(mean), 0, 255).astype(np.uint8)
    canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1
                                  else cv2.INTER_LINEAR)
    return canvas


# -- building --------------------------------------------------------------------------------

def _default_detector():
    from ..engines.registry import get_engine
    from ..models.store import ModelStore
    from ..pipeline.host.detect import Detector
    return Detector(get_engine("ort-cpu")(ModelStore().resolve("retinaface_mnet025")).load())


def _default_embedder(allow_synthetic: bool):
    from ..engines.registry import get_engine
    from ..models.store import ModelStore
    from ..pipeline.host.embed import Embedder
    art = ModelStore().resolve("arcface_w600k_r50", allow_synthetic=allow_synthetic)
    return Embedder(get_engine("ort-cpu")(art).load()), art.synthetic


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
    detector = detector or _default_detector()
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
    from ..pipeline.host.align import warp_face
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
    from ..pipeline.host.embed import l2norm
    synthetic = None
    if embedder is None:
        embedder, synthetic = _default_embedder(allow_synthetic)
    emb = np.concatenate([embedder.embed_crops([c[2] for c in chosen[i:i + 16]])
                          for i in range(0, len(chosen), 16)])
    n = len(chosen)
    shift = int(rng.integers(1, n)) if n > 1 else 0
    emb = emb[(np.arange(n) + shift) % n]
    transform = spec.extra.get("source_transform", "l2norm")
    if transform == "emap":
        from ..pipeline.host.swap import read_emap
        if model_path is None:
            from ..models.store import ModelStore
            model_path = ModelStore().resolve(spec.name, allow_synthetic=True).onnx_path
        emb = l2norm(l2norm(emb) @ read_emap(Path(model_path)))
    elif transform == "l2norm":
        emb = l2norm(emb)
    else:
        raise ModelError(f"model '{spec.name}' | source_transform {transform!r}; expected "
                         "'emap' or 'l2norm'")
    return np.ascontiguousarray(emb, np.float32), synthetic
