"""Which engine runs each stage: one name for all, a per-stage map, or ``auto`` (measured).

``auto`` times every usable engine on each stage with the stage's real input shape, keeps those
whose outputs pass the parity check against the FP32 reference (ort-cpu), picks the fastest and
caches the decision under the fingerprint of this machine (GPU, versions) and model files, so
the measurement is paid once per machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..builders import parity
from ..engines.base import Artifact, EngineConfig
from ..engines.registry import availability, engine_names, get_engine
from ..errors import EngineError

log = logging.getLogger(__name__)

STAGES = ("detect", "embed", "swap")
REFERENCE_ENGINE = "ort-cpu"
CPU_ENGINES = ("ort-cpu", "torch")  # compile engines cost minutes on CPU: not auto-picked there


@dataclass(frozen=True)
class Choice:
    """The engine a stage runs on, and why (shown by ``fusionrt swap --explain``)."""

    stage: str
    engine: str
    reason: str


def parse_engine_spec(text: str) -> dict[str, str]:
    """``"ort-cpu"`` → every stage; ``"detect=ort-cuda,swap=trt"`` → those stages (others
    default to ort-cpu); ``"auto"`` → {stage: "auto"}. Unknown stages/engines raise."""
    text = text.strip()
    if "=" not in text:
        if text != "auto":
            get_engine(text)  # raises with the valid names
        return {s: text for s in STAGES}
    out = {s: REFERENCE_ENGINE for s in STAGES}
    for part in text.split(","):
        stage, _, name = part.partition("=")
        stage, name = stage.strip(), name.strip()
        if stage not in STAGES:
            raise EngineError(f"--engine '{text}' | unknown stage '{stage}'; "
                              f"expected {', '.join(STAGES)}")
        if name != "auto":
            get_engine(name)
        out[stage] = name
    return out


def sample_feeds(artifact: Artifact, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs in the contract's shapes (detectors at 640²)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in artifact.spec.inputs:
        shape = tuple(batch if d == "N" else (640 if isinstance(d, str) else d) for d in t.shape)
        a = rng.standard_normal(shape).astype(t.dtype)
        if len(shape) == 2:  # identity vectors are unit-norm in every contract
            a /= np.linalg.norm(a, axis=1, keepdims=True)
        feeds[t.name] = a
    return feeds


def outputs_match(stage: str, ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> \
        parity.Parity:
    """Stage-appropriate parity: cosine for embeddings and raw detector heads, PSNR for images."""
    name = next(iter(ref))
    r, o = np.asarray(ref[name]), np.asarray(out[name])
    if stage == "swap":
        return parity.check("psnr", parity.psnr(r, o, data_range=float(np.ptp(r)) or 1.0), 40.0)
    return parity.check("cosine", parity.cosine(r, o), 0.999)


def _fingerprint(artifacts: Mapping[str, Artifact], device: str) -> str:
    from ..runtime.cache import runtime_fingerprint_fields
    h = hashlib.sha256()
    for stage in sorted(artifacts):
        p = artifacts[stage].onnx_path
        h.update(f"{stage}:{p}:{p.stat().st_size if p else 0}:{p.stat().st_mtime_ns if p else 0}"
                 .encode())
    h.update(json.dumps(runtime_fingerprint_fields(), sort_keys=True, default=str).encode())
    h.update(device.encode())
    return h.hexdigest()[:24]


def measure(stage: str, artifact: Artifact, name: str, device: str, feeds, ref,
            runs: int = 10, clock: Callable[[], float] = time.perf_counter) -> tuple[float, str]:
    """Median latency (ms) of one engine on one stage, or raise EngineError with the reason."""
    cfg = EngineConfig(device="cpu" if name == "ort-cpu" else device)
    with get_engine(name)(artifact, cfg) as eng:
        out = {k: _host(v) for k, v in eng.run(feeds).items()}
        p = outputs_match(stage, ref, out)
        if not p.passed:
            raise EngineError(f"parity {p}")
        times = []
        for _ in range(runs):
            t0 = clock()
            _sync(eng.run(feeds))
            times.append((clock() - t0) * 1e3)
    return float(np.median(times)), str(p)


def _host(v):
    return v.detach().float().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)


def _sync(outs) -> None:
    for v in outs.values():
        if hasattr(v, "device") and getattr(v.device, "type", "") == "cuda":
            import torch
            torch.cuda.synchronize()
            return


def choose_engines(spec: Mapping[str, str], artifacts: Mapping[str, Artifact], device: str = "cpu",
                   cache_file: Path | None = None) -> dict[str, Choice]:
    """Resolve a parsed ``--engine`` spec into one ``Choice`` per stage present in ``artifacts``."""
    choices: dict[str, Choice] = {}
    auto_stages = [s for s in artifacts if spec.get(s) == "auto"]
    for s in artifacts:
        if s not in auto_stages:
            choices[s] = Choice(s, spec.get(s, REFERENCE_ENGINE), "asked for on the command line")
    if not auto_stages:
        return choices
    from ..runtime.cache import cache_root
    cache_file = cache_file or cache_root() / "auto-engines.json"
    key = _fingerprint({s: artifacts[s] for s in auto_stages}, device)
    cached = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    if key in cached:
        for s in auto_stages:
            c = cached[key][s]
            choices[s] = Choice(s, c["engine"], f"cached auto choice: {c['reason']}")
        return choices
    usable = [n for n, (ok, _) in availability().items() if ok]
    if device == "cpu":
        usable = [n for n in usable if n in CPU_ENGINES]
    record = {}
    for s in auto_stages:
        art = artifacts[s]
        feeds = sample_feeds(art)
        with get_engine(REFERENCE_ENGINE)(art) as ref_eng:
            ref = ref_eng.run(feeds)
        timings, rejected = {}, []
        for name in usable:
            try:
                timings[name] = measure(s, art, name, device, feeds, ref)
            except Exception as e:  # an engine that fails here is simply not chosen
                rejected.append(f"{name}: {str(e).splitlines()[0][:120]}")
        if not timings:
            raise EngineError(f"--engine auto | no engine passed on stage '{s}': {rejected}")
        best = min(timings, key=lambda n: timings[n][0])
        ms, par = timings[best]
        others = ", ".join(f"{n} {t[0]:.2f} ms" for n, t in sorted(timings.items(),
                                                                       key=lambda kv: kv[1][0]))
        reason = f"fastest passing engine ({others}; {par})" + \
                 (f"; rejected: {'; '.join(rejected)}" if rejected else "")
        choices[s] = Choice(s, best, reason)
        record[s] = asdict(choices[s])
    cached[key] = record
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    from .._fs import atomic_write_bytes
    atomic_write_bytes(cache_file, json.dumps(cached, indent=1).encode())
    return choices


__all__ = ["Choice", "STAGES", "parse_engine_spec", "choose_engines", "engine_names"]
