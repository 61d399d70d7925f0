"""torch-compile's ahead-of-time mode: an AOTInductor package built once into the engine cache,
loaded from it by a later engine (no tracing, no compiling), same outputs as eager."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrt.builders import parity
from fusionrt.builders.aot import aot_fingerprint
from fusionrt.builders.open import open_engine
from fusionrt.engines.base import BatchProfile, EngineConfig
from fusionrt.engines.registry import get_engine
from fusionrt.models.spec import sample_feeds

torch = pytest.importorskip("torch")


@pytest.mark.slow
def test_aot_package_is_built_once_and_reused(tmp_path):
    from fusionrt.runtime.cache import EngineCache
    from fusionrt.builders.synth import synthesize
    from fusionrt.models.store import ModelStore
    store = ModelStore(tmp_path / "home")
    synthesize("simswap_256", store.synthetic_path("simswap_256"), width=0.05)
    art = store.resolve("simswap_256", allow_synthetic=True)
    feeds = sample_feeds(art, batch=3, seed=4)
    feeds["target"] = np.random.default_rng(5).random(feeds["target"].shape, np.float32)
    ref = get_engine("torch")(art).run(feeds)["output"]
    cfg = EngineConfig(batch=BatchProfile(1, 2, 4),
                       options={"aot": True, "cache_dir": str(tmp_path / "engines")})
    first = open_engine("torch-compile", art, cfg)
    assert first.aot_built is True
    out1 = first.run(feeds)["output"]
    assert EngineCache(tmp_path / "engines").get(
        aot_fingerprint(type(first), first.artifact, first.config)) is not None
    second = open_engine("torch-compile", art, cfg)
    assert second.aot_built is False  # loaded from the cache, not compiled again
    out2 = second.run(feeds)["output"]
    assert parity.psnr(ref, out1, 1.0) >= 50.0
    np.testing.assert_array_equal(out1, out2)


def test_gpu_package_load_skips_the_cpu_isa_probe(monkeypatch, tmp_path):
    """AOTInductor's load compiles CPU-ISA probe programs first (36 s of a 40 s load on the
    H100 host); CUDA packages skip it, CPU packages keep it, and the patch never outlives
    the load."""
    import torch
    from torch._inductor import codecache

    from fusionrt.engines.torch_compile import load_package
    real = codecache.get_device_information
    seen = []

    def fake_load(path):
        seen.append((path, codecache.get_device_information))
        if codecache.get_device_information is not real:
            return codecache.get_device_information("cuda")
        return "cpu-path"

    monkeypatch.setattr(torch._inductor, "aoti_load_package", fake_load)
    assert load_package(tmp_path / "m.pt2", "cuda") == {}
    assert codecache.get_device_information is real
    assert load_package(tmp_path / "m.pt2", "cpu") == "cpu-path"
    assert seen[1][1] is real and seen[0][0] == str(tmp_path / "m.pt2")

    def broken(path):
        raise RuntimeError("bad package")

    monkeypatch.setattr(torch._inductor, "aoti_load_package", broken)
    with pytest.raises(RuntimeError):
        load_package(tmp_path / "m.pt2", "cuda")
    assert codecache.get_device_information is real
