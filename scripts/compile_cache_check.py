"""Measure torch-compile's persistent cache across processes: the first process compiles the
generator, a second process (same FUSIONRT_HOME) loads it again. Prints one JSON line per run.

Usage: python3 scripts/compile_cache_check.py MODEL [--device cuda] [--batch 16] [--mode max-autotune] [--aot]
Run it twice with the same FUSIONRT_HOME; the second 'load_s' is the warm-cache figure.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from fusionrt.engines.base import EngineConfig
from fusionrt.engines.registry import get_engine
from fusionrt.models.store import ModelStore
from fusionrt.pipeline.hybrid import sample_feeds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--engine", default="torch-compile")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--mode", default="max-autotune-no-cudagraphs")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--aot", action="store_true", help="AOTInductor package from the engine cache")
    a = ap.parse_args()
    art = ModelStore().resolve(a.model, allow_synthetic=True)
    feeds = sample_feeds(art, batch=a.batch)
    t0 = time.perf_counter()
    from fusionrt.engines.base import BatchProfile
    eng = get_engine(a.engine)(art, EngineConfig(device=a.device, precision=a.precision,
                                                 batch=BatchProfile(a.batch, a.batch, a.batch),
                                                 options={"mode": a.mode, "aot": a.aot})).load()
    out = eng.run(feeds)  # compile happens on the first call
    first = next(iter(out.values()))
    if hasattr(first, "cpu"):
        first = first.float().cpu().numpy()
    load_s = time.perf_counter() - t0
    print(json.dumps({"model": a.model, "engine": a.engine, "mode": a.mode, "aot": a.aot,
                      "built": getattr(eng, "aot_built", None), "batch": a.batch,
                      "precision": a.precision, "load_s": round(load_s, 3),
                      "checksum": float(np.asarray(first, np.float64).sum())}))


if __name__ == "__main__":
    main()
