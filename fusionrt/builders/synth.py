"""Synthetic models: the zoo's reference architectures with seeded random weights.

They keep every I/O contract of the real files (names, shapes, ranges, inswapper's ``emap`` as
the last initializer) so the whole pipeline, every engine and the benchmarks run without the
non-commercial real weights. Their outputs mean nothing: never judge swap quality on them.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._fs import atomic_write_bytes
from ..models.arch import build_arch, require_torch
from ..models.arch.reference import WEIGHTS_FORMAT, reference_spec
from ..models.spec import ModelSpec
from ..models.zoo import get_spec
from .export import export_onnx, sample_inputs

if TYPE_CHECKING:
    from ..models.store import ModelStore

log = logging.getLogger(__name__)

# Architecture options per arch for synthetic weights: SimSwap has no output activation, so its
# clip to [0, 1] (what FaceFusion applies after the model) goes into the graph.
SYNTH_OPTIONS: dict[str, dict[str, Any]] = {"simswap256": {"clamp_output": True}}
# Pre-activation statistics of the last conv: (mean, std) per output channel. inswapper ends in
# (tanh + 1) / 2, so N(0, 0.6) spreads over ~[0.1, 0.9]; SimSwap's clip leaves ~99% of
# N(0.5, 0.2) untouched.
OUTPUT_STATS: dict[str, tuple[float, float]] = {"inswapper": (0.0, 0.6), "simswap256": (0.5, 0.2),
                                                "hyperswap_standin": (0.0, 0.6),
                                                "tanh_standin": (0.0, 0.6),
                                                "clip_standin": (0.5, 0.2),
                                                # face enhancers: tanh, [-1, 1] (standin_enhance)
                                                **dict.fromkeys((
                                                    "gfpgan_standin", "gpen256_standin",
                                                    "gpen512_standin", "codeformer_standin",
                                                    "restoreformer_standin"), (0.0, 0.6)),
                                                # 2dfan4's heatmaps: set on this noise, they
                                                # peak far higher on photos (score 1), so a
                                                # synthetic 2dfan4 replaces the 5 points
                                                "fan4_standin": (0.0, 0.2),
                                                # xseg: sigmoid(N(2, 1)): mostly "not occluded"
                                                "xseg_standin": (2.0, 1.0)}


def _randomize(torch, module, spec: ModelSpec, seed: int) -> None:
    """Make the random net non-degenerate: varied norm/PReLU parameters, BatchNorm running
    stats measured on seeded inputs (not the 0/1 defaults), a generator output spread over
    its declared range, and a random ``emap``."""
    nn = torch.nn
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            if m.weight.requires_grad:  # insightface keeps features.weight fixed at 1
                m.weight.uniform_(0.7, 1.3)
            m.bias.normal_(0.0, 0.1)
        for m in module.modules():
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.1, 0.4)
        feeds = [{k: torch.from_numpy(v) for k, v in sample_inputs(spec, 2, seed + 100 + i).items()}
                 for i in range(2)]
        args = [tuple(f[t.name] for t in spec.inputs) for f in feeds]
        if bns:  # cumulative average over the calibration batches
            for m in bns:
                m.reset_running_stats()
                m.momentum = None
            module.train()
            for a in args:
                module(*a)
            for m in bns:
                m.momentum = 0.1
        module.eval()
        if spec.arch in OUTPUT_STATS:
            _calibrate_last_conv(torch, module, args[0], *OUTPUT_STATS[spec.arch])
        if hasattr(module, "emap"):
            gen = torch.Generator().manual_seed(seed + 7)
            n = module.emap.shape[0]
            module.emap.copy_(torch.randn(n, n, generator=gen) / n ** 0.5)


def _calibrate_last_conv(torch, module, args: tuple, mean: float, std: float) -> None:
    """Rescale the last conv so each output channel has the given mean/std on seeded inputs."""
    conv = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    seen = {}
    handle = conv.register_forward_hook(lambda m, a, out: seen.setdefault("y", out))
    try:
        module(*args)
    finally:
        handle.remove()
    y = seen["y"]
    mu, sd = y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3)).clamp_min(1e-6)
    scale = std / sd
    conv.weight.mul_(scale[:, None, None, None])
    conv.bias.copy_((conv.bias - mu) * scale + mean)


def synthesize(name: str, out_path: Path | str, seed: int = 0, width: float = 1.0) -> Path:
    """Build ``name``'s architecture with seeded random weights, export it to ``out_path``
    (with parity checked) and save the weights to ``out_path.with_suffix('.pt')``.

    Raises:
        ModelError: unknown model, or one with built-in real weights (retinaface).
    """
    spec = reference_spec(name)
    torch = require_torch()
    out_path = Path(out_path)
    options = SYNTH_OPTIONS.get(spec.arch, {})
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        module = build_arch(spec.arch, width, **options)
        _randomize(torch, module, spec, seed)
    extra = {"emap": module.emap.numpy().astype(np.float32)} if hasattr(module, "emap") else None
    meta = {"synthetic": "1", "seed": seed, "width": width, "arch": spec.arch}
    if "standin" in spec.extra:  # the real architecture is unpublished: say so in the file
        meta["standin"] = spec.extra["standin"]
    if name.endswith("_fp16"):
        # The FP16 graph is made from this one by the FP16 converter; this file is still FP32.
        log.warning("synthetic '%s' is an FP32 graph with the FP16 file's contract", name)
        meta["precision"] = "fp32"
    report = export_onnx(module, spec, out_path, metadata=meta, extra_initializers=extra,
                         seed=seed)
    buf = io.BytesIO()
    torch.save({"format": WEIGHTS_FORMAT, "name": name, "arch": spec.arch, "width": float(width),
                "seed": int(seed), "options": dict(options), "state_dict": module.state_dict()},
               buf)
    atomic_write_bytes(out_path.with_suffix(".pt"), buf.getvalue())
    log.info("synthesized %s (width %g, seed %d) -> %s; parity cosine %.6f",
             name, width, seed, out_path, report.cosine)
    return out_path


def synth_model(store: "ModelStore", name: str, seed: int = 0, width: float = 1.0) -> Path:
    """Write a random-weight model with ``name``'s contract into ``store`` (its
    ``synthetic/<name>.onnx`` and ``.pt``); returns the ONNX path."""
    get_spec(name)  # an unknown name fails before torch is imported
    out = store.synthetic_path(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(synthesize(name, out, seed=seed, width=width))


def ensure_synthetic(store: "ModelStore", names: list[str], width: float = 1.0) -> dict[str, float]:
    """Synthesize each of ``names`` that has no synthetic file in ``store`` yet; seconds per one
    built (benchmarks and device scripts share one set of full-size models)."""
    import time
    built = {}
    for name in names:
        if not store.synthetic_path(name).is_file():
            t0 = time.perf_counter()
            synth_model(store, name, width=width)
            built[name] = round(time.perf_counter() - t0, 1)
    return built


def synthesize_missing(store: "ModelStore", names: list[str]) -> dict[str, float]:
    """Full-size stand-ins for those of ``names`` the store cannot resolve at all (no real
    weights, no synthetic copy): what ``--allow-synthetic`` front ends make before they run.
    Seconds per one built."""
    from ..errors import FusionError
    missing = []
    for name in dict.fromkeys(names):
        try:
            store.resolve(name, allow_synthetic=True)
        except FusionError:
            missing.append(name)
    return ensure_synthetic(store, missing) if missing else {}

