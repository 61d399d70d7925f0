#!/usr/bin/env python3
"""Before/after of the classic swapper: v1 (FFHQ-256 crop, LAB transfer, feathered oval,
alpha paste) against v2 (direct warp, landmark mask, in-face colour/shading, sharpness
matching, multi-band blend) on the repo's two example photos, both ways, plus a stress case.

    python3 benchmarks/scripts/classic_quality.py [--image docs/images/classic_before_after.png]
                                                  [--json benchmarks/results/classic_quality.json]

Both styles go through the path ``fusionrt swap`` uses (``ClassicSwapper.swap`` →
``paste_back`` with the default settings), with the real built-in RetinaFace. Rows:
astronaut → Grace Hopper (the README's first command), Grace Hopper → astronaut, and the
astronaut recoloured to a darker, more saturated skin and lit from one side (a synthetic
stand-in for "another skin tone, other lighting": no third photo ships) → Grace Hopper.

Numbers (grey levels / LAB units; each over regions common to both methods):

* ``seam``: mean |gradient across the mask edge| of the output (the derivative along the
  mask's normal, grey levels/px, lightly smoothed) minus the same on the target photo, over
  the edge band (either method's mask in 0.02..0.98). 0: the edge adds no edges; negative:
  edges the target had there are gone (Grace Hopper's glasses rims cross the band).
* ``seam_step``: the same band, |d/dn| minus |d/dt| (t the edge's tangent) of the edit
  (output - target): isotropic texture cancels, a step or a structure cut along the mask's
  edge does not. A wide, soft edge scores low; so does a ghost.
* ``colour``: LAB mean of the output's skin minus the target photo's skin (``blend.skin``:
  pixels near the median face colour, so glasses, eyes and lips are left out) inside the
  inner face (both masks > 0.8): ΔL, Δa, Δb and ΔE = their norm.
* ``hf_ratio``: Laplacian RMS in the inner face over that of the ring just outside both
  masks (the target's own skin/hair around the face); ``hf_ratio_target`` is the same on the
  target photo: a soft pasted patch reads below it.
Two photos: a smoke-level measurement, not a benchmark of face-swap quality.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fusionrt.engines.registry import get_engine  # noqa: E402
from fusionrt.models.store import ModelStore  # noqa: E402
from fusionrt.pipeline.host.align import invert  # noqa: E402
from fusionrt.pipeline.host.blend import face_frame, from_lab, skin, to_lab  # noqa: E402
from fusionrt.pipeline.host.classic import ClassicSwapper  # noqa: E402
from fusionrt.pipeline.host.detect import Detector  # noqa: E402
from fusionrt.pipeline.host.paste import paste_back  # noqa: E402
from fusionrt.pipeline.types import Identity  # noqa: E402


def frame_alpha(sw: ClassicSwapper, frame, face, src) -> np.ndarray:
    """The method's face mask in frame coordinates."""
    h, w = frame.shape[:2]
    if sw.style == "v1":
        m = sw.swap(frame, face, src).matrix
        return cv2.warpAffine(sw.mask, invert(m), (w, h), flags=cv2.INTER_LINEAR)
    b = sw.blend(frame, face, src)
    a = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = b.roi
    a[y0:y1, x0:x1] = b.alpha
    return a


def grey(img):
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)


def _normal_tangent(img, alpha, band):
    """|d/dn| and |d/dt| of ``img`` (grey float, smoothed 1 px) at the band's pixels, n the
    normal of the mask's edge."""
    d = cv2.GaussianBlur(img, (0, 0), 1.0)
    gx, gy = cv2.Sobel(d, cv2.CV_32F, 1, 0) / 8, cv2.Sobel(d, cv2.CV_32F, 0, 1) / 8
    a = cv2.GaussianBlur(alpha, (0, 0), 2.0)
    ax, ay = cv2.Sobel(a, cv2.CV_32F, 1, 0), cv2.Sobel(a, cv2.CV_32F, 0, 1)
    n = np.hypot(ax, ay)
    ok = band & (n > 1e-4)
    nx, ny = ax[ok] / n[ok], ay[ok] / n[ok]
    return np.abs(gx[ok] * nx + gy[ok] * ny), np.abs(-gx[ok] * ny + gy[ok] * nx)


def seam(out, target, alpha, band) -> tuple[float, float]:
    """(seam, seam_step): see the module docstring."""
    dn_out, _ = _normal_tangent(grey(out), alpha, band)
    dn_tgt, _ = _normal_tangent(grey(target), alpha, band)
    dn, dt = _normal_tangent(grey(out) - grey(target), alpha, band)
    return float(dn_out.mean() - dn_tgt.mean()), float(dn.mean() - dt.mean())


def skin_lab(img, inner):
    lab = to_lab(img)
    return lab[skin(lab, inner)].mean(0)


def stress_source(img: np.ndarray, face) -> np.ndarray:
    """The photo with darker, redder skin, lit hard from the image left: a synthetic source
    for the skin-tone and carried-over-shading faults (everything in the photo is recoloured,
    hair and background too)."""
    lab = to_lab(img)
    x1, _, x2, _ = face.box
    x = np.arange(img.shape[1], dtype=np.float32)[None, :]
    light = 0.35 + 0.65 * np.clip((x2 - x) / (x2 - x1), 0, 1)  # lit left cheek, dark right
    lab[..., 0] *= 0.75 * light
    lab[..., 1] = lab[..., 1] * 1.4 + 6
    lab[..., 2] = lab[..., 2] * 1.3 + 4
    return np.clip(np.rint(from_lab(lab)), 0, 255).astype(np.uint8)


def lap_rms(img, sel):
    lap = cv2.Laplacian(grey(img), cv2.CV_32F, ksize=3)
    return float(np.sqrt((lap[sel] ** 2).mean()))


def tile(img, face, side=200):
    """A square around the face, ``side`` px."""
    x1, y1, x2, y2 = face.box
    c, half = ((x1 + x2) / 2, (y1 + y2) / 2), 0.7 * max(x2 - x1, y2 - y1)
    M = np.array([[side / (2 * half), 0, side / 2 - c[0] * side / (2 * half)],
                  [0, side / (2 * half), side / 2 - c[1] * side / (2 * half)]])
    return cv2.warpAffine(img, M, (side, side), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_CONSTANT)


def label(img, text):
    img = img.copy()
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(ROOT / "docs/images/classic_before_after.png"))
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--tile", type=int, default=192, help="tile side in the image (px)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    store = ModelStore(Path(tempfile.mkdtemp(prefix="classic_quality_")))
    det = Detector(get_engine("ort-cpu")(store.resolve("retinaface_mnet025")).load())
    photos = {n: cv2.imread(str(ROOT / "examples" / f)) for n, f in
              (("astronaut", "astronaut.png"), ("grace", "grace_hopper.jpg"))}
    faces = {n: det.detect(img)[0] for n, img in photos.items()}

    stress = "astronaut (recoloured, side-lit)"
    photos[stress] = stress_source(photos["astronaut"], faces["astronaut"])
    faces[stress] = faces["astronaut"]
    rows, results = [], {}
    for src_name, tgt_name in (("astronaut", "grace"), ("grace", "astronaut"),
                               (stress, "grace")):
        src = Identity(faces[src_name], photos[src_name], src_name)
        frame, face = photos[tgt_name], faces[tgt_name]
        outs, alphas = {}, {}
        for style in ("v1", "v2"):
            sw = ClassicSwapper(style=style)
            res = sw.swap(frame, face, src)
            # exactly the host kernels' call with the default settings (kernels.py paste)
            outs[style] = paste_back(frame, res.crop, res.matrix, mask=res.mask, feather=0.1,
                                     color_transfer=False, poisson=False)
            alphas[style] = frame_alpha(ClassicSwapper(style=style), frame, face, src)
        inner = (alphas["v1"] > 0.8) & (alphas["v2"] > 0.8)
        band = np.zeros_like(inner)
        for al in alphas.values():
            band |= (al > 0.02) & (al < 0.98)
        iod = face_frame(face.landmarks).iod
        k = int(round(0.3 * iod)) * 2 + 1
        anyface = ((alphas["v1"] > 0) | (alphas["v2"] > 0)).astype(np.uint8)
        ring = (cv2.dilate(anyface, np.ones((k, k), np.uint8)) > 0) & (anyface == 0)
        t_lab = skin_lab(frame, inner)
        hf_t = lap_rms(frame, inner) / lap_rms(frame, ring)
        key = f"{src_name} -> {tgt_name}"
        results[key] = {}
        for style, out in outs.items():
            d = skin_lab(out, inner) - t_lab
            sm, step = seam(out, frame, alphas[style], band)
            results[key][style] = {
                "seam": round(sm, 3), "seam_step": round(step, 3),
                "colour_dL_da_db": [round(float(v), 2) for v in d],
                "colour_dE": round(float(np.linalg.norm(d)), 2),
                "hf_ratio": round(lap_rms(out, inner) / lap_rms(out, ring), 3),
                "hf_ratio_target": round(hf_t, 3)}
        # v2 internals, for the report
        b = ClassicSwapper().blend(frame, face, src)
        results[key]["v2_info"] = {
            "yaw_source": round(b.yaw_source, 1), "yaw_target": round(b.yaw_target, 1),
            "scale": round(b.scale, 3), "levels": b.levels,
            "sharpen_amount": round(b.sharpness.amount, 3) if b.sharpness else None,
            "blur_sigma": round(b.sharpness.blur, 3) if b.sharpness else None}
        t = args.tile
        tgt = tile(frame, face, t)
        th = t * 3 // 10  # the source as an inset in the target's tile
        tgt[t - th - 2:t - 2, 2:2 + th] = tile(photos[src_name], faces[src_name], th)
        rows.append(np.hstack([label(tgt, "target (inset: source)"),
                               label(tile(outs["v1"], face, t), "before (v1)"),
                               label(tile(outs["v2"], face, t), "after (v2)")]))

    for key, r in results.items():
        print(key)
        for style in ("v1", "v2"):
            m = r[style]
            print(f"  {style}: seam {m['seam']:+.2f} step {m['seam_step']:.2f}  "
                  f"skin colour dE {m['colour_dE']:.2f} "
                  f"(dL, da, db {m['colour_dL_da_db']})  hf face/surround {m['hf_ratio']:.3f} "
                  f"(target photo {m['hf_ratio_target']:.3f})")
        print(f"  v2: {r['v2_info']}")
    img = np.vstack(rows)
    out = Path(args.image)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} ({out.stat().st_size // 1024} KB, {img.shape[1]}x{img.shape[0]})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
