"""``fusionrt live`` (issue 21) on the CPU: a paced file source with --stats, drop-oldest under a
slow stage, a clean stop (stop event, Ctrl-C in the compute thread, SIGTERM to the CLI) that
flushes the output, one-line errors that write nothing, optional sinks, and the GPU benchmark
script's dry run. GPU figures come from benchmarks/scripts/live_bench.py on the device.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fusionrt.cli import main
from fusionrt.errors import EngineError, InputError, OutputError
from fusionrt.live.runner import DropOldest, LiveConfig, run_live
from fusionrt.live.sink import Sink, open_sink
from fusionrt.live.source import Source, parse_input
from fusionrt.live.stage import LiveStage
from fusionrt.pipeline.video.io import iter_frames, probe, to_bgr

ROOT = Path(__file__).resolve().parent.parent
FPS, SIZE = 10, (160, 120)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from videos import make_test_video  # tests/videos.py
    return make_test_video(tmp_path_factory.mktemp("live") / "clip.mp4", 1.5, FPS, SIZE,
                           audio=False)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    from videos import make_test_video
    return make_test_video(tmp_path_factory.mktemp("live") / "long.mp4", 6.0, FPS, SIZE,
                           audio=False)


class SlowStage:
    """A host stage whose compute takes ``delay_s``; ``interrupt_at``: Ctrl-C at that frame."""

    frame_format = "bgr24"

    def __init__(self, delay_s: float = 0.0, interrupt_at: int | None = None):
        self.delay_s, self.interrupt_at, self.n = delay_s, interrupt_at, 0
        self.pts: list[int] = []

    def warmup(self, height, width):
        pass

    def upload(self, frames):
        return [to_bgr(f) if not isinstance(f, np.ndarray) else f for f in frames]

    def compute(self, frames):
        self.n += 1
        if self.interrupt_at is not None and self.n == self.interrupt_at:
            raise KeyboardInterrupt
        time.sleep(self.delay_s)
        return frames, [0]

    def download(self, frames):
        return frames


class Recorder(Sink):
    def __init__(self):
        self.pts: list[int] = []

    def write(self, frame, pts):
        self.pts.append(pts)
        return True


def _no_live_threads() -> bool:
    return not any(t.name.startswith("fusionrt-live") and t.is_alive()
                   for t in threading.enumerate())


# -- the command on a paced file ---------------------------------------------------------------

def test_live_from_a_paced_file_writes_output_and_stats(clip, tmp_path, astronaut_path, capsys):
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    t0 = time.perf_counter()
    rc = main(["live", "-s", str(astronaut_path), "-i", str(clip), "-o", str(out), "--realtime",
               "--stats", str(stats), "--det-size", "160"])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(stats.read_text())
    s = doc["summary"]
    assert (s["height"], s["width"], s["fps_target"]) == (120, 160, FPS)
    assert s["captured"] == 15 and s["frames"] + s["dropped"] == 15 and s["frames"] > 0
    assert s["faces"] > 0 and s["stopped_by"] == "end of input"
    for k in ("p50_ms", "p95_ms", "p99_ms"):
        assert 0 < s[k] < 2000
    assert s["gpu_p99_ms"] is None  # no CUDA here
    assert time.perf_counter() - t0 >= 1.3  # paced: 15 frames at 10 FPS take ~1.5 s
    assert doc["stage_ms"] and doc["engines"]["detect"] and doc["input"]["realtime"] is True
    assert probe(out).frames == s["frames"]
    assert len(list(iter_frames(out))) == s["frames"]
    text = capsys.readouterr().out
    assert f"{s['frames']} frames at" in text and "wrote" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_input_fps_paces_a_file_faster_and_rescales_its_pts(clip):
    src = Source(str(clip), realtime=True, fps=2 * FPS)
    try:
        got = list(src.frames(threading.Event(), "bgr24"))
    finally:
        src.close()
    times = [t for _, _, t in got]
    assert len(got) == 15 and src.fps == 2 * FPS
    assert np.allclose(np.diff(times), 1 / (2 * FPS), atol=1e-6)  # due times, 50 ms apart
    pts = [p for _, p, _ in got]
    step = float((pts[1] - pts[0]) * src.time_base)
    assert abs(step - 1 / (2 * FPS)) < 1e-3


# -- bounded latency: drop the oldest ------------------------------------------------------------

def test_drop_oldest_slot():
    q, abort = DropOldest(1), threading.Event()
    for i in range(3):
        q.put(i, abort)
    assert q.dropped == 2 and q.get(abort) == 2  # the newest survives
    q.close()
    from fusionrt.pipeline.video.io import DONE
    assert q.get(abort) is DONE


def test_slow_compute_drops_the_oldest_and_bounds_latency(clip):
    stage, sink = SlowStage(delay_s=0.25), Recorder()
    src = Source(str(clip), realtime=True)
    try:
        stats = run_live(src, stage, sink, LiveConfig(prime_frames=1))
    finally:
        src.close()
    s = stats.summary()
    assert s["captured"] == 15 and s["dropped"] > 0 and s["frames"] + s["dropped"] == 15
    assert s["dropped_compute"] == s["dropped"]
    # never a queue: at most one frame waits for compute and two for the output
    assert s["max_ms"] < 0.25e3 * 3 + 300, s
    assert sink.pts == sorted(sink.pts) and len(set(sink.pts)) == len(sink.pts)
    assert _no_live_threads()


def test_fast_compute_drops_nothing(clip):
    stage, sink = SlowStage(), Recorder()
    src = Source(str(clip), realtime=True)
    try:
        stats = run_live(src, stage, sink)
    finally:
        src.close()
    assert stats.dropped == 0 and stats.frames == 15 and stats.summary()["p99_ms"] < 100


def test_a_file_without_realtime_keeps_every_frame(clip):
    stage, sink = SlowStage(delay_s=0.01), Recorder()
    src = Source(str(clip))
    try:
        stats = run_live(src, stage, sink, LiveConfig(queue=1, out_queue=1))
    finally:
        src.close()
    assert stats.frames == 15 and stats.dropped == 0


# -- clean stops flush the output --------------------------------------------------------------

def _run_to_file(src: Source, stage, out: Path, stop=None):
    sink = open_sink(str(out), src.width, src.height, src.fps, src.time_base, stage.frame_format)
    try:
        stats = run_live(src, stage, sink, LiveConfig(prime_frames=0), stop)
    except BaseException:
        sink.close(ok=False)
        raise
    sink.close(ok=True)
    return stats


def test_stop_event_stops_and_flushes(long_clip, tmp_path):
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    src = Source(str(long_clip), realtime=True)
    try:
        t0 = time.perf_counter()
        stats = _run_to_file(src, SlowStage(), tmp_path / "o.mp4", stop)
    finally:
        src.close()
    assert time.perf_counter() - t0 < 3.0 and stats.stopped_by == "stop"
    assert 5 <= stats.frames < 60
    assert probe(tmp_path / "o.mp4").frames == stats.frames
    assert _no_live_threads()


def test_ctrl_c_in_compute_stops_and_flushes(long_clip, tmp_path):
    src = Source(str(long_clip), realtime=True)
    try:
        stats = _run_to_file(src, SlowStage(interrupt_at=8), tmp_path / "o.mkv")
    finally:
        src.close()
    assert stats.stopped_by == "SIGINT" and stats.frames >= 5
    assert len(list(iter_frames(tmp_path / "o.mkv"))) == stats.frames


def test_sigterm_to_the_command_flushes_output_and_stats(long_clip, tmp_path, astronaut_path):
    out, stats = tmp_path / "o.mp4", tmp_path / "s.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fusionrt.cli", "live", "-s", str(astronaut_path), "-i",
         str(long_clip), "-o", str(out), "--realtime", "--stats", str(stats), "--det-size",
         "160"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".o.*.part.mp4")) and time.time() < deadline:
            time.sleep(0.05)  # the temp output appears when the run starts
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    s = json.loads(stats.read_text())["summary"]
    assert s["stopped_by"] == "SIGTERM" and 0 < s["frames"] < 60
    assert probe(out).frames == s["frames"]


# -- errors: one line, nothing written ---------------------------------------------------------

@pytest.mark.parametrize("given, says", [
    ("missing.mp4", "file not found"),
    ("/dev/video99", "camera '/dev/video99' | not found"),
    ("rtsp://127.0.0.1:9/none", "stream 'rtsp://127.0.0.1:9/none' | cannot be opened"),
    ("IMAGE", "is an image"),
])
def test_bad_input_is_one_line_and_writes_nothing(given, says, tmp_path, astronaut_path, capsys):
    given = str(astronaut_path) if given == "IMAGE" else given
    given = str(tmp_path / given) if given == "missing.mp4" else given
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["live", "-s", str(astronaut_path), "-i", given, "-o", str(out / "o.mp4"),
               "--stats", str(out / "s.json"), "--open-timeout", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == InputError.exit_code and says in err and len(err.splitlines()) == 1, err
    assert list(out.iterdir()) == []


def test_bad_flags(tmp_path, astronaut_path, clip, capsys):
    base = ["live", "-s", str(astronaut_path), "-i", str(clip)]
    assert main(base + ["-o", str(tmp_path / "o.avi")]) == OutputError.exit_code
    assert main(base + ["-o", str(clip)]) == OutputError.exit_code  # onto its input
    assert main(base + ["-o", "null", "--baseline", "--engine", "default",
                        "--kernels", "host"]) == InputError.exit_code
    assert main(base + ["-o", "null", "--detect-every", "0"]) == InputError.exit_code
    assert main(base + ["-o", "null", "--input-size", "big"]) == InputError.exit_code
    err = capsys.readouterr().err
    assert "--baseline | sets the kernels" in err and "--input-size | got 'big'" in err
    assert list(tmp_path.iterdir()) == []


def test_parse_input():
    assert parse_input("/dev/video2").kind == "camera"
    assert parse_input("v4l2:/dev/video0").format == "v4l2"
    assert parse_input("udp://0.0.0.0:5000").kind == "stream"
    assert parse_input("clip.mp4").kind == "file"
    if sys.platform.startswith("linux"):
        assert parse_input("0").url == "/dev/video0"


# -- sinks -------------------------------------------------------------------------------------

def test_missing_pyvirtualcam_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # import fails as if not installed
    with pytest.raises(EngineError, match=r"output 'vcam' \| needs the optional package "
                                          r"pyvirtualcam: pip install"):
        open_sink("vcam", 160, 120, FPS, 1, "bgr24")


def test_window_without_a_display_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        with pytest.raises(OutputError, match=r"output 'window' \| no display"):
            open_sink("window", 160, 120, FPS, 1, "bgr24")


def test_udp_output_sends_mpegts(clip):
    """A network sink needs no receiver (UDP): frames go out as MPEG-TS and it closes cleanly."""
    src = Source(str(clip))
    try:
        sink = open_sink("udp://127.0.0.1:45999?pkt_size=1316", src.width, src.height, src.fps,
                         src.time_base, "bgr24")
        stats = run_live(src, SlowStage(), sink, LiveConfig(prime_frames=0, max_frames=5))
        sink.close(ok=True)
    finally:
        src.close()
    assert stats.frames == 5 and stats.stopped_by == "5 frames"


def test_missing_v4l2_output_device(tmp_path):
    with pytest.raises(OutputError, match="v4l2loopback"):
        open_sink("v4l2:/dev/video99", 160, 120, FPS, 1, "yuv420p")


# -- the GPU path's per-frame clock, with a pretend CUDA device --------------------------------

def test_live_stage_times_each_frame_with_events():
    """On CUDA the stage waits for the upload, records events around compute on the compute
    stream and reads them after download (checked here with pretend events)."""
    log = []

    class Event:
        def __init__(self, t):
            self.t = t

        def synchronize(self):
            log.append("sync")

        def elapsed_time(self, end):
            return end.t - self.t

    class Dev:
        cuda = True
        clock = iter([1.0, 4.5])

        def wait(self, stream, ev):
            log.append(("wait", stream, ev))

        def record(self, stream=None, timing=False):
            assert timing and stream == "compute"
            return Event(next(self.clock))

    class Inner:
        frame_format = "yuv420p"

        def compute(self, handle):
            log.append("compute")
            return "out", [1]

        def download(self, out):
            return [out]

    class Kernels:
        name = "device"

    class Swapper:
        kernels, dev, compute = Kernels(), Dev(), "compute"

        def frame_stage(self, batch):
            assert batch == 1
            return Inner()

    st = LiveStage(Swapper())
    handle, counts = st.compute(("tensor", "ready"))
    assert counts == [1] and log == [("wait", "compute", "ready"), "compute"]
    assert st.download(handle) == ["out"] and st.gpu_ms(handle) == 3.5


# -- the benchmark script ----------------------------------------------------------------------

@pytest.mark.slow
def test_live_bench_script_dry_run(tmp_path):
    """benchmarks/scripts/live_bench.py end to end on CPU torch with tiny models (the device
    kernels, as on the GPU), so the H200 run cannot fail on the script itself."""
    pytest.importorskip("torch")  # synthetic models and the device kernels
    env = {**os.environ, "FUSIONRT_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "scripts" / "live_bench.py"),
           "--device", "cpu", "--kernels", "device", "--size", "160x120", "--seconds", "1.5",
           "--fps", "10", "--fps-high", "20", "--baseline-seconds", "0.5", "--model-width",
           "0.05", "--det-size", "160", "--precision", "fp32", "--work", str(tmp_path / "w"),
           "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["live_120p10.json", "live_120p20.json", "live_bench.md",
                     "live_facefusion_loop.json"]
    for name in names[:2] + names[3:]:
        doc = json.loads((tmp_path / "out" / name).read_text())
        s = doc["summary"]
        assert s["frames"] > 0 and s["p99_ms"] > 0 and "machine" in doc and doc["command"]
        assert s["height"] == 120 and s["fps_target"] in (10, 20)
    base = json.loads((tmp_path / "out" / "live_facefusion_loop.json").read_text())
    assert base["kernels"] == "host" and base["summary"]["stopped_by"].startswith("duration")
    assert json.loads((tmp_path / "out" / "live_120p10.json").read_text())["kernels"] == "device"
