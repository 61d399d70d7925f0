"""Measure torch-compile's persistent cache across processes: the first process compiles the
generator, a second process (same FUSIONRT_HOME) loads it again. Prints one JSON line per run.

Usage: python3 benchmarks/scripts/compile_cache_check.py MODEL [--device cuda] [--batch 16] [--mode max-autotune] [--aot]
Run it twice with the same FUSIONRT_HOME; the second 'load_s' is the warm-cache figure.
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()  # before importing torch: the process's own start-up cost

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402

from fusionrt.builders.open import open_engine  # noqa: E402
from fusionrt.engines.base import EngineConfig  # noqa: E402
from fusionrt.models.spec import sample_feeds  # noqa: E402
from fusionrt.models.store import ModelStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--engine", default="torch-compile")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--mode", default="max-autotune-no-cudagraphs")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--aot", action="store_true", help="AOTInductor package from the engine cache")
    ap.add_argument("--warm-imports", action="store_true",
                    help="import torch's compiler stack (Inductor, Dynamo) before timing the "
                         "load, as a serving process that already uses it has; timed apart")
    ap.add_argument("--profile-load", help="write a cProfile of the engine load (top 40 by "
                                           "cumulative time) to this file")
    a = ap.parse_args()
    imports_s = None
    if a.warm_imports:
        t = time.perf_counter()
        import torch
        import torch._dynamo  # noqa: F401
        import torch._inductor  # noqa: F401
        if a.device.startswith("cuda"):
            torch.zeros(1, device=a.device)  # CUDA context too
        imports_s = round(time.perf_counter() - t, 3)
    art = ModelStore().resolve(a.model, allow_synthetic=True)
    feeds = sample_feeds(art, batch=a.batch)
    t0 = time.perf_counter()
    from fusionrt.engines.base import BatchProfile
    cfg = EngineConfig(device=a.device, precision=a.precision,
                       batch=BatchProfile(a.batch, a.batch, a.batch),
                       options={"mode": a.mode, "aot": a.aot})
    if a.profile_load:
        import cProfile
        import io
        import pstats
        prof = cProfile.Profile()
        eng = prof.runcall(open_engine, a.engine, art, cfg)
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(40)
        with open(a.profile_load, "w") as f:
            f.write(text.getvalue())
    else:
        eng = open_engine(a.engine, art, cfg)
    engine_load_s = time.perf_counter() - t0
    out = eng.run(feeds)  # the JIT compile happens on the first call
    first = next(iter(out.values()))
    if hasattr(first, "cpu"):
        first = first.float().cpu().numpy()
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    second = next(iter(eng.run(feeds).values()))
    if hasattr(second, "cpu"):
        second = second.float().cpu().numpy()
    print(json.dumps({"model": a.model, "engine": a.engine, "mode": a.mode, "aot": a.aot,
                      "built": getattr(eng, "aot_built", None), "batch": a.batch,
                      "precision": a.precision, "device": a.device,
                      "engine_load_s": round(engine_load_s, 3),
                      "load_s": round(load_s, 3),  # load + first output: the cached-engine figure
                      "second_run_s": round(time.perf_counter() - t1, 3),
                      "aot_timing": getattr(eng, "aot_timing", None),
                      "warm_imports_s": imports_s,
                      "process_s": round(time.perf_counter() - T_PROCESS, 3),
                      "checksum": float(np.asarray(first, np.float64).sum())}))


if __name__ == "__main__":
    main()
