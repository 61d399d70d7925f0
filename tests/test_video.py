"""Video I/O: round trips on real generated clips, frame order, audio copy, and every failure path."""

from __future__ import annotations

import hashlib
import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from fusionrt.errors import InputError, OutputError
from fusionrt.pipeline.video import encode
from fusionrt.pipeline.video.io import iter_frames, probe, process_video
from videos import make_test_video  # tests/videos.py

ROOT = Path(__file__).resolve().parent.parent
SIZE, FPS, SECONDS = (320, 240), 25, 1.2
N = round(FPS * SECONDS)  # 30 frames


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    return make_test_video(tmp_path_factory.mktemp("clips") / "clip.mp4", SECONDS, FPS, SIZE)


@pytest.fixture(scope="session")
def silent_clip(tmp_path_factory) -> Path:
    return make_test_video(tmp_path_factory.mktemp("clips") / "silent.mp4", SECONDS, FPS, SIZE, audio=False)


def _audio_samples(path: Path) -> int:
    """Total duration of the audio packets, in samples (time base 1/rate for AAC here)."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return sum(int(p.duration * s.time_base * s.codec_context.sample_rate) for p in c.demux(s) if p.size)


def _pts(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def _no_pipeline_threads() -> bool:
    return not any(t.name.startswith("fusionrt-") and t.is_alive() for t in threading.enumerate())


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


# ---- the test clip itself -----------------------------------------------------------------------

def test_make_test_video_has_both_photos_and_a_440hz_tone(clip):
    info = probe(clip)
    assert (info.width, info.height, info.fps, info.frames) == (*SIZE, Fraction(FPS), N)
    assert (info.codec, info.audio_codec, info.audio_rate) == ("h264", "aac", 48000)
    frames = list(iter_frames(clip))
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 20  # astronaut vs Grace Hopper
    assert np.abs(frames[0].astype(int) - frames[N // 2 - 1].astype(int)).mean() > 1  # the camera moves
    with av.open(str(clip)) as c:
        pcm = np.concatenate([f.to_ndarray().ravel() for f in c.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(pcm[4800:4800 + 48000 // 2]))
    assert abs(np.argmax(spectrum) * 2 - 440) <= 2  # bins of 2 Hz over half a second


# ---- probe / iter_frames ------------------------------------------------------------------------

def test_probe_counts_frames_when_container_has_no_count(clip, tmp_path):
    out = tmp_path / "o.mkv"
    process_video(clip, out, lambda f: f, progress=False)
    with av.open(str(out)) as c:
        assert c.streams.video[0].frames == 0  # Matroska stores no count, so probe must count
    assert probe(out).frames == N


def test_iter_frames_yields_bgr_frames(clip):
    frames = list(iter_frames(clip))
    assert len(frames) == N
    assert all(f.shape == (SIZE[1], SIZE[0], 3) and f.dtype == np.uint8 for f in frames)


def test_probe_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        probe(tmp_path / "nope.mp4")


def test_probe_image_is_not_a_video():
    with pytest.raises(InputError, match="is an image"):
        probe(ROOT / "examples" / "astronaut.png")


# ---- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".mov"])
def test_identity_round_trip_keeps_frames_fps_size_and_audio(clip, tmp_path, ext):
    out = tmp_path / f"out{ext}"
    stats = process_video(clip, out, lambda f: f, progress=False)
    assert stats.frames == N and stats.faces_total is None and stats.fps > 0
    src, got = probe(clip), probe(out)
    assert (got.width, got.height, got.fps, got.frames) == (src.width, src.height, src.fps, src.frames)
    assert (got.audio_codec, got.audio_rate) == (src.audio_codec, src.audio_rate)
    assert abs(_audio_samples(out) - _audio_samples(clip)) <= 1024  # copied packets, at most one frame off
    assert _audio_samples(out) / got.audio_rate == pytest.approx(SECONDS, abs=0.05)
    # Same frame timing; Matroska may shift the start by the AAC priming (21 ms) to avoid negative times.
    assert np.allclose(np.diff(_pts(out)), np.diff(_pts(clip)), atol=1e-3)
    assert abs(_pts(out)[0] - _pts(clip)[0]) < 0.03
    for a, b in zip(iter_frames(clip), iter_frames(out)):
        assert _psnr(a, b) > 35  # crf 18 re-encode: close to the input, not a different picture


def test_clip_without_audio(silent_clip, tmp_path):
    out = tmp_path / "out.mp4"
    assert process_video(silent_clip, out, lambda f: f, progress=False).frames == N
    info = probe(out)
    assert not info.has_audio and info.frames == N and info.audio_codec is None


def test_frame_fn_changes_are_in_the_output(clip, tmp_path):
    h, w = SIZE[1] // 2, SIZE[0] // 2

    def invert_quarter(f):
        f[:h, :w] = 255 - f[:h, :w]
        return f

    out = tmp_path / "inv.mp4"
    process_video(clip, out, invert_quarter, progress=False)
    for a, b in zip(iter_frames(clip), iter_frames(out)):
        inverted = np.abs((255 - a[:h, :w]).astype(int) - b[:h, :w]).mean()
        untouched = np.abs(a[h:, w:].astype(int) - b[h:, w:]).mean()
        assert inverted < 4 and untouched < 4  # codec error only (mean abs, 8-bit)
        assert np.abs(a[:h, :w].astype(int) - b[:h, :w]).mean() > 30  # really changed


BLOCK, BITS = 16, 6  # frame index written as 6 black/white 16x16 blocks along the top edge


def _draw_index(frame: np.ndarray, i: int) -> None:
    for bit in range(BITS):
        frame[:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = 255 if (i >> bit) & 1 else 0


def _read_index(frame: np.ndarray) -> int:
    return sum(1 << bit for bit in range(BITS)
               if frame[2:BLOCK - 2, bit * BLOCK + 2:(bit + 1) * BLOCK - 2].mean() > 127)


@pytest.mark.parametrize("batch", [1, 4])  # 30 frames in batches of 4: the last batch is partial
def test_frames_reach_frame_fn_and_output_in_order(clip, tmp_path, batch):
    want = [hashlib.sha1(f.tobytes()).hexdigest() for f in iter_frames(clip)]
    seen: list[str] = []

    def mark(f):
        seen.append(hashlib.sha1(f.tobytes()).hexdigest())
        _draw_index(f, len(seen) - 1)
        return f, 2

    fn = mark if batch == 1 else (lambda fs: [mark(f) for f in fs])
    stats = process_video(clip, tmp_path / "o.mp4", fn, progress=False, batch=batch)
    assert seen == want  # same frames, same order as a plain sequential decode
    assert [_read_index(f) for f in iter_frames(tmp_path / "o.mp4")] == list(range(N))
    assert stats.faces_total == 2 * N


def test_frame_fn_wrong_shape_is_refused(clip, tmp_path):
    with pytest.raises(ValueError, match="frame_fn .* expected uint8 array of shape"):
        process_video(clip, tmp_path / "o.mp4", lambda f: f[:10], progress=False)
    assert list(tmp_path.iterdir()) == []


# ---- failures: one test per bad input, never a partial output, threads stopped ------------------

def test_random_bytes_input(tmp_path):
    bad = tmp_path / "random.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 64_000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="cannot be opened"):
        process_video(bad, tmp_path / "o.mp4", lambda f: f, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random.mp4"]


def test_truncated_mp4_input(clip, tmp_path):
    bad = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # index (moov) is at the end: gone
    with pytest.raises(InputError, match="cannot be opened"):
        process_video(bad, tmp_path / "o.mp4", lambda f: f, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]


def _faststart_copy(src: Path, dst: Path) -> None:
    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if p.dts is not None:
                p.stream = streams[p.stream.index]
                o.mux(p)


def test_truncated_faststart_mp4_fails_mid_video(clip, tmp_path):
    whole, bad = tmp_path / "fs.mp4", tmp_path / "cut.mp4"
    _faststart_copy(clip, whole)
    data = whole.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # index up front survives; the frames after the cut do not
    seen = []
    with pytest.raises(InputError, match=r"ends after \d+ of 30 frames"):
        process_video(bad, tmp_path / "o.mp4", lambda f: seen.append(1) or f, progress=False)
    assert 0 < len(seen) < N  # failed mid-video, in the decode thread
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "fs.mp4"]
    assert _no_pipeline_threads()
    with pytest.raises(InputError, match="ends after"):
        list(iter_frames(bad))


def test_frame_fn_raising_mid_video_stops_everything(clip, tmp_path):
    def boom(f, calls=[]):  # noqa: B006 - call counter
        calls.append(1)
        if len(calls) == 10:
            raise RuntimeError("model exploded")
        return f

    with pytest.raises(RuntimeError, match="model exploded"):
        process_video(clip, tmp_path / "o.mp4", boom, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert _no_pipeline_threads()


def test_keyboard_interrupt_leaves_no_output(clip, tmp_path):
    def interrupt(f):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        process_video(clip, tmp_path / "o.mp4", interrupt, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert _no_pipeline_threads()


def test_encoder_failing_mid_video_is_an_output_error(clip, tmp_path, monkeypatch):
    real, calls = encode.to_video_frame, []  # each frame's hand-over to the encoder thread

    def failing(*args):
        calls.append(1)
        if len(calls) == 12:
            raise av.FFmpegError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(encode, "to_video_frame", failing)
    with pytest.raises(OutputError, match="encoding failed .No space left on device"):
        process_video(clip, tmp_path / "o.mp4", lambda f: f, progress=False)
    assert len(calls) == 12  # failed at the 12th frame, mid-video
    assert list(tmp_path.iterdir()) == []
    assert _no_pipeline_threads()


def test_destination_folder_missing(clip, tmp_path):
    calls = []
    with pytest.raises(OutputError, match="does not exist"):
        process_video(clip, tmp_path / "no" / "o.mp4", lambda f: calls.append(1) or f, progress=False)
    assert calls == []  # refused before decoding


def test_destination_under_a_file(clip, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="does not exist"):
        process_video(clip, tmp_path / "file" / "o.mp4", lambda f: f, progress=False)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_destination_folder_read_only(clip, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="cannot write"):
        process_video(clip, ro / "o.mp4", lambda f: f, progress=False)


def test_destination_unknown_extension(clip, tmp_path):
    with pytest.raises(OutputError, match="unknown extension '.avi'"):
        process_video(clip, tmp_path / "o.avi", lambda f: f, progress=False)


def test_unknown_encoder(clip, tmp_path):
    with pytest.raises(OutputError, match="encoder 'libnope'"):
        process_video(clip, tmp_path / "o.mp4", lambda f: f, codec="libnope", progress=False)
    assert list(tmp_path.iterdir()) == []
