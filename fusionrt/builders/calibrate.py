"""Calibration sets: face crops made the way a model sees them at run time, stored as ``.npz``.

The crops come from the pipeline's stages (``fusionrt.pipeline.artifacts.build_calibration_set``:
detect (RetinaFace) → align (the model's template and size) → crop; generators also get a source
latent per crop, the ArcFace embedding of *another* sampled face, mapped as the model expects:
``emap`` for inswapper, L2-norm for SimSwap). Sampling is seeded: the same images, count and seed
give the same set byte for byte. Crops are stored as uint8 BGR (a 1000-crop 256² set is ~200 MB
as float32, ~20 MB compressed uint8); ``CalibrationSet.feeds`` applies the model's preprocessing.

Calibrate on 500–1000 faces like the ones you will swap (lighting, pose, skin tones, age). The
``augment`` option (flips, scale, brightness, small rotations) stretches a handful of photos into
a test set; it is *not* a diverse set and INT8 ranges calibrated on it fit those faces only.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from ..errors import InputError
from ..models.spec import ModelSpec

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


# -- augmentation and letterbox (used when the pipeline gathers crops) ---------------------

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
