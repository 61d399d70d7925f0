"""Conv channel padding (``build.channel_pad``): exact outputs, hooks kept, what is left alone,
and the torch engine's option (off by default)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from fusionrt.builders.channel_pad import ChannelPaddedConv, align_conv_channels  # noqa: E402
from fusionrt.engines.base import EngineConfig  # noqa: E402
from fusionrt.engines.registry import get_engine  # noqa: E402


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 12, 7), nn.ReLU(),
                         nn.Conv2d(12, 16, 3, padding=1, groups=4),  # grouped: left alone
                         nn.Conv2d(16, 16, 1),                        # aligned: left alone
                         nn.Conv2d(16, 3, 7, padding=3, padding_mode="zeros")).eval()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_padding_is_exact_and_keeps_hooks(memory_format):
    ref = _net()
    net = align_conv_channels(_net(), 8)
    seen = []
    net[5].conv.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["ReflectionPad2d", "ChannelPaddedConv", "ReLU", "Conv2d", "Conv2d",
                     "ChannelPaddedConv"]
    assert (net[1].conv.in_channels, net[1].conv.out_channels) == (8, 16)
    assert (net[5].conv.in_channels, net[5].conv.out_channels) == (16, 8)
    x = torch.rand(2, 3, 40, 48).contiguous(memory_format=memory_format)
    with torch.no_grad():
        want, got = ref(x), net.to(memory_format=memory_format)(x)
    assert got.shape == want.shape == (2, 3, 40, 48)
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert seen == [8]
    assert align_conv_channels(net, 8) is net and isinstance(net[1], ChannelPaddedConv)  # idempotent


def test_reflect_padded_convs_are_left_alone():
    conv = nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect")
    net = align_conv_channels(nn.Sequential(conv))
    assert net[0] is conv and conv.weight.shape == (5, 3, 3, 3)


def test_engine_option(synthetic_home):
    from fusionrt.models.store import ModelStore
    from fusionrt.builders.open import open_engine
    from fusionrt.models.spec import sample_feeds
    art = ModelStore().resolve("simswap_256", allow_synthetic=True)
    feeds = sample_feeds(art, 2)
    outs = {}
    for align in (0, 8):
        eng = open_engine("torch", art, EngineConfig(device="cpu",
                                                     options={"align_channels": align}))
        padded = [m for m in eng.module.modules() if isinstance(m, ChannelPaddedConv)]
        assert bool(padded) == bool(align)
        outs[align] = eng.run(feeds)["output"]
        eng.close()
    assert np.abs(outs[0] - outs[8]).max() < 1e-4
    assert get_engine("torch")(art, EngineConfig(device="cuda", precision="fp16")) \
        .align_channels() == 0  # off unless asked: it bought nothing on the H100
