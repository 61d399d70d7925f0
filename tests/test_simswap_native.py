"""SimSwap from ONNX as the native torch module (``models.arch.simswap.simswap_from_onnx``):
same outputs as the file under ONNX Runtime and as the reference weights, rewrites apply to it,
and files it cannot map are refused with the reason (the engines then take the generic path)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from fusionrt.engines.torch_eager import load_torch_module  # noqa: E402
from fusionrt.errors import EngineError, ModelError  # noqa: E402
from fusionrt.models.arch.simswap import SimSwapGenerator, simswap_from_onnx  # noqa: E402
from fusionrt.models.spec import Artifact, sample_feeds  # noqa: E402
from fusionrt.models.store import ModelStore  # noqa: E402


@pytest.fixture
def simswap_art(synthetic_home):
    return ModelStore().resolve("simswap_256", allow_synthetic=True)


def _feeds(art, grace):
    import cv2
    feeds = sample_feeds(art, 1, seed=2)
    img = cv2.resize(grace, (256, 256))[:, :, ::-1].astype(np.float32) / 255.0
    feeds["target"] = np.ascontiguousarray(img.transpose(2, 0, 1)[None])
    return feeds


def test_native_module_matches_the_reference_weights(simswap_art, grace):
    """The export folded every BatchNorm into its conv; the loader maps the rest by graph
    order and names, and the result computes what the reference weights compute."""
    from fusionrt.models.arch.reference import load_reference
    net = simswap_from_onnx(simswap_art.onnx_path)
    assert isinstance(net, SimSwapGenerator) and net.clamp_output
    assert isinstance(net.first_layer[2], torch.nn.Identity)  # folded BatchNorm
    ref = load_reference("simswap_256", simswap_art.weights_path).eval()
    feeds = {k: torch.from_numpy(v) for k, v in _feeds(simswap_art, grace).items()}
    with torch.no_grad():
        np.testing.assert_allclose(net(*feeds.values()).numpy(),
                                   ref(*feeds.values()).numpy(), atol=1e-4)


def test_onnx_only_artifact_loads_natively_and_gets_rewritten(simswap_art):
    """A downloaded ONNX (no torch weights) becomes the native module, so the compiled
    engine's rewrites reach real weights."""
    from fusionrt.builders.generator_rewrite import rewrite_generator
    onnx_only = Artifact(simswap_art.spec, simswap_art.onnx_path, None)
    net = load_torch_module(onnx_only)
    assert isinstance(net, SimSwapGenerator)
    counts = rewrite_generator(net, "all")
    assert counts == {"norm": 18, "upconv": 3, "head": 1, "stem": 1, "style": 18, "respad": 9}


def _edit(path, tmp_path, edit) -> str:
    model = onnx.load(str(path))
    edit(model.graph)
    out = tmp_path / "edited.onnx"
    onnx.save(model, str(out))
    return str(out)


def _swap_two_styles_and_hide_names(graph):
    """Rename the style weights (so their names cannot be used) and swap the first two Gemm
    nodes in the node list: graph order no longer follows the blocks."""
    names = {}
    for i, t in enumerate(graph.initializer):
        if ".linear." in t.name:
            names[t.name] = f"w{i}"
            t.name = names[t.name]
    for n in graph.node:
        for j, x in enumerate(n.input):
            if x in names:
                n.input[j] = names[x]
    gemms = [i for i, n in enumerate(graph.node) if n.op_type == "Gemm"]
    a, b = gemms[0], gemms[1]
    na, nb = onnx.NodeProto(), onnx.NodeProto()
    na.CopyFrom(graph.node[a])
    nb.CopyFrom(graph.node[b])
    graph.node[a].CopyFrom(nb)
    graph.node[b].CopyFrom(na)


def test_wrong_order_is_caught_by_the_runtime_check(simswap_art, tmp_path):
    bad = _edit(simswap_art.onnx_path, tmp_path, _swap_two_styles_and_hide_names)
    with pytest.raises(ModelError, match="differs from ONNX Runtime"):
        simswap_from_onnx(bad)


def test_other_architectures_are_refused(synthetic_home, tmp_path):
    store = ModelStore()
    with pytest.raises(ModelError, match="Conv nodes; SimSwap-256 has 26"):
        simswap_from_onnx(store.resolve("inswapper_128", allow_synthetic=True).onnx_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="cannot be read"):
        simswap_from_onnx(junk)


def test_refused_file_falls_back_to_the_generic_path(simswap_art, tmp_path, caplog):
    bad = _edit(simswap_art.onnx_path, tmp_path, _swap_two_styles_and_hide_names)
    art = Artifact(simswap_art.spec, bad, None)
    caplog.set_level(logging.WARNING)
    try:
        net = load_torch_module(art)  # onnx2torch installed: the generic module
        assert not isinstance(net, SimSwapGenerator)
    except EngineError as e:  # onnx2torch not installed: its install hint
        assert "onnx2torch" in str(e)
    assert "native torch module refused" in caplog.text


def test_passed_check_is_cached_per_file(simswap_art, tmp_path, monkeypatch):
    """The ONNX Runtime check runs once per file (its verdict is kept in the engine cache);
    a file that fails it, or any other file, is checked on every load until it passes."""
    import onnxruntime as ort
    monkeypatch.setenv("FUSIONRT_HOME", str(tmp_path / "home"))
    entries = tmp_path / "home" / "engines" / "native-check"
    bad = _edit(simswap_art.onnx_path, tmp_path, _swap_two_styles_and_hide_names)
    with pytest.raises(ModelError, match="differs from ONNX Runtime"):
        simswap_from_onnx(bad)
    assert not entries.exists()  # a refusal is not remembered as a pass
    first = simswap_from_onnx(simswap_art.onnx_path)
    assert len(list(entries.glob("*.frtc"))) == 1
    sessions = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession",
                        lambda *a, **k: sessions.append(a) or real(*a, **k))
    again = simswap_from_onnx(simswap_art.onnx_path)
    assert sessions == []  # the cached verdict: no ONNX Runtime run
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ModelError, match="differs from ONNX Runtime"):
        simswap_from_onnx(bad)  # another file: checked, still refused
    assert len(sessions) == 1


def test_unwritable_cache_still_loads(simswap_art, tmp_path, monkeypatch, caplog):
    """A home the cache cannot write to costs the check on each load, nothing else."""
    blocker = tmp_path / "home"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("FUSIONRT_HOME", str(blocker))
    caplog.set_level(logging.WARNING)
    assert isinstance(simswap_from_onnx(simswap_art.onnx_path), SimSwapGenerator)
    assert "check passed but not cached" in caplog.text
