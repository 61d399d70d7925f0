"""Reference architectures: I/O contracts at reduced width, published sizes at full width,
checkpoint-compatible parameter names, and torch staying optional."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fusionrt.errors import EngineError, ModelError
from fusionrt.models.arch import ARCHS, build_arch, profile
from fusionrt.models.zoo import get_spec

torch = pytest.importorskip("torch")

W = 0.125
CASES = {  # arch -> zoo model whose contract it serves
    "iresnet50": "arcface_w600k_r50",
    "simswap256": "simswap_256",
    "inswapper": "inswapper_128",
}


def _inputs(spec, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(t.with_batch(batch), generator=g) for t in spec.inputs)


@pytest.mark.parametrize("arch", sorted(CASES))
def test_reduced_width_keeps_the_contract(arch):
    spec = get_spec(CASES[arch])
    assert spec.arch == arch
    module = build_arch(arch, W).eval()
    with torch.no_grad():
        out = module(*_inputs(spec, batch=3))
    assert tuple(out.shape) == spec.outputs[0].with_batch(3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", sorted(CASES))
def test_width_scales_every_conv(arch):
    def convs(width):
        return [(m.in_channels, m.out_channels) for m in build_arch(arch, width).modules()
                if isinstance(m, torch.nn.Conv2d)]

    full, quarter = convs(1.0), convs(0.25)
    assert len(full) == len(quarter)
    # RGB in and out stay 3 channels; every other channel count is a quarter.
    expect = [tuple(c if c == 3 else c // 4 for c in pair) for pair in full]
    assert quarter == expect


@pytest.mark.slow
@pytest.mark.parametrize("arch, params_m, gflop", [
    ("iresnet50", 43.59, 12.62),    # insightface: 43.6 M, "6.3 GFLOPs" (= G MACs)
    ("simswap256", 55.05, 125.70),  # SimSwap: ~55 M, ~126 GFLOP per 256x256 frame
    ("inswapper", 138.29, 349.15),  # 138.29 M + 512x512 emap = 554.2 MB fp32 (real: 554.25 MB)
])
def test_full_width_matches_published_size(arch, params_m, gflop):
    spec = get_spec(CASES[arch])
    module = build_arch(arch, 1.0).eval()
    params, flops = profile(module, *_inputs(spec, batch=1))
    assert params / 1e6 == pytest.approx(params_m, abs=0.01)
    assert flops / 1e9 == pytest.approx(gflop, abs=0.05)


def test_iresnet_names_follow_insightface():
    keys = set(build_arch("iresnet50", W).state_dict())
    for k in ("conv1.weight", "bn1.running_var", "prelu.weight", "layer1.0.downsample.0.weight",
              "layer3.13.conv2.weight", "layer4.2.bn3.bias", "bn2.weight", "fc.weight",
              "features.running_mean"):
        assert k in keys, k
    assert not any(k.startswith("layer3.14.") for k in keys)  # 14 blocks in stage 3


def test_simswap_names_follow_simswap():
    keys = set(build_arch("simswap256", W).state_dict())
    for k in ("first_layer.1.weight", "first_layer.2.running_mean", "down3.0.weight",
              "BottleNeck.8.conv2.1.weight", "BottleNeck.0.style1.linear.weight", "up3.1.weight",
              "up1.2.running_var", "last_layer.1.bias"):
        assert k in keys, k
    assert not any(k.startswith("BottleNeck.9.") for k in keys)


def test_inswapper_emap_is_unused_512_buffer():
    module = build_arch("inswapper", W).eval()
    assert tuple(module.emap.shape) == (512, 512)
    spec = get_spec("inswapper_128")
    args = _inputs(spec, batch=1)
    with torch.no_grad():
        before = module(*args)
        module.emap.normal_()
        after = module(*args)
    assert torch.equal(before, after)


@pytest.mark.parametrize("arch", ["simswap256", "inswapper"])
def test_swap_output_depends_on_source(arch):
    spec = get_spec(CASES[arch])
    module = build_arch(arch, W).eval()
    target, source = _inputs(spec, batch=1)
    with torch.no_grad():
        a = module(target, source)
        b = module(target, torch.roll(source, 7, dims=1))
    assert (a - b).abs().max() > 1e-4


def test_inswapper_output_in_unit_range():
    module = build_arch("inswapper", W).eval()
    with torch.no_grad():
        out = module(*_inputs(get_spec("inswapper_128"), batch=2))
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_simswap_clamp_option():
    module = build_arch("simswap256", W, clamp_output=True).eval()
    with torch.no_grad():
        out = module(torch.randn(1, 3, 256, 256) * 50, torch.randn(1, 512) * 50)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_unknown_arch_refused():
    with pytest.raises(ModelError, match="architecture 'resnet18' | unknown; expected one of"):
        build_arch("resnet18")


@pytest.mark.parametrize("width", [0.0, -1.0, 8.0])
def test_bad_width_refused(width):
    with pytest.raises(ModelError, match=r"architecture width \| got"):
        ARCHS["iresnet50"](width)


def test_without_torch_import_works_and_use_says_what_to_install(monkeypatch):
    code = ("import sys; sys.modules['torch'] = None\n"
            "import fusionrt.models.arch as a\n"
            "from fusionrt.errors import EngineError\n"
            "try:\n    a.build_arch('iresnet50')\nexcept EngineError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'fusionrt[torch]'" in out.stdout
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(EngineError, match=r"pip install 'fusionrt\[torch\]'"):
        build_arch("simswap256", W)
