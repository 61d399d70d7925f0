"""Issue 16: a seeded, bounded fuzz of the image and video readers on mutated real files.

Real files (the example photos in five formats; a short H.264/AAC clip in MP4 with the index at
the end, in MP4 with it first, in Matroska, and as a phone clip with a display rotation) are
mutated with a fixed seed: byte flips, truncation, a duplicated chunk, a zeroed header. Every
case must end in success or a ``FusionError`` (the one-line errors the CLI prints): no other
exception, no traceback, and no output file (or temp file) left behind when it fails. Each case
is bounded in time. A failing case prints its name (base file, kind, index) to reproduce it.
About 1 s for the readers, ~9 s for the CLI cases (a model load each; marked slow).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from fusionrt.cli import main
from fusionrt.errors import FusionError
from fusionrt.pipeline.image_io import read_image
from fusionrt.pipeline.video.io import iter_frames, probe, process_video
from videos import make_test_video  # tests/videos.py

SEED = 16
IMAGE_CASES, VIDEO_CASES = 100, 30
CASE_S = 5.0  # a case that takes longer is a finding too (a reader that hangs or balloons)
KINDS = ("flip", "truncate", "duplicate", "zero_header")


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One mutation of ``data``; never the identity."""
    b = bytearray(data)
    n = len(b)
    if kind == "flip":  # a few random bytes XOR a non-zero mask
        for at in rng.integers(0, n, int(rng.integers(1, 33))):
            b[at] ^= int(rng.integers(1, 256))
    elif kind == "truncate":
        b = b[:int(rng.integers(0, n))]
    elif kind == "duplicate":  # a chunk copied to another place
        start = int(rng.integers(0, n - 1))
        chunk = b[start:start + int(rng.integers(1, max(2, n // 8)))]
        at = int(rng.integers(0, n))
        b = b[:at] + chunk + b[at:]
    elif kind == "zero_header":
        k = min(n, int(rng.integers(4, 257)))
        b[:k] = bytes(k)
    else:
        raise ValueError(kind)
    return bytes(b) if bytes(b) != data else bytes(b[:-1])


def _cases(bases: dict[str, bytes], count: int, salt: int):
    """(name, suffix, bytes): ``count`` mutations spread over the base files and kinds."""
    rng = np.random.default_rng([SEED, salt])
    names = sorted(bases)
    for i in range(count):
        base, kind = names[i % len(names)], KINDS[(i // len(names)) % len(KINDS)]
        yield f"{base}:{kind}:{i}", Path(base).suffix, mutate(bases[base], kind, rng)


@pytest.fixture(scope="module")
def image_bases(tmp_path_factory) -> dict[str, bytes]:
    root = Path(__file__).resolve().parent.parent / "examples"
    bases = {"astronaut.png": (root / "astronaut.png").read_bytes(),
             "grace_hopper.jpg": (root / "grace_hopper.jpg").read_bytes()}
    small = cv2.imread(str(root / "grace_hopper.jpg"))[100:260, 120:280]
    for ext in (".webp", ".tiff", ".bmp"):  # the other formats read_image takes
        ok, buf = cv2.imencode(ext, small)
        assert ok
        bases[f"grace{ext}"] = buf.tobytes()
    return bases


def _remux(src: Path, dst: Path, rotation: int = 0) -> Path:
    """``src``'s packets in an MP4 with the index first (``faststart``: a cut file keeps its
    index, so the decoder, not the demuxer, meets the damage), optionally with a display
    rotation (a phone clip)."""
    from fusionrt.pipeline.video.io import copy_stream
    faststart = {"movflags": "+faststart"}
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=faststart) as out:
        v_in = inp.streams.video[0]
        v = copy_stream(out, v_in)
        if rotation:
            v.set_display_rotation(rotation)
        for packet in inp.demux(v_in):
            if packet.size:
                packet.stream = v
                out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def video_bases(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("fuzz_clips")
    mp4 = make_test_video(d / "clip.mp4", 0.8, 10, (160, 120))  # index at the end
    mkv = d / "clip.mkv"  # no frame count: the early-end check by duration
    process_video(mp4, mkv, lambda f: f, progress=False)
    bases = {"clip.mp4": mp4.read_bytes(), "clip.mkv": mkv.read_bytes(),
             "fast.mp4": _remux(mp4, d / "fast.mp4").read_bytes()}
    if hasattr(av.video.stream.VideoStream, "set_display_rotation"):  # the display matrix too
        bases["phone.mp4"] = _remux(mp4, d / "phone.mp4", rotation=90).read_bytes()
    return bases


def _outcome(fn) -> tuple[str, float, object]:
    """"ok", "error: …" (a FusionError) or "CRASH …" (anything else, or a Python warning: the
    CLI would print it with a library's file and line), the seconds taken, and what ``fn``
    returned (None unless "ok")."""
    t = time.perf_counter()
    result = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
            what = "ok"
        except FusionError as e:
            what = f"error: {e}"
            if "\n" in str(e):
                what = f"CRASH multi-line error: {e!r}"
        except Exception as e:  # noqa: BLE001 - the finding this test exists for
            what = f"CRASH {type(e).__name__}: {e}"
    if caught and not what.startswith("CRASH"):
        what = f"CRASH warned ({what}): {caught[0].category.__name__}: {caught[0].message}"
    return what, time.perf_counter() - t, result


def _check_image(path: Path) -> None:
    img = read_image(path)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, img.shape


def _check_video(path: Path, out: Path) -> int:
    """The frames decoded; the encoder's count must agree."""
    info = probe(path)
    frames = list(iter_frames(path))
    assert all(f.shape == frames[0].shape == (info.height, info.width, 3) for f in frames)
    stats = process_video(path, out, lambda f: f, progress=False)
    assert stats.frames == len(frames), (stats.frames, len(frames))
    return len(frames)


def test_fuzz_image_reader(tmp_path, image_bases):
    bad, outcomes = [], []
    for name, suffix, data in _cases(image_bases, IMAGE_CASES, salt=1):
        path = tmp_path / f"case{suffix}"
        path.write_bytes(data)
        what, seconds, _ = _outcome(lambda: _check_image(path))
        outcomes.append(what)
        if what.startswith("CRASH") or seconds > CASE_S:
            bad.append(f"{name}: {what} ({seconds:.1f} s)")
    assert not bad, "\n".join(bad)
    assert any(o == "ok" for o in outcomes) and any(o.startswith("error") for o in outcomes)


def test_fuzz_video_readers(tmp_path, video_bases):
    whole = {}
    for base, data in video_bases.items():
        (tmp_path / base).write_bytes(data)
        whole[base] = len(list(iter_frames(tmp_path / base)))
    bad, outcomes = [], []
    for name, suffix, data in _cases(video_bases, VIDEO_CASES, salt=2):
        case = tmp_path / name.replace(":", "_")
        case.mkdir()
        path, out = case / f"in{suffix}", case / f"out{suffix}"
        path.write_bytes(data)
        what, seconds, frames = _outcome(lambda: _check_video(path, out))
        outcomes.append(what)
        left = sorted(p.name for p in case.iterdir() if p.name != path.name)
        base, kind = name.split(":")[:2]
        if what.startswith("CRASH") or seconds > CASE_S:
            bad.append(f"{name}: {what} ({seconds:.1f} s)")
        elif kind == "truncate" and what == "ok" and frames < whole[base]:  # issue 16 item 3
            bad.append(f"{name}: cut file read as intact with {frames} of {whole[base]} frames")
        elif what != "ok" and left:
            bad.append(f"{name}: failed ({what}) but left {left}")
    assert not bad, "\n".join(bad)
    assert any(o.startswith("error") for o in outcomes)


@pytest.mark.slow
def test_fuzz_through_the_cli(tmp_path, capsys, image_bases, video_bases, astronaut_path):
    """A few mutated targets through ``fusionrt swap``: exit 0 with an output, or one
    ``fusionrt: error:`` line, its exit code, and nothing written."""
    cases = [*list(_cases(image_bases, 6, salt=3)), *list(_cases(video_bases, 4, salt=4))]
    bad = []
    for name, suffix, data in cases:
        case = tmp_path / name.replace(":", "_")
        case.mkdir()
        target = case / f"target{suffix}"
        out = case / ("out" + (suffix if suffix in (".mp4", ".mkv") else ".png"))
        target.write_bytes(data)
        t = time.perf_counter()
        try:
            rc = main(["swap", "-s", str(astronaut_path), "-t", str(target), "-o", str(out)])
        except BaseException as e:  # noqa: BLE001 - a traceback is the finding
            bad.append(f"{name}: {type(e).__name__}: {e}")
            continue
        seconds = time.perf_counter() - t
        _, err = capsys.readouterr()
        left = sorted(p.name for p in case.iterdir() if p.name != target.name)
        errors = [ln for ln in err.splitlines() if ln.startswith("fusionrt: error:")]
        if "Traceback" in err or seconds > 3 * CASE_S:
            bad.append(f"{name}: rc {rc}, {seconds:.1f} s, stderr {err!r}")
        elif rc == 0 and left != [out.name]:
            bad.append(f"{name}: exit 0 but wrote {left}")
        elif rc != 0 and (len(errors) != 1 or left):
            bad.append(f"{name}: rc {rc}, errors {errors}, left {left}")
    assert not bad, "\n".join(bad)
