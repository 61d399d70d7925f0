"""``--engine auto``: time every candidate engine on each stage, keep those whose outputs pass
the parity check against the FP32 reference, pick the fastest, and cache the decision under the
fingerprint of this machine (GPU, versions), device and model files — the measurement is paid
once per machine. ``plan.py`` says which engines are candidates and which is the reference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .._fs import atomic_write_bytes, read_json_state
from ..builders import parity
from ..builders.open import open_engine
from ..engines.base import EngineConfig
from ..errors import EngineError
from ..models.spec import Artifact, sample_feeds
from ..runtime.cache import cache_root, runtime_fingerprint_fields

log = logging.getLogger(__name__)

CACHE_FILE = "auto-engines.json"


@dataclass(frozen=True)
class Measured:
    engine: str
    reason: str


def outputs_match(stage: str, ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> \
        parity.Parity:
    """Stage-appropriate parity: cosine for embeddings and raw detector heads, PSNR for images."""
    name = next(iter(ref))
    r, o = np.asarray(ref[name]), np.asarray(out[name])
    if stage == "swap":
        return parity.check("psnr", parity.psnr(r, o, data_range=float(np.ptp(r)) or 1.0), 40.0)
    return parity.check("cosine", parity.cosine(r, o), 0.999)


def fingerprint(artifacts: Mapping[str, Artifact], device: str) -> str:
    h = hashlib.sha256()
    for stage in sorted(artifacts):
        p = artifacts[stage].onnx_path
        st = p.stat() if p else None
        h.update(f"{stage}:{p}:{st.st_size if st else 0}:{st.st_mtime_ns if st else 0}".encode())
    h.update(json.dumps(runtime_fingerprint_fields(), sort_keys=True, default=str).encode())
    h.update(device.encode())
    return h.hexdigest()[:24]


def time_engine(stage: str, artifact: Artifact, name: str, device: str, feeds, ref,
                runs: int = 10, clock: Callable[[], float] = time.perf_counter
                ) -> tuple[float, str]:
    """Median latency (ms) of one engine on ``device`` (the plan passes only engines that run
    there) on one stage, or raise EngineError with the reason."""
    eng = open_engine(name, artifact, EngineConfig(device=device))
    try:
        out = {k: _host(v) for k, v in eng.run(feeds).items()}
        p = outputs_match(stage, ref, out)
        if not p.passed:
            raise EngineError(f"parity {p}")
        times = []
        for _ in range(runs):
            t0 = clock()
            _sync(eng.run(feeds))
            times.append((clock() - t0) * 1e3)
    finally:
        eng.close()
    return float(np.median(times)), str(p)


def _host(v):
    return v.detach().float().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)


def _sync(outs) -> None:
    for v in outs.values():
        if hasattr(v, "device") and getattr(v.device, "type", "") == "cuda":
            import torch
            torch.cuda.synchronize()
            return


def read_cache(path: Path) -> dict:
    """The cached decisions; a corrupt or unreadable file is discarded with a warning (and
    rewritten by the next measurement), never a crash."""
    return read_json_state(path, {}, what="engine choices")


def choose_measured(artifacts: Mapping[str, Artifact], candidates: Sequence[str], reference: str,
                    device: str, cache_file: Path | None = None) -> dict[str, tuple[str, str]]:
    """Stage → (fastest passing engine, why), measured once per fingerprint."""
    cache_file = cache_file or cache_root() / CACHE_FILE
    key = fingerprint(artifacts, device)
    cached = read_cache(cache_file)
    entry = cached.get(key)
    if isinstance(entry, dict) and all(isinstance(entry.get(s), dict) and
                                       entry[s].get("engine") in candidates for s in artifacts):
        return {s: (entry[s]["engine"], f"cached auto choice: {entry[s].get('reason', '')}")
                for s in artifacts}
    out, record = {}, {}
    for s, art in artifacts.items():
        feeds = sample_feeds(art)
        ref_eng = open_engine(reference, art)
        try:
            ref = ref_eng.run(feeds)
        finally:
            ref_eng.close()
        timings, rejected = {}, []
        for name in candidates:
            try:
                timings[name] = time_engine(s, art, name, device, feeds, ref)
            except Exception as e:  # noqa: BLE001 - an engine that fails here is not chosen
                rejected.append(f"{name}: {(str(e).splitlines() or [type(e).__name__])[0][:120]}")
        if not timings:
            raise EngineError(f"--engine auto | no engine passed on stage '{s}': {rejected}")
        best = min(timings, key=lambda n: timings[n][0])
        others = ", ".join(f"{n} {t[0]:.2f} ms" for n, t in sorted(timings.items(),
                                                                       key=lambda kv: kv[1][0]))
        reason = f"fastest passing engine ({others}; {timings[best][1]})" + \
                 (f"; rejected: {'; '.join(rejected)}" if rejected else "")
        out[s] = (best, reason)
        record[s] = asdict(Measured(best, reason))
    cached[key] = record
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_file, json.dumps(cached, indent=1).encode())
    except OSError as e:  # a read-only home: the choice holds for this run only
        log.warning("engine choices '%s' | cannot be saved (%s); measuring again next time",
                    cache_file, e)
    return out
