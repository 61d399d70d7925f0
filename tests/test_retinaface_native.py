"""The native PyTorch RetinaFace (``fusionrt.models.arch.retinaface``) loaded from the shipped
ONNX: raw outputs against ONNX Runtime, the same faces through the torch engine, clear errors for
a broken file, and the same outputs whatever the input's memory layout."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from fusionrt.builders import parity
from fusionrt.engines.base import EngineConfig
from fusionrt.engines.registry import get_engine
from fusionrt.errors import ModelError
from fusionrt.pipeline.host.detect import Detector

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from fusionrt.models.arch.retinaface import RetinaFace, retinaface_from_onnx  # noqa: E402

# max |native - ORT CPU| on the two letterboxed photos (measured: ~2e-5 for loc/landmarks,
# ~2e-6 for conf: FP32 summation order only).
TOLERANCE = {"loc": 1e-3, "conf": 1e-4, "landmarks": 1e-3}


@pytest.fixture(scope="module")
def onnx_path(detector) -> Path:
    return detector.engine.artifact.onnx_path


@pytest.fixture(scope="module")
def native(onnx_path) -> RetinaFace:
    return retinaface_from_onnx(onnx_path)


@pytest.fixture(scope="module")
def batch(detector, astronaut, grace) -> np.ndarray:
    """Both photos letterboxed to the detector's 640x640 input, batch 2."""
    return np.stack([detector.letterbox(img)[0] for img in (astronaut, grace)])


def _run(module, x) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        return {k: v.numpy() for k, v in zip(TOLERANCE, module(x))}


def test_raw_outputs_match_onnxruntime(native, detector, batch):
    ref = detector.engine.run({"input": batch})
    got = _run(native, torch.from_numpy(batch))
    for name, tol in TOLERANCE.items():
        assert got[name].shape == ref[name].shape and ref[name].shape[:2] == (2, 16800)
        assert np.abs(got[name] - ref[name]).max() < tol, name


@pytest.mark.parametrize("options", [{}, {"channels_last": True}], ids=["nchw", "channels_last"])
def test_torch_engine_finds_the_same_faces(detector, astronaut, grace, options):
    ref = detector.detect_batch([astronaut, grace])
    with get_engine("torch")(detector.engine.artifact, EngineConfig(options=options)) as eng:
        assert isinstance(eng.module, RetinaFace)  # native, not onnx2torch
        got = Detector(eng).detect_batch([astronaut, grace])
    for r, g in zip(ref, got):
        assert len(g) == len(r) == 1
        iou = parity.box_iou(np.stack([f.box for f in r]), np.stack([f.box for f in g]))
        assert np.diag(iou).min() >= 0.99
        assert abs(r[0].score - g[0].score) < 1e-4
        assert np.abs(r[0].landmarks - g[0].landmarks).max() < 0.5


def test_memory_layout_does_not_change_outputs(native, batch):
    x = torch.from_numpy(batch)
    ref = _run(native, x)
    wide = torch.zeros(*x.shape[:3], 2 * x.shape[3])
    wide[..., ::2] = x
    strided = wide[..., ::2]
    assert not strided.is_contiguous()
    nhwc = copy.deepcopy(native).to(memory_format=torch.channels_last)
    cases = {"strided": (native, strided),
             "channels_last input": (native, x.contiguous(memory_format=torch.channels_last)),
             "channels_last module": (nhwc, x.contiguous(memory_format=torch.channels_last))}
    for case, (module, inp) in cases.items():  # measured: 0 for channels_last, ~4e-5 strided
        got = _run(module, inp)
        for name, tol in TOLERANCE.items():
            assert np.abs(got[name] - ref[name]).max() < tol, (case, name)


def _node(model, name: str):
    return next(n for n in model.graph.node if n.name == name)


def _init(model, name: str):
    return next(t for t in model.graph.initializer if t.name == name)


def _drop_weight(model) -> None:
    model.graph.initializer.remove(_init(model, _node(model, "/fpn/merge1/merge1.0/Conv").input[1]))


def _reshape_weight(model) -> None:
    t = _init(model, _node(model, "/fpn/merge1/merge1.0/Conv").input[1])
    t.dims[:] = [64, 64, 9, 1]


def _stray_initializer(model) -> None:
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(np.zeros(4, np.float32), "stray"))


def _rewire_ssh_repeat(model) -> None:
    """ssh1's second conv5X5_1 call fed ssh2's weights (same shape) through its Identity."""
    weight = _node(model, "/ssh1/conv5X5_1/conv5X5_1.0_1/Conv").input[1]
    identity = next(n for n in model.graph.node if n.output[0] == weight)
    identity.input[0] = _node(model, "/ssh2/conv5X5_1/conv5X5_1.0/Conv").input[1]


def _change_alpha(model) -> None:
    next(n for n in model.graph.node if n.op_type == "LeakyRelu").attribute[0].f = 0.2


BROKEN: dict[str, tuple[Callable, str]] = {
    "weight removed": (_drop_weight,
                       r"'/fpn/merge1/merge1.0/Conv' \| weight '.+' is missing from the init"),
    "weight reshaped": (_reshape_weight, r"is float32 \(64, 64, 9, 1\); 'fpn.merge1.0' expects "
                                         r"float32 \(64, 64, 3, 3\)"),
    "unused initializer": (_stray_initializer, "initializers no conv uses: stray"),
    "repeated call, other weights": (_rewire_ssh_repeat,
                                     "calls 'ssh1.conv5X5_1.0' again with another input"),
    "other LeakyRelu slope": (_change_alpha, "the native module hard-codes"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_onnx_is_refused_with_the_reason(onnx_path, tmp_path, case):
    mutate, match = BROKEN[case]
    model = onnx.load(str(onnx_path))
    mutate(model)
    bad = tmp_path / "broken.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ModelError, match=match):
        retinaface_from_onnx(bad)


def test_unreadable_file_is_a_model_error(tmp_path):
    bad = tmp_path / "not.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match=r"'not.onnx' \| cannot be read"):
        retinaface_from_onnx(bad)
