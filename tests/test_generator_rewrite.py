"""Exact generator rewrites (``build.generator_rewrite``): each part computes the original
function on a real photo, odd sizes and both memory layouts; what each part matches and leaves
alone; the FP16 keep-list; and the engines' ``rewrite`` option with its automatic default."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from fusionrt.builders.generator_rewrite import (PARTS, InstanceNormVarMean, PatchConv,  # noqa: E402
                                              ShiftSumConv, UpsampleConv, parse_parts,
                                              rewrite_generator)
from fusionrt.builders.aot import aot_fingerprint  # noqa: E402
from fusionrt.builders.open import open_engine  # noqa: E402
from fusionrt.builders.torch_module import rewrite_parts  # noqa: E402
from fusionrt.engines.base import BatchProfile, EngineConfig  # noqa: E402
from fusionrt.engines.registry import get_engine  # noqa: E402
from fusionrt.errors import EngineError  # noqa: E402
from fusionrt.models.arch.simswap import simswap256  # noqa: E402
from fusionrt.models.spec import sample_feeds  # noqa: E402

LAYOUTS = [torch.contiguous_format, torch.channels_last]
# SimSwap-256 at any width: 9 blocks (18 norms, 18 styles), 3 upsampling stages, 1 head, 1 stem.
SIMSWAP_COUNTS = {"norm": 18, "upconv": 3, "head": 1, "stem": 1, "style": 18, "respad": 9}


@pytest.fixture(scope="module")
def simswap():
    """A narrow SimSwap with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    m = simswap256(width=0.125).eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def face_batch(astronaut, grace):
    """Two real photos as a (2, 3, 256, 256) RGB batch in [0, 1], and two unit id vectors."""
    imgs = [cv2.resize(im, (256, 256))[:, :, ::-1] for im in (astronaut, grace)]
    x = torch.from_numpy(np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    src = F.normalize(torch.randn(2, 512, generator=torch.Generator().manual_seed(1)), dim=1)
    return x, src


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("parts", [(p,) for p in PARTS] + [PARTS])
def test_each_part_computes_the_same_generator(simswap, face_batch, parts, layout):
    x, src = face_batch
    with torch.no_grad():
        ref = simswap(x, src)
        net = copy.deepcopy(simswap)
        counts = rewrite_generator(net, parts)
        out = net.to(memory_format=layout)(x.contiguous(memory_format=layout), src)
    assert counts == {p: SIMSWAP_COUNTS[p] for p in parts}
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() < 1e-4 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("h,w", [(5, 7), (2, 2), (16, 9)])
def test_upsample_conv_matches_on_odd_sizes(h, w, layout):
    torch.manual_seed(h * w)
    up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    conv = nn.Conv2d(6, 5, 3, padding=1)
    x = torch.randn(3, 6, h, w).contiguous(memory_format=layout)
    with torch.no_grad():
        ref = conv(up(x))
        out = UpsampleConv(conv)(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_upsample_conv_falls_back_on_one_pixel_lines():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 1, 6)
    with torch.no_grad():
        ref = conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        torch.testing.assert_close(UpsampleConv(conv)(x), ref)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_narrow_convs_match_on_odd_sizes(layout):
    torch.manual_seed(3)
    head, stem = nn.Conv2d(16, 3, 7), nn.Conv2d(3, 16, 5)
    with torch.no_grad():
        y = torch.randn(2, 16, 9, 13).contiguous(memory_format=layout)
        ref = head(F.pad(y, (3, 3, 3, 3), mode="reflect"))
        out = ShiftSumConv(head)(y)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        x = torch.randn(2, 3, 11, 8).contiguous(memory_format=layout)
        ref = stem(F.pad(x, (2, 2, 2, 2), mode="reflect"))
        torch.testing.assert_close(PatchConv(stem)(x), ref, atol=1e-5, rtol=1e-5)


def test_patterns_left_alone():
    """Wide convs, zero-padded 7x7s, nearest upsampling, a strided 3x3 after an upsample,
    and an ArcFace-style net: nothing to rewrite, and the count says so."""
    net = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(16, 16, 3),           # wide
                        nn.Conv2d(16, 3, 7, padding=3),                         # not reflect
                        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(3, 8, 3, padding=1),
                        nn.Upsample(scale_factor=2, mode="bilinear"),
                        nn.Conv2d(8, 8, 3, stride=2, padding=1)).eval()
    before = [type(m) for m in net]
    assert sum(rewrite_generator(net, "all").values()) == 0
    assert [type(m) for m in net] == before
    from fusionrt.models.arch.iresnet import iresnet50
    assert sum(rewrite_generator(iresnet50(width=0.125).eval(), "all").values()) == 0


def test_parse_parts():
    assert parse_parts(True) == PARTS == parse_parts("all")
    assert parse_parts(None) == () == parse_parts(False) == parse_parts("")
    assert parse_parts("head, stem") == ("head", "stem")
    assert parse_parts(["norm"]) == ("norm",)
    with pytest.raises(ValueError, match="unknown rewrite part"):
        parse_parts("head,warp")


def test_fp16_keeps_the_one_pass_norm_in_fp32(simswap, face_batch):
    from fusionrt.builders.fp16 import fp16_module
    net = copy.deepcopy(simswap)
    rewrite_generator(net, "norm,head")
    half = fp16_module(net)
    islands = [m for m in half.modules() if type(m).__name__ == "Fp32Island"]
    assert sum(isinstance(m.inner, InstanceNormVarMean) for m in islands) == 18
    assert all(p.dtype == torch.float32 for m in islands for p in m.inner.parameters())
    x, src = face_batch
    with torch.no_grad():
        out = half(x, src)  # CPU FP16: runs, image head back in FP32
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# -- engines ----------------------------------------------------------------------------------

def _config(batch=2, device="cpu", **options):
    return EngineConfig(device=device, precision="fp32", batch=BatchProfile(batch, batch, batch),
                        options=options)


def _engine(name, art, batch=2, **options):
    return get_engine(name)(art, _config(batch, **options))


def _open(name, art, batch=2, **options):
    """Loaded, with what the options ask for built (rewrites are a builder's product)."""
    return open_engine(name, art, _config(batch, **options))


def test_torch_engine_option_is_exact_and_reports_counts(synthetic_home):
    from fusionrt.models.store import ModelStore
    art = ModelStore().resolve("simswap_256", allow_synthetic=True)
    feeds = sample_feeds(art, 2, seed=3)
    ref = _engine("torch", art).load().run(feeds)["output"]
    eng = _open("torch", art, rewrite="head,style,respad")
    out = eng.run(feeds)["output"]
    assert eng.rewritten == {"head": 1, "style": 18, "respad": 9}
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert _engine("torch", art).load().rewritten == {}  # eager: auto means none


def test_bad_rewrite_option_is_a_clear_error(synthetic_home):
    from fusionrt.models.store import ModelStore
    art = ModelStore().resolve("simswap_256", allow_synthetic=True)
    with pytest.raises(EngineError, match="option rewrite: unknown rewrite part"):
        _open("torch", art, rewrite="head,warp")


def test_compile_auto_rewrite_follows_batch_and_arch(synthetic_home):
    """The measured choice on CUDA: launch-bound parts for small batches, GEMM head/stem and
    folded upsampling from batch 8; none on CPU or for archs not measured. (Checked on the
    decision alone: no GPU here.)"""
    from fusionrt.engines.torch_compile import TorchCompileEngine
    from fusionrt.models.store import ModelStore
    store = ModelStore()
    sim = store.resolve("simswap_256", allow_synthetic=True)
    ins = store.resolve("inswapper_128", allow_synthetic=True)

    def parts(art, batch, device="cuda", **options):
        return rewrite_parts(get_engine("torch-compile"), art, _config(batch, device, **options))

    assert parts(sim, 1) == TorchCompileEngine.AUTO_SMALL_BATCH
    assert parts(sim, 16) == TorchCompileEngine.AUTO_LARGE_BATCH
    assert parts(sim, 16, "cpu") == () == parts(ins, 1)
    assert parts(ins, 1, rewrite="head") == ("head",)
    eng = _engine("torch-compile", sim, 1)
    eng.rewritten = {"norm": 18}
    assert eng.inductor_options() == {"split_reductions": False}
    eng = _engine("torch-compile", sim, 1, rewrite="norm", inductor={"freezing": True})
    eng.rewritten = {"norm": 18}
    assert eng.inductor_options() == {"freezing": True}  # explicit choices are left alone


def test_aot_fingerprint_names_the_rewrite(synthetic_home):
    from fusionrt.models.store import ModelStore
    art = ModelStore().resolve("simswap_256", allow_synthetic=True)
    prints = set()
    for rw in ("head", "head,stem", False):
        prints.add(aot_fingerprint(get_engine("torch-compile"), art, _config(1, rewrite=rw)).key())
    assert len(prints) == 3


@pytest.mark.slow
def test_compiled_rewrite_matches_eager(synthetic_home):
    """Inductor on CPU compiles the rewritten layers (shifted sum, patches, phase conv with
    selects, padded hand-over, one style GEMM) to the same outputs."""
    from fusionrt.models.store import ModelStore
    art = ModelStore().resolve("simswap_256", allow_synthetic=True)
    feeds = sample_feeds(art, 2, seed=5)
    ref = _engine("torch", art).load().run(feeds)["output"]
    eng = _open("torch-compile", art, rewrite="all", channels_last=True)
    np.testing.assert_allclose(eng.run(feeds)["output"], ref, atol=1e-4)
