"""Batch jobs: planning and resumability (no Ray), keyframe segments + stitch (PyAV), and whole
jobs on a local 2-CPU Ray cluster with the CPU ``classic`` swapper: outputs, a corrupt input,
a rerun that skips, and a worker killed mid-job."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from fusionrt.batch.jobs import PARTS_DIR, plan_job, scan_inputs
from fusionrt.batch.segments import cut_segment, plan_segments, scan_keyframes, stitch
from fusionrt.errors import EngineError, FusionError, InputError, OutputError
from fusionrt.pipeline.video.io import probe
from videos import make_test_video  # tests/videos.py

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "examples" / "grace_hopper.jpg"
FPS, SIZE = 10, (320, 240)


def _make_video(out: Path, seconds: float, audio: bool = True) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return make_test_video(out, seconds, FPS, SIZE, audio=audio)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Five short clips (one 4 s with a keyframe at 2 s: the scene change), one photo, and two
    corrupt files: one unreadable at planning, one only when a worker opens it."""
    d = tmp_path_factory.mktemp("clips")
    for i in range(4):
        _make_video(d / f"clip{i}.mp4", 1.0, audio=i % 2 == 0)
    _make_video(d / "long" / "talk.mp4", 4.0)
    shutil.copy(ROOT / "examples" / "astronaut.png", d / "photo.png")
    (d / "broken.mp4").write_bytes(b"\x00not a video" * 64)
    (d / "broken.png").write_bytes(b"\x89PNG not really" * 16)
    return d


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def _audio_bytes(path: Path) -> bytes:
    with av.open(str(path)) as c:
        return b"".join(bytes(p) for p in c.demux(audio=0) if p.size) if c.streams.audio else b""


# -- planning (no Ray) ---------------------------------------------------------
def test_plan_directory_mirrors_names_and_skips_finished(clips, tmp_path):
    out = tmp_path / "out"
    plans = {p.id: p for p in plan_job(clips, out, segment_seconds=1.0)}
    assert set(plans) == {"clip0.mp4", "clip1.mp4", "clip2.mp4", "clip3.mp4", "long/talk.mp4",
                          "photo.png", "broken.mp4", "broken.png"}
    assert plans["broken.mp4"].status == "failed" and "cannot be opened" in plans["broken.mp4"].error
    talk = plans["long/talk.mp4"]
    assert [i.kind for i in talk.items] == ["segment", "segment"] and talk.stitch.frames == 40
    assert [i.segment.frames for i in talk.items] == [20, 20]
    assert plans["clip0.mp4"].items[0].kind == "video" and plans["clip0.mp4"].frames == 10
    (out).mkdir()
    (out / "clip0.mp4").write_bytes(b"done")  # outputs exist only when complete
    part = Path(talk.items[0].dst)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"done")
    again = {p.id: p for p in plan_job(clips, out, segment_seconds=1.0)}
    assert again["clip0.mp4"].status == "skipped" and not again["clip0.mp4"].items
    assert again["long/talk.mp4"].segments_skipped == 1
    assert [i.id for i in again["long/talk.mp4"].items] == ["long/talk.mp4#0001"]


def test_manifest_relative_paths_and_comments(clips, tmp_path):
    m = tmp_path / "list.txt"
    m.write_text(f"# two clips\n{os.path.relpath(clips / 'clip0.mp4', tmp_path)}\n\n"
                 f"{clips / 'long' / 'talk.mp4'}\n")
    root, files = scan_inputs(m)
    assert files == [(clips / "clip0.mp4").resolve(), clips / "long" / "talk.mp4"]
    names = sorted(Path(p.dst).name for p in plan_job(m, tmp_path / "o"))
    assert names == ["clip0.mp4", "talk.mp4"]


def test_manifest_duplicate_output_names(clips, tmp_path):
    (tmp_path / "a").mkdir()
    shutil.copy(clips / "clip0.mp4", tmp_path / "a" / "talk.mp4")
    (tmp_path / "m").mkdir()
    m = tmp_path / "m" / "list.txt"  # both entries outside its folder: both map to talk.mp4
    m.write_text(f"{clips / 'long' / 'talk.mp4'}\n{tmp_path / 'a' / 'talk.mp4'}\n")
    with pytest.raises(OutputError, match="would write it; expected distinct names"):
        plan_job(m, tmp_path / "o")


def test_inputs_missing(tmp_path):
    with pytest.raises(InputError, match="not found; expected a folder or a manifest"):
        plan_job(tmp_path / "nope", tmp_path / "o")


def test_inputs_folder_without_media(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "in").mkdir()
    with pytest.raises(InputError, match="no images or videos found"):
        plan_job(tmp_path / "in", tmp_path / "o")


def test_output_folder_is_input_folder(clips):
    with pytest.raises(OutputError, match="is the input folder"):
        plan_job(clips, clips)


def test_ray_missing_names_the_extra(monkeypatch):
    from fusionrt.batch.workers import import_ray
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EngineError, match=r"pip install 'fusionrt\[ray\]'"):
        import_ray()


def test_worker_count_checks_the_cluster():
    from fusionrt.batch.runner import BatchConfig, worker_count
    res = {"CPU": 2.0}
    assert worker_count(BatchConfig("s"), res, items=10) == 2
    assert worker_count(BatchConfig("s"), res, items=1) == 1  # no idle warm workers
    assert worker_count(BatchConfig("s", gpus_per_worker=0.5), {"CPU": 8, "GPU": 2}, 10) == 4
    with pytest.raises(EngineError, match="has 0 GPUs; expected at least 1"):
        worker_count(BatchConfig("s", gpus_per_worker=1), res, 10)
    with pytest.raises(InputError, match="--workers 3 | needs 3 CPUs"):
        worker_count(BatchConfig("s", workers=3), res, 10)


def test_cli_rejects_zero_workers(tmp_path):
    from fusionrt.batch.commands import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["batch", "-s", str(SOURCE), "-i", str(tmp_path), "-o",
                              str(tmp_path / "o"), "--workers", "0"])
    with pytest.raises(InputError, match="--workers 0 | expected >= 1"):
        args.func(args)


# -- segments (PyAV, no Ray) -----------------------------------------------------
@pytest.mark.slow
def test_segments_stitch_equals_whole_video(clips, tmp_path):
    from fusionrt.pipeline.settings import PipelineConfig
    from fusionrt.pipeline.swapper import FaceSwapper
    from fusionrt.pipeline.video.io import process_video
    src = clips / "long" / "talk.mp4"
    keys = scan_keyframes(src)
    segs = plan_segments(keys, 1.0)
    assert keys.packets == 40 and [s.start for s in segs] == [0, 20]
    with FaceSwapper.open(PipelineConfig(swapper="classic", det_size=320)) as pipe:
        pipe.set_source(cv2.imread(str(SOURCE)))
        parts = []
        for s in segs:
            cut = cut_segment(src, s, tmp_path / f"cut{s.index}.mp4")
            parts.append(tmp_path / f"seg{s.index}.mp4")
            assert process_video(cut, parts[-1], pipe.process_frame, progress=False).frames == 20
        process_video(src, tmp_path / "whole.mp4", pipe.process_frame, progress=False)
    assert stitch(parts, src, tmp_path / "st.mp4", expected_frames=40) == 40
    info, ref = probe(tmp_path / "st.mp4"), probe(src)
    assert (info.frames, info.fps, info.has_audio) == (40, ref.fps, True)
    assert abs(info.duration - ref.duration) < 0.05
    assert _audio_bytes(tmp_path / "st.mp4") == _audio_bytes(src)  # audio copied, not re-encoded
    got, want = _frames(tmp_path / "st.mp4"), _frames(tmp_path / "whole.mp4")
    assert min(cv2.PSNR(a, b) for a, b in zip(got, want)) > 30  # same frames, same order
    with pytest.raises(OutputError, match="segments hold 40 frames, the source 41"):
        stitch(parts, src, tmp_path / "bad.mp4", expected_frames=41)
    assert not list(tmp_path.glob("*bad*"))


# -- whole jobs on a local Ray cluster ------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from fusionrt.batch.runner import BatchConfig, connect
    env = {"RAY_AUTH_MODE": "disabled",  # local test cluster: no token file in the home
           # the CI machine is shared: other processes' memory must not make Ray's OOM killer
           # kill our workers (the kill test kills one on purpose, and only that one)
           "RAY_memory_monitor_refresh_ms": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    temp = Path(f"/tmp/frt-ray-{os.getpid()}")  # short: Ray's socket paths have a length limit
    started = connect(BatchConfig("", ray_init={"num_cpus": 2, "_temp_dir": str(temp)}))
    yield ray
    if started:
        ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _check_outputs(clips: Path, out: Path) -> None:
    for src in [*clips.glob("clip*.mp4"), clips / "long" / "talk.mp4"]:
        dst = out / src.relative_to(clips)
        got, ref = probe(dst), probe(src)
        assert (got.frames, got.width, got.has_audio) == (ref.frames, ref.width, ref.has_audio), dst
    assert cv2.imread(str(out / "photo.png")).shape == (512, 512, 3)
    assert not [p for p in out.rglob(".*") if p.is_file()], "temp files left behind"
    assert not (out / PARTS_DIR).exists()


@pytest.mark.slow
def test_cli_job_corrupt_inputs_and_rerun_skips(ray_cluster, clips, tmp_path, capsys):
    from fusionrt.batch.commands import register
    out = tmp_path / "out"
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    argv = ["batch", "-s", str(SOURCE), "-i", str(clips), "-o", str(out), "--workers", "2",
            "--swapper", "classic", "--det-size", "320", "--segment-seconds", "1", "--no-progress"]
    args = parser.parse_args(argv)
    assert args.func(args) == 1  # two inputs failed
    _check_outputs(clips, out)
    rep = json.loads((out / "batch_report.json").read_text())
    assert rep["summary"] == {**rep["summary"], "inputs": 8, "done": 6, "skipped": 0, "failed": 2,
                              "frames": 4 * 10 + 40 + 1, "worker_restarts": 0}
    items = {i["id"]: i for i in rep["items"]}
    assert "cannot be opened" in items["broken.mp4"]["error"]
    assert "not a decodable image" in items["broken.png"]["error"]
    assert items["broken.png"]["attempts"] == 1  # a corrupt file is not retried
    assert items["long/talk.mp4"]["segments"] == 2 and items["long/talk.mp4"]["frames"] == 40
    assert len(rep["workers"]) == 2 and sum(w["frames"] for w in rep["workers"]) == 81
    assert "| broken.png | 1 |" in (out / "batch_report.md").read_text()

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    args = parser.parse_args(argv + ["--report", str(tmp_path / "again.json")])
    assert args.func(args) == 1
    rep = json.loads((tmp_path / "again.json").read_text())["summary"]
    assert (rep["done"], rep["skipped"], rep["failed"], rep["frames"]) == (0, 6, 2, 0)
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    assert "skipped 6, failed 2" in capsys.readouterr().out


@pytest.mark.slow
def test_killed_worker_items_go_to_a_replacement(ray_cluster, clips, tmp_path):
    from fusionrt.batch.runner import BatchConfig, run_batch
    from fusionrt.pipeline.settings import PipelineConfig
    out = tmp_path / "out"
    plans = plan_job(clips, out, segment_seconds=1.0)
    killed: list[str] = []

    def kill_first_finisher(event, item, result):
        if event == "done" and not killed:  # it holds its next queued item: that one is lost
            killed.append(result["worker"])
            ray_cluster.kill(ray_cluster.get_actor(result["worker"]))

    cfg = BatchConfig(str(SOURCE), PipelineConfig(swapper="classic", det_size=320), workers=2)
    report = run_batch(cfg, plans, kill_first_finisher)
    assert report.restarts == 1
    dead = [w for w in report.workers if w.died]
    assert [w.name for w in dead] == killed and len(report.workers) == 3
    retried = [i for i in report.items if i.attempts >= 2]
    assert retried and all(i.status == "done" and set(i.workers) - set(killed) for i in retried)
    assert (report.count("done"), report.count("failed")) == (6, 2)
    _check_outputs(clips, out)


@pytest.mark.slow
def test_source_without_a_face_stops_before_any_output(ray_cluster, clips, tmp_path):
    from fusionrt.batch.runner import BatchConfig, run_batch
    from fusionrt.errors import NoFaceError
    from fusionrt.pipeline.settings import PipelineConfig
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 128, np.uint8))
    cfg = BatchConfig(str(blank), PipelineConfig(swapper="classic", det_size=320), workers=1)
    with pytest.raises(NoFaceError, match="no face in the source image"):
        run_batch(cfg, plan_job(clips, tmp_path / "out"))
    assert not list((tmp_path / "out").rglob("*.*"))


@pytest.mark.slow
def test_gpu_path_workers(ray_cluster, clips, synthetic_home, tmp_path):
    """Workers on the GPU video path (FaceSwapper on the device kernels + overlapped encode; CPU
    torch here, a GPU on the device): a video, a keyframe-segmented video and a photo come out
    whole, with faces."""
    pytest.importorskip("torch")
    from fusionrt.batch.commands import path_settings
    from fusionrt.batch.runner import BatchConfig, run_batch
    from fusionrt.pipeline.plan import plan_stages
    from fusionrt.pipeline.settings import PipelineConfig
    inputs = tmp_path / "in"
    (inputs / "long").mkdir(parents=True)
    for name in ("clip0.mp4", "long/talk.mp4", "photo.png"):
        shutil.copy(clips / name, inputs / name)
    pipe = PipelineConfig(swapper="inswapper_128", det_size=320, allow_synthetic=True)
    gpu, video = path_settings(pipe, "gpu", batch=4, precision="fp32", preset="ultrafast")
    assert gpu.kernels == "device" and (video.batch, video.preset) == (4, "ultrafast")
    engine = plan_stages(gpu).stages["swap"].engine  # the plan's default on this device
    assert (gpu.device, gpu.det_size, gpu.gen_batch, engine) == ("cpu", 320, 4, "ort-cpu")
    cfg = BatchConfig(str(SOURCE), gpu, workers=2, video=video)
    out = tmp_path / "out"
    report = run_batch(cfg, plan_job(inputs, out, segment_seconds=1.0))
    assert (report.count("done"), report.count("failed")) == (3, 0), \
        [i.error for i in report.items if i.error]
    assert report.settings["path"] == "gpu" and report.settings["gpu"]["gen_batch"] == 4
    for name in ("clip0.mp4", "long/talk.mp4"):
        got, ref = probe(out / name), probe(inputs / name)
        assert (got.frames, got.width, got.has_audio) == (ref.frames, ref.width, ref.has_audio)
    photo = {i.id: i for i in report.items}["photo.png"]
    assert photo.faces == 1
    swapped, original = cv2.imread(str(out / "photo.png")), cv2.imread(str(inputs / "photo.png"))
    assert swapped.shape == original.shape and np.abs(swapped.astype(int) - original).max() > 30
    assert sum(i.faces or 0 for i in report.items if i.id != "photo.png") > 0


def _batch_args(tmp_path, inputs, *extra):
    from fusionrt.batch.commands import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["batch", "-s", str(SOURCE), "-i", str(inputs), "-o",
                              str(tmp_path / "o"), *map(str, extra)])


@pytest.mark.parametrize("extra,message", [
    (("--max-pixels", 1000), "over the limit of 1000"),   # the source, before a cluster starts
    (("--max-pixels", -5), "--max-pixels -5"),
    (("--enhancer", "gfpgan_9"), "gfpgan_9"),
    (("--mask", "box,nose"), "nose"),
    (("--enhancer", "gfpgan_1.4:150"), "out of range"),
])
def test_batch_refuses_bad_limits_and_post_flags_before_a_cluster(tmp_path, clips, extra,
                                                                 message, monkeypatch):
    import fusionrt.batch.runner as runner
    monkeypatch.setattr(runner, "run_batch", lambda *a, **k: pytest.fail("cluster started"))
    args = _batch_args(tmp_path, clips, *extra)
    with pytest.raises(FusionError, match=re.escape(message)):  # one-line errors of the CLI
        args.func(args)


def test_batch_takes_the_post_flags_and_the_limit(tmp_path, clips):
    """``batch`` has swap's enhancer/mask flags and ``--max-pixels``: the workers get them in
    their settings and video config."""
    from fusionrt.batch.commands import path_settings
    from fusionrt.pipeline.options import max_pixels, post_settings
    from fusionrt.pipeline.settings import PipelineConfig
    args = _batch_args(tmp_path, clips, "--enhancer", "gfpgan_1.4:60", "--mask", "box,occlusion",
                       "--max-pixels", 0)
    pipe = PipelineConfig(swapper="inswapper_128", **post_settings(args))
    settings, video = path_settings(pipe, "cpu", limit=max_pixels(args))
    assert settings.enhancer == "gfpgan_1.4" and settings.enhancer_blend == pytest.approx(0.6)
    assert settings.masks == ("box", "occlusion") and video.max_pixels is None  # 0: no limit
    assert path_settings(pipe, "cpu")[1].max_pixels == 50_000_000


def test_gpu_path_needs_a_neural_swapper(tmp_path, clips):
    from fusionrt.batch.commands import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["batch", "-s", str(SOURCE), "-i", str(clips), "-o",
                              str(tmp_path / "o"), "--swapper", "classic", "--path", "gpu"])
    with pytest.raises(InputError, match="--path gpu"):
        args.func(args)


# -- issue 16 item 6: an unusable FUSIONRT_HOME ---------------------------------------------------
# A batch job writes nothing into the home (the built-in detector is read from a private copy,
# caches are skipped when they cannot be written), so it runs read-only: exit 0, no traceback,
# nothing created where the home should be.

def _small_inputs(root: Path) -> Path:
    d = root / "in"
    _make_video(d / "clip.mp4", 0.5, audio=False)
    shutil.copy(ROOT / "examples" / "astronaut.png", d / "photo.png")
    return d


def _batch_argv(inputs: Path, out: Path) -> list[str]:
    return ["batch", "-s", str(SOURCE), "-i", str(inputs), "-o", str(out), "--workers", "1",
            "--swapper", "classic", "--det-size", "320", "--no-progress"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "under_file"])
def test_batch_with_unusable_home_runs_read_only(ray_cluster, tmp_path, monkeypatch, capsys,
                                                 kind):
    from fusionrt.cli import main
    f = tmp_path / "home_is_a_file"
    f.write_text("x")
    monkeypatch.setenv("FUSIONRT_HOME", str(f if kind == "file" else f / "sub"))
    inputs, out = _small_inputs(tmp_path), tmp_path / "out"
    rc = main(_batch_argv(inputs, out))
    stdout, err = capsys.readouterr()
    assert rc == 0, stdout + err
    assert "Traceback" not in err and "done 2, skipped 0, failed 0" in stdout
    assert (out / "clip.mp4").is_file() and (out / "photo.png").is_file()
    assert f.read_text() == "x"  # the file in the home's place is untouched


@pytest.mark.slow
def test_batch_with_read_only_home_runs_read_only(tmp_path):
    """A real read-only folder: as root (which ignores permissions) the command runs without
    CAP_DAC_OVERRIDE, through setpriv; it starts its own Ray cluster."""
    pytest.importorskip("ray")
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.skip("root ignores read-only folders and setpriv (to drop that) is missing")
        caps = "-dac_override,-dac_read_search"
        prefix = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]
    import subprocess
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    inputs, out = _small_inputs(tmp_path), tmp_path / "out"
    env = {**os.environ, "FUSIONRT_HOME": str(home / "sub"), "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        r = subprocess.run([*prefix, sys.executable, "-m", "fusionrt.cli",
                            *_batch_argv(inputs, out), "--num-cpus", "1"],
                           env=env, capture_output=True, text=True, timeout=300)
    finally:
        home.chmod(0o700)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "failed 0" in r.stdout
    assert (out / "clip.mp4").is_file() and not (home / "sub").exists()
