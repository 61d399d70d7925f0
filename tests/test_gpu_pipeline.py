"""The GPU video path, run on CPU torch: tensor stages against the CPU path's functions, the
device kernel set against the host kernel set through ``FaceSwapper`` (stated tolerances), and
the overlapped runner's batching, ordering, bounded queues, shutdown and error handling on real
clips.

Tolerances (measured here, CPU torch vs numpy/OpenCV): crops max 1 level; paste max 2; a whole
swapped frame PSNR >= 50 dB and max |diff| <= 10 (the generator amplifies 1-level input
differences); yuv420p conversions within 4 levels of swscale. GPU parity and speed are measured
on the device by benchmarks/scripts/gpu_video_bench.py.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fusionrt.errors import InputError, ModelError, NoFaceError  # noqa: E402
from fusionrt.pipeline.host.align import estimate_similarity, get_template, warp_face  # noqa: E402
from fusionrt.pipeline.device import frames as gf  # noqa: E402
from fusionrt.pipeline.device import detect as detect_gpu  # noqa: E402
from fusionrt.pipeline.device.paste import bgr_to_lab, paste_faces  # noqa: E402
from fusionrt.pipeline.video.loop import VideoConfig, run_batches, transcode  # noqa: E402
from fusionrt.pipeline.device.stage import DeviceFrameStage  # noqa: E402
from fusionrt.pipeline.settings import PipelineConfig  # noqa: E402
from fusionrt.pipeline.swapper import FaceSwapper  # noqa: E402
from fusionrt.pipeline.track import LandmarkTracker  # noqa: E402
from fusionrt.pipeline.device.warp import crop_faces, similarity_batch  # noqa: E402
from fusionrt.pipeline.host.paste import box_mask, paste_back  # noqa: E402
from fusionrt.pipeline.types import Face  # noqa: E402
from fusionrt.pipeline.video.io import iter_frames, probe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZE, FPS, SECONDS = (320, 240), 25, 1.2
N = round(FPS * SECONDS)
DET = 320  # detector input: the clip fits without resampling, and it is 4x cheaper than 640


def _maker():
    from videos import make_test_video  # tests/videos.py
    return make_test_video


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    return _maker()(tmp_path_factory.mktemp("gpu_clips") / "clip.mp4", SECONDS, FPS, SIZE)


@pytest.fixture(scope="session")
def clip_frames(clip) -> list[np.ndarray]:
    return list(iter_frames(clip))


def _cfg(**kw) -> PipelineConfig:
    """The device kernel set (the GPU path) on CPU torch."""
    base = dict(swapper="inswapper_128", device="cpu", kernels="device", allow_synthetic=True,
                det_size=DET)
    return PipelineConfig(**{**base, **kw})


def _gpu(config: PipelineConfig) -> FaceSwapper:
    return FaceSwapper.open(config)


def _cpu(**kw) -> FaceSwapper:
    base = dict(swapper="inswapper_128", allow_synthetic=True, det_size=DET, kernels="host")
    return FaceSwapper.open(PipelineConfig(**{**base, **kw}))


@pytest.fixture
def swapper(synthetic_home, astronaut):
    with _gpu(_cfg()) as s:
        s.set_source(astronaut)
        yield s


def _psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))


def _no_threads() -> bool:
    return not any(t.name.startswith("fusionrt-") and t.is_alive() for t in threading.enumerate())


def _nchw(img: np.ndarray):
    return gf.hwc_to_nchw(torch.from_numpy(np.ascontiguousarray(img))[None])


# ---- tensor stages against the CPU path's functions -----------------------------------------

def test_similarity_batch_equals_umeyama():
    rng = np.random.default_rng(0)
    dst = get_template("arcface_128").at(128)
    src = dst[None] * rng.uniform(0.5, 3, (8, 1, 1)) + rng.normal(0, 4, (8, 5, 2)) + 100
    got = similarity_batch(torch.tensor(src), torch.tensor(dst)).numpy()
    want = np.stack([estimate_similarity(s, dst) for s in src])
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_crops_and_paste_match_opencv(astronaut):
    rng = np.random.default_rng(1)
    lms = [np.array([[190, 210], [270, 205], [235, 260], [200, 300], [265, 300]], float)
           + rng.normal(0, 3, (5, 2)) + off for off in ((0, 0), (-120, -100), (60, 40))]
    mats = np.stack([warp_face(astronaut, lm, "arcface_128", 128)[1] for lm in lms])
    frames = torch.cat([_nchw(astronaut), _nchw(astronaut[::-1].copy())])
    idx = [0, 0, 1]  # two faces in frame 0 (slots 0 and 1), one in frame 1
    crops = crop_faces(frames, idx, torch.tensor(mats), 128)
    for k, i in enumerate(idx):
        want = cv2.warpAffine(frames[i].permute(1, 2, 0).numpy().astype(np.uint8), mats[k],
                              (128, 128), flags=cv2.INTER_LINEAR, borderValue=0)
        d = np.abs(crops[k].permute(1, 2, 0).numpy() - want)
        assert d.max() <= 1 and d.mean() < 0.01
    gen = 255.0 - crops
    out = frames.clone()
    union = paste_faces(out, gen, torch.tensor(mats), idx, torch.from_numpy(box_mask(128, 0.1)))
    for i in (0, 1):
        want = frames[i].permute(1, 2, 0).numpy().astype(np.uint8)
        for k in [k for k, f in enumerate(idx) if f == i]:
            g = gen[k].permute(1, 2, 0).numpy().astype(np.uint8)
            want = paste_back(want, g, mats[k], feather=0.1)
        got = out[i].permute(1, 2, 0).numpy()
        assert np.abs(got - want).max() <= 2
        untouched = (union[i, 0] == 0).numpy()
        assert np.array_equal(got[untouched], frames[i].permute(1, 2, 0).numpy()[untouched])


def test_lab_matches_opencv(astronaut):
    got = bgr_to_lab(_nchw(astronaut))[0].permute(1, 2, 0).numpy()
    d = np.abs(got - cv2.cvtColor(astronaut, cv2.COLOR_BGR2LAB).astype(float))
    assert d.mean() < 0.5 and d.max() <= 3


def test_yuv420_matches_swscale_and_plane_copy(clip):
    with av.open(str(clip)) as c:
        frame = next(c.decode(video=0))
        yuv = frame.to_ndarray()
        host = np.empty_like(yuv)
        gf.copy_video_frame(frame, host)  # planes have line padding here (line_size > width)
        assert frame.planes[0].line_size != frame.width and np.array_equal(host, yuv)
        bgr_sws = frame.to_ndarray(format="bgr24")
    h, w = bgr_sws.shape[:2]
    bgr = gf.yuv420_to_bgr(torch.from_numpy(yuv)[None], h, w)[0].permute(1, 2, 0).numpy()
    d = np.abs(bgr - bgr_sws)
    assert d.mean() < 1.5 and d.max() <= 4
    back = gf.bgr_to_yuv420(_nchw(bgr_sws))[0].numpy().astype(int)
    sws = av.VideoFrame.from_ndarray(bgr_sws, format="bgr24").reformat(format="yuv420p")
    assert np.abs(back - sws.to_ndarray().astype(int)).max() <= 2


def test_torch_nms_matches_opencv():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 200, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 60, (300, 2))], 1).astype(np.float32)
    scores = rng.uniform(0.5, 1, 300).astype(np.float32)
    keep = detect_gpu.nms(torch.tensor(boxes), torch.tensor(scores), 0.4).numpy()
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    want = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.5, 0.4)).reshape(-1)
    assert sorted(keep.tolist()) == sorted(want.tolist())
    same = torch.tensor(np.concatenate([boxes[:2], boxes[:2]]))  # same boxes in two frames
    kept = detect_gpu.batched_nms(same, torch.tensor([0.9, 0.8, 0.9, 0.8]),
                                  torch.tensor([0, 0, 1, 1]), 0.4)
    assert len(kept) == 2 * len(detect_gpu.nms(same[:2], torch.tensor([0.9, 0.8]), 0.4))


@pytest.mark.parametrize("size", [(512, 512), (1280, 1280)])  # up- and down-scaling letterbox
def test_gpu_detector_matches_cpu_detector(detector, astronaut, size):
    img = cv2.resize(astronaut, size, interpolation=cv2.INTER_LINEAR)
    want = detector.detect(img)
    from fusionrt.pipeline.device.frames import Device
    gpu = detect_gpu.GpuDetector(detector.engine, Device("cpu"), input_size=640)
    got = gpu.detect(torch.cat([_nchw(img), _nchw(img)])).faces(2)
    assert len(got[0]) == len(got[1]) == len(want) >= 1
    for g, w in zip(got[0], want):
        scale = size[0] / 512
        assert np.abs(g.box - w.box).max() < 2 * scale
        assert np.abs(g.landmarks - w.landmarks).max() < 2 * scale
        assert abs(g.score - w.score) < 0.02


def test_tracker_smooths_and_holds():
    f = lambda x, lm: Face(np.array([x, 0, x + 100, 100], np.float32), 0.9,  # noqa: E731
                           np.full((5, 2), lm, np.float32))
    t = LandmarkTracker(smoothing=0.5)
    assert t.update([f(0, 10.0)])[0].landmarks[0, 0] == 10.0  # first sighting: as detected
    moved = t.update([f(10, 20.0), f(500, 1.0)])
    assert moved[0].landmarks[0, 0] == pytest.approx(15.0) and moved[1].landmarks[0, 0] == 1.0
    assert [x.landmarks[0, 0] for x in t.current()] == [15.0, 1.0]
    with pytest.raises(ValueError, match="smoothing"):
        LandmarkTracker(smoothing=1.0)


# ---- the device kernels against the host kernels -----------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("color", [False, True])
def test_batch_parity_with_cpu_path(synthetic_home, astronaut, clip_frames, color):
    idx = [0, 10, 20, 29]  # both photos of the clip
    batch = torch.from_numpy(np.stack([clip_frames[i] for i in idx]))
    with _gpu(_cfg(color_transfer=color)) as s, _cpu(color_transfer=color) as cpu:
        s.set_source(astronaut)
        counts = s.process(batch, "bgr", SIZE[1], SIZE[0])
        cpu.set_source(astronaut)
        for k, i in enumerate(idx):
            want, n = cpu.process_frame(clip_frames[i])
            assert counts[k] == n == 1
            got = batch[k].numpy()
            assert _psnr(got, want) >= 50 and np.abs(got.astype(int) - want).max() <= 10
    assert s.describe()["swap"].startswith("inswapper_128 (SYNTHETIC weights) on ort-cpu")


def test_yuv_batch_keeps_faceless_frames_and_untouched_pixels(swapper, clip_frames):
    grey = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
    frames = [clip_frames[0], grey, clip_frames[29]]
    yuv = gf.bgr_to_yuv420(torch.cat([_nchw(f) for f in frames]))
    before = yuv.clone()
    assert swapper.process(yuv, "yuv420p", SIZE[1], SIZE[0]) == [1, 0, 1]
    assert torch.equal(yuv[1], before[1])  # no face: bytes pass through
    changed = (yuv != before).float().mean(dim=(1, 2))
    assert 0 < changed[0] < 0.5 and 0 < changed[2] < 0.5  # only the face region changed


def test_many_faces_and_reference_selection(synthetic_home, astronaut, grace):
    canvas = np.zeros((600, 1024, 3), np.uint8)
    canvas[:512, :512], canvas[:600, 512:1024] = astronaut, grace
    with _cpu(select="all", det_size=640) as cpu:
        cpu.set_source(astronaut)
        want_all, n_all = cpu.process_frame(canvas)
        embs = [f.embedding for f in cpu.kernels.embedder.embed(canvas, cpu.kernels.detector.detect(canvas))]
        ref = cpu.kernels.embedder.embed(grace, [max(cpu.kernels.detector.detect(grace),
                                                     key=lambda f: f.area)])
    sims = sorted(float(e @ ref[0].embedding) for e in embs)
    threshold = (sims[0] + sims[1]) / 2  # between the two faces: the grace face only
    with _gpu(_cfg(select="all", det_size=640)) as s:
        s.set_source(astronaut)
        batch = torch.from_numpy(canvas.copy())[None]
        assert s.process(batch, "bgr", 600, 1024) == [n_all] == [2]
        assert _psnr(batch[0].numpy(), want_all) >= 45
    with _gpu(_cfg(select="reference", det_size=640, similarity_threshold=threshold)) as s:
        s.set_source(astronaut)
        s.set_reference(grace)
        batch = torch.from_numpy(canvas.copy())[None]
        assert s.process(batch, "bgr", 600, 1024) == [1]
        out = batch[0].numpy()
        assert np.array_equal(out[:, :480], canvas[:, :480])  # the astronaut is left alone
        assert not np.array_equal(out[:, 560:], canvas[:, 560:])


def test_detect_every_n_reuses_landmarks(synthetic_home, astronaut, clip_frames):
    with _gpu(_cfg(detect_every=3)) as s:
        s.set_source(astronaut)
        calls = []
        real = s.kernels.detector.run_net
        s.kernels.detector.run_net = lambda x: calls.append(x.shape[0]) or real(x)
        for start in (0, 4):
            batch = torch.from_numpy(np.stack(clip_frames[start:start + 4]))
            assert s.process(batch, "bgr", SIZE[1], SIZE[0]) == [1, 1, 1, 1]
        assert calls == [2, 1]  # frames 0 and 3, then frame 6


def test_bad_settings_and_inputs(synthetic_home, astronaut, swapper):
    with pytest.raises(InputError, match=r"selection 'nearest' \| unknown"):
        _gpu(_cfg(select="nearest"))
    with pytest.raises(ModelError, match=r"swapper 'classic' \| not available on the GPU path"):
        _gpu(_cfg(swapper="classic"))
    with pytest.raises(NoFaceError, match="no face in the source image 'grey.png'"):
        swapper.set_source(np.full((200, 200, 3), 90, np.uint8), "grey.png")
    with _gpu(_cfg()) as fresh, pytest.raises(InputError, match="no source identity"):
        fresh.process(torch.zeros((1, 240, 320, 3), dtype=torch.uint8), "bgr", 240, 320)
    with pytest.raises(ValueError, match="odd side"):
        gf.frame_shape("yuv420p", 241, 320)


# ---- the overlapped runner ---------------------------------------------------------------------

class FakeSwapper:
    """Inverts the frames; records batch sizes; optionally fails or dawdles."""

    def __init__(self, fail_at: int | None = None, delay: float = 0.0):
        self.dev, self.compute = gf.Device("cpu"), None
        self.batches: list[int] = []
        self.fail_at, self.delay = fail_at, delay

    def process(self, batch, fmt, height, width):
        self.batches.append(batch.shape[0])
        if len(self.batches) == self.fail_at:
            raise RuntimeError("generator exploded")
        time.sleep(self.delay)
        batch.copy_(255 - batch)
        return [1] * batch.shape[0]


def test_runner_batches_in_order_with_bounded_queues():
    frames = [np.full((4, 4, 3), i % 256, np.uint8) for i in range(203)]
    pulled, got = [], []

    def source():
        for i, f in enumerate(frames):
            pulled.append(i)
            yield f, i * 10

    def emit(frame, pts):
        if not got:
            emit.ahead = len(pulled)
        time.sleep(0.002)
        got.append((int(frame[0, 0, 0]), pts))
        return True

    from fusionrt.pipeline.device.timing import Waits
    waits, fake = Waits(), FakeSwapper()
    n, faces = run_batches(source(), DeviceFrameStage(fake, "bgr24"), emit, batch=8,
                           queue_batches=2, waits=waits)
    assert (n, faces) == (203, 203) and fake.batches == [8] * 25 + [3]
    assert got == [(255 - i % 256, i * 10) for i in range(203)]
    assert max(waits.high_water.values()) <= 2
    assert emit.ahead <= 8 * 6  # bounded: 2 queues x 2 batches + those in hand, not all 203
    assert _no_threads()


def test_runner_stops_everything_on_error():
    src = ((np.zeros((4, 4, 3), np.uint8), i) for i in range(1000))
    with pytest.raises(RuntimeError, match="generator exploded"):
        run_batches(src, DeviceFrameStage(FakeSwapper(fail_at=3), "bgr24"), lambda f, p: True,
                    batch=4)
    assert _no_threads()


@pytest.mark.slow
@pytest.mark.parametrize("encoders", [1, 3])
def test_swap_video_end_to_end(synthetic_home, astronaut, clip, clip_frames, tmp_path, encoders):
    out = tmp_path / "out.mp4"
    with _gpu(_cfg()) as s:
        s.set_source(astronaut)
        stats = transcode(clip, out, s.frame_stage(), VideoConfig(batch=4, encoders=encoders,
                                                                 segment_frames=8))
    assert (stats.frames, stats.faces, stats.encoders) == (N, N, encoders)
    assert {"generator", "paste"} <= set(stats.stage_ms)  # the swapper's timer reaches the stats
    src, got = probe(clip), probe(out)
    assert (got.width, got.height, got.fps, got.frames) == (src.width, src.height, src.fps, N)
    assert got.has_audio and abs(got.duration - src.duration) < 0.05
    with av.open(str(out)) as c:
        pk = [p for p in c.demux(c.streams.video[0]) if p.size]
        keys = [i for i, p in enumerate(pk) if p.is_keyframe]
    assert all(a.dts < b.dts for a, b in zip(pk, pk[1:]))
    if encoders > 1:
        assert {0, 8, 16, 24} <= set(keys)  # each segment starts with an IDR frame
    with _cpu() as cpu:  # parity of the decoded output with the CPU path (both re-encoded)
        cpu.set_source(astronaut)
        for i, frame in zip((0, 12, 29), [list(iter_frames(out))[i] for i in (0, 12, 29)]):
            assert _psnr(frame, cpu.process_frame(clip_frames[i])[0]) >= 33
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"] and _no_threads()


def test_bgr_device_stage_through_the_segment_encoders(clip, clip_frames, tmp_path):
    """The loop is the same for either frame format: BGR frames from a device stage go to two
    segment encoders (x264 gets them converted to yuv420p) and come out in order."""
    out = tmp_path / "o.mp4"
    stats = transcode(clip, out, DeviceFrameStage(FakeSwapper(), "bgr24"),
                      VideoConfig(batch=4, encoders=2, segment_frames=8))
    assert (stats.frames, stats.faces_total, stats.encoders) == (N, N, 2)
    got = list(iter_frames(out))
    assert len(got) == N and probe(out).has_audio
    assert all(_psnr(g, 255 - f) > 30 for g, f in zip(got, clip_frames))  # inverted, in order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"] and _no_threads()


def test_swap_video_error_leaves_no_output(clip, tmp_path):
    with pytest.raises(RuntimeError, match="generator exploded"):
        transcode(clip, tmp_path / "o.mp4", DeviceFrameStage(FakeSwapper(fail_at=2)),
                  VideoConfig(batch=4))
    assert list(tmp_path.iterdir()) == [] and _no_threads()


def test_decode_error_mid_video_stops_cleanly(clip, tmp_path):
    whole, bad = tmp_path / "fs.mp4", tmp_path / "cut.mp4"
    with av.open(str(clip)) as i, av.open(str(whole), "w", options={"movflags": "faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if p.dts is not None:
                p.stream = streams[p.stream.index]
                o.mux(p)
    bad.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # frames after the cut gone
    fake = FakeSwapper()
    with pytest.raises(InputError, match=r"video '.*cut.mp4' \| (ends after \d+ of 30 frames|"
                                         r"decode failed after)"):
        transcode(bad, tmp_path / "o.mp4", DeviceFrameStage(fake), VideoConfig(batch=4, encoders=2))
    assert 0 < sum(fake.batches) < N
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "fs.mp4"] and _no_threads()


# ---- the command ---------------------------------------------------------------------------

def _args(*argv) -> argparse.Namespace:
    from fusionrt.cli import build_parser
    return build_parser().parse_args(["swap", *map(str, argv)])


@pytest.mark.slow
def test_run_gpu_video_command(synthetic_home, astronaut_path, clip, tmp_path, capsys):
    from fusionrt.pipeline.commands import run_swap
    out = tmp_path / "o.mp4"
    args = _args("-s", astronaut_path, "-t", clip, "-o", out, "--device", "cpu", "--kernels",
                 "device", "--swapper", "inswapper_128", "--allow-synthetic", "--batch", "8",
                 "--explain")
    assert run_swap(args) == 0
    text = capsys.readouterr().out
    assert f"{N} frames at" in text and f"{N} face(s) swapped" in text and "ms/frame" in text
    assert probe(out).frames == N


def test_run_gpu_video_refuses_bad_flags(astronaut_path, clip, tmp_path):
    from fusionrt.pipeline.commands import run_swap
    base = ("-s", astronaut_path, "-t", clip, "-o", tmp_path / "o.mp4", "--device", "cpu",
            "--kernels", "device")
    with pytest.raises(InputError, match=r"--poisson \| runs on the CPU path only"):
        run_swap(_args(*base, "--poisson"))
    with pytest.raises(InputError, match=r"--batch \| got 0; expected >= 1"):
        run_swap(_args(*base, "--batch", "0"))
    with pytest.raises(InputError, match=r"--detect-every \| got 0"):
        run_swap(_args(*base, "--detect-every", "0"))
    assert list(tmp_path.iterdir()) == []


def test_gpu_defaults_per_stage(synthetic_home, monkeypatch):
    """On CUDA, ``--engine default`` maps each stage to the first usable GPU default: the
    native torch detector; ArcFace on ORT CUDA when onnxruntime-gpu is there, else on torch
    when it has torch weights; the generator on torch when it has torch weights."""
    from fusionrt.engines.onnxruntime import OrtCudaEngine
    from fusionrt.models.store import ModelStore
    from fusionrt.pipeline import plan as planmod
    store = ModelStore()
    det = store.resolve("retinaface_mnet025")
    emb = store.resolve("arcface_w600k_r50", allow_synthetic=True)
    assert det.weights_path is None and emb.weights_path is not None
    monkeypatch.setattr(planmod, "_cuda_devices", lambda: (1, "pretend"))

    def engines(engine: str, device: str = "cuda") -> dict:
        plan = planmod.plan_stages(_cfg(engine=engine, device=device))
        return {k: v.engine for k, v in plan.stages.items()}
    for ort_cuda in (True, False):
        monkeypatch.setattr(OrtCudaEngine, "available", classmethod(lambda c, v=ort_cuda: (v, "")))
        got = engines("default")
        assert got["detect"] == "torch" and got["swap"] == "torch"
        assert got["embed"] == ("ort-cuda" if ort_cuda else "torch")
    assert engines("detect=ort-cuda")["detect"] == "ort-cuda"  # named: as given
    assert engines("default", device="cpu")["detect"] == "ort-cpu"


def test_native_torch_detector_in_the_gpu_path(synthetic_home, astronaut, clip_frames):
    """The detector on the torch engine (native RetinaFace) gives the GPU path the same frames
    as on ONNX Runtime."""
    batch = torch.from_numpy(np.stack(clip_frames[:4]))
    outs = []
    for engine in ("ort-cpu", "detect=torch"):
        with _gpu(_cfg(engine=engine)) as sw:
            sw.set_source(astronaut)
            b = batch.clone()
            counts = sw.process(b, "bgr", *batch.shape[1:3])
            outs.append((counts, b.numpy()))
    assert outs[0][0] == outs[1][0] and sum(outs[0][0]) > 0
    assert np.abs(outs[0][1].astype(int) - outs[1][1]).max() <= 2


@pytest.mark.slow
def test_video_bench_script_dry_run(tmp_path):
    """benchmarks/scripts/gpu_video_bench.py end to end on CPU torch with tiny models: every kind
    of row is produced with a frame rate, so the device runs cannot fail on the script itself."""
    import json
    import os
    import subprocess
    import sys
    env = {**os.environ, "FUSIONRT_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "scripts" / "gpu_video_bench.py"),
           "--device", "cpu", "--model-width", "0.1", "--size", "320x240", "--seconds", "1",
           "--baseline-seconds", "1", "--batch", "4", "--precision", "fp32", "--work",
           str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--results-dir",
           str(tmp_path / "res"), "--e2e", "1:ultrafast,2:ultrafast:none",
           "--extra-precision", "", "--extra-engine", "detect=torch"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "gpu_video.json").read_text())
    names = [r["name"] for r in res["rows"]]
    assert names == ["compute only", "GPU only", "I/O only x264 ultrafast x1",
                     "end to end x264 ultrafast x1", "end to end x264 ultrafast x2, GIL interval None",
                     "baseline FaceFusion-style", "GPU only, engine detect=torch",
                     "end to end x264 ultrafast x1, engine detect=torch"]
    assert all(r["fps"] > 0 and r["frames"] > 0 for r in res["rows"])
    assert res["summary"]["baseline_fps"] > 0 and "detect" in res["engines"]
    assert (tmp_path / "res" / "gpu_video.md").read_text().startswith("# GPU video path")


def test_swap_image(swapper, grace):
    before = grace.copy()
    out, n = swapper.process_frame(grace)
    assert np.array_equal(grace, before)  # the caller's array is left alone
    assert n == 1 and out.shape == grace.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - grace).max() > 30  # a (synthetic) face was pasted
    with pytest.raises(InputError, match="expected uint8"):
        swapper.process_frame(grace.astype(np.float32))
