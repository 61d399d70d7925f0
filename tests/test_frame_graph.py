"""The live path's one-graph frame (``pipeline/device/frame_graph.py``) against the per-stage
device path, on CPU torch (the same body runs eagerly; on CUDA it is captured and replayed,
checked on the device by ``tests/test_gpu_frame_graph.py``), and the plan's rule for when the
graph is on."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrt.pipeline.plan import frame_graph_plan, plan_stages
from fusionrt.pipeline.settings import PipelineConfig

torch = pytest.importorskip("torch")

from fusionrt.pipeline.device import frames as gf  # noqa: E402
from fusionrt.pipeline.device.detect import nms  # noqa: E402
from fusionrt.pipeline.device.frame_graph import FrameGraph, largest_face  # noqa: E402
from fusionrt.pipeline.swapper import FaceSwapper  # noqa: E402

DET = 320


@pytest.fixture
def swapper(synthetic_home, astronaut):
    cfg = PipelineConfig(swapper="inswapper_128", device="cpu", kernels="device",
                         allow_synthetic=True, det_size=DET, gen_batch=1)
    with FaceSwapper.open(cfg) as s:
        s.set_source(astronaut)
        yield s


def _frame(img: np.ndarray, fmt: str):
    t = torch.from_numpy(np.array(img))[None]  # a copy: the swap writes in place
    return gf.bgr_to_yuv420(gf.hwc_to_nchw(t)) if fmt == "yuv420p" else t


@pytest.mark.parametrize("fmt", ["bgr", "yuv420p"])
def test_graph_body_equals_per_stage_path(swapper, grace, fmt):
    h, w = grace.shape[:2]
    h, w = h - h % 2, w - w % 2
    img = np.ascontiguousarray(grace[:h, :w])
    staged, graphed = _frame(img, fmt), _frame(img, fmt)
    before = staged.clone()
    counts = swapper.process(staged, fmt, h, w)
    g = FrameGraph(swapper.kernels, fmt, h, w)
    g.set_latent(swapper.source.latent)
    n = g.run(graphed)
    assert (counts, n) == ([1], 1)
    changed = (staged != before).sum().item()
    assert changed > 1000  # a face was pasted
    diff = (staged.int() - graphed.int()).abs()
    assert diff.max().item() <= 1 and (diff > 0).sum().item() <= changed * 0.01


def test_graph_frame_without_face_is_untouched(swapper):
    flat = np.full((240, 320, 3), 128, np.uint8)
    frame = _frame(flat, "bgr")
    g = FrameGraph(swapper.kernels, "bgr", 240, 320)
    g.set_latent(swapper.source.latent)
    assert g.run(frame) == 0
    assert torch.equal(frame, _frame(flat, "bgr"))


def test_largest_face_equals_nms_then_largest(swapper):
    """Planted detector outputs: clusters of overlapping anchors (suppression chains), some
    below threshold; the fixed-shape choice equals NMS on the host then the largest box."""
    det = swapper.kernels.detector
    a = det.priors.shape[0]
    gen = torch.Generator().manual_seed(3)
    for trial in range(20):
        conf = torch.zeros(1, a, 2)
        scores = torch.rand(a, generator=gen) * 0.45  # all below threshold
        hot = torch.randint(0, a, (60,), generator=gen)
        scores[hot] = 0.5 + 0.5 * torch.rand(60, generator=gen)
        conf[0, :, 1] = scores
        loc = torch.randn(1, a, 4, generator=gen) * 0.8
        lmk = torch.randn(1, a, 10, generator=gen)
        scale = (0.5, 0.5)
        dets = det.postprocess(loc, conf, lmk, scale, 480, 640)
        faces = dets.faces(1)[0]
        box, pts, found = largest_face(det, loc, conf, lmk, scale, 480, 640)
        assert found.item() == (1.0 if faces else 0.0)
        best = max(faces, key=lambda f: f.area)
        np.testing.assert_allclose(box[0].numpy(), best.box, atol=1e-3)
        np.testing.assert_allclose(pts[0].numpy(), best.landmarks, atol=1e-3)
    keep = nms(torch.tensor([[0, 0, 10, 10.]]), torch.tensor([0.9]), 0.4)
    assert keep.tolist() == [0]


def test_plan_turns_the_graph_on_only_where_it_holds(synthetic_home):
    on = dict(frame_graph=True, cuda_graphs=True, select="largest", detect_every=1)
    ok, why = frame_graph_plan(PipelineConfig(**on), "cuda", "device",
                               {"detect": "torch", "embed": "ort-cuda", "swap": "torch"})
    assert ok and "one CUDA graph" in why
    ok, why = frame_graph_plan(PipelineConfig(**on), "cuda", "device",
                               {"detect": "torch", "swap": "torch-compile"})
    assert not ok and "swap engine 'torch-compile' cannot run inside a graph" in why
    ok, why = frame_graph_plan(PipelineConfig(**{**on, "select": "all", "detect_every": 2}),
                               "cuda", "device", {"detect": "torch", "swap": "torch"})
    assert not ok and "selection 'all'" in why and "--detect-every" in why
    assert frame_graph_plan(PipelineConfig(), "cuda", "device", {}) == (False, "")
    plan = plan_stages(PipelineConfig(swapper="inswapper_128", allow_synthetic=True,
                                      kernels="device", frame_graph=True))
    assert not plan.frame_graph and "CUDA" in plan.frame_graph_why
    assert plan.explain()["frame_graph"].startswith("off: needs the device kernels on CUDA")
    assert plan.stages["swap"].options.get("cuda_graph") in (None, False)
