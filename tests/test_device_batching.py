"""Few shapes per engine (``device.batching``), the paste's windows (``device.paste``), and the
mask blur that no longer depends on the face count."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from fusionrt.errors import InputError  # noqa: E402
from fusionrt.pipeline.device.batching import StaticBatches  # noqa: E402
from fusionrt.pipeline.device.paste import paste_boxes, paste_faces  # noqa: E402
from fusionrt.pipeline.device.warp import sampling_theta, slot_layout  # noqa: E402

RNG = np.random.default_rng(19)


class _Out:
    def __init__(self, name):
        self.name = name


class FakeEngine:
    """Doubles ``x``, adds ``b`` (a fixed input); records each call's batch."""

    def __init__(self, graphs: bool = True, max_batch=None):
        self.config = type("C", (), {"options": {"cuda_graph": graphs}})()
        self.max_batch = max_batch
        self.outputs = [_Out("y")]
        self.calls: list[int] = []

    def run(self, feeds):
        self.calls.append(int(feeds["x"].shape[0]))
        assert feeds["x"].is_contiguous()
        return {"y": feeds["x"] * 2 + feeds.get("b", 0)}


def test_padded_sizes_are_few_and_waste_under_a_step():
    sb = StaticBatches(FakeEngine(), 32, "cuda")  # padding is decided, not run, on "cuda"
    assert sb.sizes() == [8, 16, 24, 32]
    assert [sb.padded(k) for k in (1, 8, 9, 22, 32)] == [8, 8, 16, 24, 32]
    assert StaticBatches(FakeEngine(), 1, "cuda").sizes() == [1]  # live: a lone face, no pad
    assert StaticBatches(FakeEngine(), 5, "cuda").sizes() == [5]  # step capped at the batch


def test_run_chunks_pads_and_drops_the_padding():
    eng = FakeEngine()
    sb = StaticBatches(eng, 16, "cuda")
    x = torch.arange(37 * 2, dtype=torch.float32).view(37, 2)
    y = sb.run({"x": x}, {"b": torch.tensor(1.0)})
    assert eng.calls == [16, 16, 8]  # 16 + 16 + 5 padded to 8
    assert torch.equal(y, x * 2 + 1) and y.dtype == torch.float32


def test_run_without_graphs_or_on_cpu_sends_crops_as_they_come():
    for eng, dev in ((FakeEngine(graphs=False), "cuda"), (FakeEngine(), "cpu")):
        y = StaticBatches(eng, 16, dev).run({"x": torch.ones(21, 3)})
        assert eng.calls == [16, 5] and y.shape == (21, 3)


def test_engine_fixed_batch_caps_the_chunk():
    eng = FakeEngine(max_batch=4)
    sb = StaticBatches(eng, 32, "cuda")
    sb.run({"x": torch.ones(10, 1)})
    assert sb.chunk == 4 and eng.calls == [4, 4, 4]


@pytest.mark.parametrize("bad", [{"batch": 0}, {"batch": 4, "step": 0}])
def test_bad_batch_is_refused(bad):
    with pytest.raises(InputError):
        StaticBatches(FakeEngine(), device="cpu", **bad)


def test_no_crops_is_refused():
    with pytest.raises(InputError, match="0 crops"):
        StaticBatches(FakeEngine(), 8, "cpu").run({"x": torch.ones(0, 3)})


# -- the paste's windows --------------------------------------------------------------------------

def _full_frame_paste(frames, crops, matrices, frame_idx, mask):
    """The paste before windows: every face sampled over the whole frame."""
    n, _, h, w = frames.shape
    k, size = crops.shape[0], crops.shape[-1]
    union = frames.new_zeros((n, 1, h, w))
    theta = sampling_theta(matrices.to(torch.float64), (size, size), (h, w))
    m = mask[:, None]
    slots, n_slots = slot_layout(frame_idx)
    for s in range(n_slots):
        sel = [i for i in range(k) if slots[i] == s]
        fi = torch.tensor([frame_idx[i] for i in sel])
        grid = F.affine_grid(theta[sel], [len(sel), 1, h, w], align_corners=False)
        face = F.grid_sample(crops[sel], grid, padding_mode="border", align_corners=False)
        a = F.grid_sample(m[sel], grid, padding_mode="zeros", align_corners=False).clamp(0, 1)
        base = frames[fi]
        frames[fi] = torch.round(face * a + base * (1 - a)).clamp(0, 255)
        union[fi] = torch.maximum(union[fi], a)
    return union


def _faces(size=32):
    """Faces inside, across the edges of and overlapping in 64x96 frames (frame→crop maps)."""
    def m(scale, angle, cx, cy):
        c, s = np.cos(angle) * scale, np.sin(angle) * scale
        a = np.array([[c, -s], [s, c]])
        t = np.array([size / 2, size / 2]) - a @ np.array([cx, cy])
        return np.hstack([a, t[:, None]])
    mats = np.stack([m(1.2, 0.3, 30, 20), m(0.9, -0.5, 40, 28),  # frame 0: two, overlapping
                     m(1.5, 0.0, 2, 60),                          # frame 1: off the left/bottom
                     m(0.7, 1.2, 90, 5)])                         # frame 2: off the right/top
    return torch.from_numpy(mats), [0, 0, 1, 2]


def test_windowed_paste_equals_the_full_frame_paste():
    mats, idx = _faces()
    frames = torch.from_numpy(RNG.integers(0, 256, (3, 3, 64, 96)).astype(np.float32))
    crops = torch.from_numpy(RNG.integers(0, 256, (4, 3, 32, 32)).astype(np.float32))
    mask = torch.from_numpy(RNG.random((4, 32, 32)).astype(np.float32))
    got, want = frames.clone(), frames.clone()
    union = paste_faces(got, crops, mats, idx, mask)
    want_union = _full_frame_paste(want, crops, mats, idx, mask)
    d = (got - want).abs()
    assert d.max() <= 1 and (d > 0).float().mean() < 1e-3  # grid rounding, at most one level
    assert (union - want_union).abs().max() < 1e-4
    assert not torch.equal(got, frames)


def test_boxes_hold_every_pasted_pixel():
    mats, idx = _faces()
    frames = torch.zeros((3, 3, 64, 96))
    union = _full_frame_paste(frames, torch.ones(4, 3, 32, 32) * 9, mats, idx,
                              torch.ones(4, 32, 32))
    boxes = paste_boxes(mats, 32, 64, 96)
    assert boxes.dtype == np.int64 and boxes.shape == (4, 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 64).all()
    for f in range(3):
        inside = torch.zeros(64, 96, dtype=torch.bool)
        for (x0, y0, x1, y1), i in zip(boxes, idx):
            if i == f:
                inside[y0:y1, x0:x1] = True
        assert union[f, 0][~inside].abs().max() == 0


def test_host_boxes_equal_the_computed_ones():
    mats, idx = _faces()
    frames = torch.from_numpy(RNG.integers(0, 256, (3, 3, 64, 96)).astype(np.float32))
    crops = torch.from_numpy(RNG.integers(0, 256, (4, 3, 32, 32)).astype(np.float32))
    a, b = frames.clone(), frames.clone()
    paste_faces(a, crops, mats, idx, torch.ones(32, 32))
    paste_faces(b, crops, mats, idx, torch.ones(32, 32), boxes=paste_boxes(mats.numpy(), 32, 64, 96))
    assert torch.equal(a, b)


def test_degenerate_matrix_gets_the_whole_frame():
    boxes = paste_boxes(np.zeros((1, 2, 3)), 32, 64, 96)
    assert boxes.tolist() == [[0, 0, 96, 64]]
