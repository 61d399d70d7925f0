"""On a CUDA GPU: the captured frame graph (``pipeline/device/frame_graph.py``) replays the
per-stage device path's result frame after frame (faces, no face, a new source), and the live
command's plan turns it on. Skipped without CUDA (run on the device machine)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from fusionrt.pipeline.device import frames as gf  # noqa: E402
from fusionrt.pipeline.settings import PipelineConfig  # noqa: E402
from fusionrt.pipeline.swapper import FaceSwapper  # noqa: E402


def _open(graph: bool, source) -> FaceSwapper:
    sw = FaceSwapper.open(PipelineConfig(swapper="inswapper_128", device="cuda",
                                         kernels="device", allow_synthetic=True, gen_batch=1,
                                         frame_graph=graph))
    sw.set_source(source)
    return sw


def _yuv(img: np.ndarray):
    t = torch.from_numpy(np.array(img))[None].cuda()
    return gf.bgr_to_yuv420(gf.hwc_to_nchw(t))


def test_replays_match_the_per_stage_path(synthetic_home, astronaut, grace):
    h, w = 512, 512
    frames = [astronaut[:h, :w], grace[:h, :w], np.full((h, w, 3), 90, np.uint8)]
    graphed, staged = _open(True, astronaut), _open(False, astronaut)
    try:
        assert graphed.plan.frame_graph, graphed.plan.frame_graph_why
        assert not staged.plan.frame_graph
        graphed.warmup(1, h, w)
        for i in range(30):
            if i == 20:  # a new source: copied into the captured graph's latent
                graphed.set_source(grace[:h, :w].copy())
                staged.set_source(grace[:h, :w].copy())
            img = frames[i % 3]
            a, b = _yuv(img), _yuv(img)
            na = graphed.process(a, "yuv420p", h, w)
            nb = staged.process(b, "yuv420p", h, w)
            torch.cuda.synchronize()
            assert na == nb
            diff = (a.int() - b.int()).abs()
            assert diff.max().item() <= 2, i
            assert (diff > 0).float().mean().item() < 0.01, i
        assert graphed.kernels.frame_graph_captured() is True
    finally:
        graphed.close()
        staged.close()
