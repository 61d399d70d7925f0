"""Issue 16 hardening: -o onto an input, EXIF orientation, cut Matroska files, huge images,
the display rotation of phone videos, the pixel budget on video frames."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from fusionrt.cli import main
from fusionrt.errors import InputError, OutputError
from fusionrt.pipeline.image_io import MAX_PIXELS, read_image
from fusionrt.pipeline.video.io import iter_frames, probe, process_video
from videos import make_test_video  # tests/videos.py


def _run(capsys, *argv):
    rc = main(["swap", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err: str, text: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("fusionrt: error:")]
    assert len(lines) == 1 and text in lines[0], err
    assert "Traceback" not in err


# ---- 1. -o equal to the source or the reference ------------------------------------------------

def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


@pytest.mark.parametrize("how", ["same", "dotdot", "symlink"])
def test_output_equal_to_source_is_refused(capsys, tmp_path, astronaut_path, grace_path, how):
    src = _copy(astronaut_path, tmp_path / "me.png")
    (tmp_path / "sub").mkdir()
    out = {"same": src, "dotdot": tmp_path / "sub" / ".." / "me.png",
           "symlink": tmp_path / "link.png"}[how]
    if how == "symlink":
        out.symlink_to(src)
    before = src.read_bytes()
    rc, _, err = _run(capsys, "-s", src, "-t", grace_path, "-o", out)
    assert rc == OutputError.exit_code == 6
    _one_line_error(err, "same file as the source")
    assert src.read_bytes() == before  # the user's photo is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["me.png", "sub"] + (["link.png"] if how == "symlink" else []))


def test_output_equal_to_reference_is_refused(capsys, tmp_path, astronaut_path, grace_path):
    ref = _copy(grace_path, tmp_path / "ref.jpg")
    before = ref.read_bytes()
    rc, _, err = _run(capsys, "-s", astronaut_path, "-t", grace_path, "--select", "reference",
                      "--reference", ref, "-o", tmp_path / "." / "ref.jpg")
    assert rc == 6
    _one_line_error(err, "same file as the reference")
    assert ref.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["ref.jpg"]


# ---- 2. EXIF orientation -----------------------------------------------------------------------

def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image
    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:, :40] = (255, 0, 0)  # stored: left half red, right half black
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored left edge is the upright top
    path = tmp_path / "phone.jpg"
    Image.fromarray(rgb).save(path, exif=exif.tobytes(), quality=95)
    img = read_image(path)
    assert img.shape == (80, 40, 3)  # upright: portrait
    top, bottom = img[:30].reshape(-1, 3).mean(0), img[50:].reshape(-1, 3).mean(0)
    assert top[2] > 200 and top[:2].max() < 40  # BGR: red on top
    assert bottom.max() < 40


def test_grey_alpha_and_16bit_still_become_bgr8(tmp_path):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert (read_image(tmp_path / "g.png") == grey[..., None]).all()
    bgra = np.zeros((8, 8, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 100
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    assert (read_image(tmp_path / "a.png") == (200, 0, 0)).all()
    deep = np.full((8, 8, 3), 0x1234, np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and (out == 0x12).all()


# ---- 3. Matroska without a frame count, cut short ----------------------------------------------

@pytest.fixture(scope="module")
def mkv(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mkv")
    mp4 = make_test_video(d / "clip.mp4", 1.2, 25, (160, 120))
    out = d / "clip.mkv"
    process_video(mp4, out, lambda f: f, progress=False)
    with av.open(str(out)) as c:
        assert c.streams.video[0].frames == 0  # Matroska: no frame count to check against
    return out


def test_intact_mkv_still_processes(capsys, mkv, tmp_path, astronaut_path):
    out = tmp_path / "o.mkv"
    process_video(mkv, out, lambda f: f, progress=False)
    assert out.is_file()
    out = tmp_path / "cli.mkv"  # the CLI's progress bar has no total for Matroska
    rc, stdout, err = _run(capsys, "-s", astronaut_path, "-t", mkv, "-o", out)
    assert rc == 0 and out.is_file(), err
    assert "30 frames" in stdout


def test_cut_mkv_is_an_input_error_without_output(capsys, mkv, tmp_path, astronaut_path):
    bad = tmp_path / "cut.mkv"
    data = mkv.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="ends at"):
        process_video(bad, tmp_path / "o.mkv", lambda f: f, progress=False)
    rc, _, err = _run(capsys, "-s", astronaut_path, "-t", bad, "-o", tmp_path / "out.mkv")
    assert rc == InputError.exit_code
    _one_line_error(err, "expected an intact (not truncated) video")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mkv"]


# ---- 4. pixel budget from the header -----------------------------------------------------------

def _png_1bit(path: Path, w: int, h: int) -> Path:
    """A real, valid all-black 1-bit PNG, written without building the image in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    idat = zlib.compress(bytes(1 + (w + 7) // 8) * h, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_huge_png_is_refused_from_its_header(capsys, tmp_path, grace_path):
    huge = _png_1bit(tmp_path / "huge.png", 20000, 20000)
    assert huge.stat().st_size < 200_000
    t = time.perf_counter()
    with pytest.raises(InputError, match=r"400000000 pixels is over the limit of 50000000 .*--max-pixels"):
        read_image(huge, role="source")
    assert time.perf_counter() - t < 1.0  # header only: no 1.2 GB decode
    out = tmp_path / "out.png"
    rc, _, err = _run(capsys, "-s", huge, "-t", grace_path, "-o", out)
    assert rc == InputError.exit_code
    _one_line_error(err, "--max-pixels")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.png"]


def test_max_pixels_limit_and_flag(capsys, tmp_path, grace_path):
    assert MAX_PIXELS >= 7680 * 4320  # 8K fits the default
    img = _png_1bit(tmp_path / "w.png", 300, 200)
    with pytest.raises(InputError, match=r"300x200 is over the limit of 59999 pixels"):
        read_image(img, max_pixels=59_999)
    assert read_image(img, max_pixels=60_000).shape == (200, 300, 3)
    assert read_image(img, max_pixels=None).shape == (200, 300, 3)
    out = tmp_path / "out.png"
    rc, _, err = _run(capsys, "-s", grace_path, "-t", img, "-o", out, "--max-pixels", 1000)
    assert rc == InputError.exit_code
    _one_line_error(err, "512x600 is over the limit of 1000 pixels")  # the flag sets the limit
    assert not out.exists()


# ---- 5. the display rotation of phone videos ---------------------------------------------------

ROTATABLE = hasattr(av.video.stream.VideoStream, "set_display_rotation")  # PyAV >= 15 or so


def _upright_frames(n: int, size: tuple[int, int] = (240, 320)) -> list[np.ndarray]:
    """Portrait frames (W x H = ``size``) with the astronaut's face upright."""
    photo = cv2.imread(str(Path(__file__).resolve().parent.parent / "examples" / "astronaut.png"))
    w, h = size
    base = cv2.resize(photo[:, 64:448], (w, h))  # 384x512 crop: portrait, face in the upper half
    return [np.roll(base, i, axis=1) for i in range(n)]


def _phone_clip(path: Path, frames: list[np.ndarray], rotation: int) -> Path:
    """What a phone writes: frames stored sideways plus a display rotation (counter-clockwise
    degrees, PyAV's ``VideoFrame.rotation``) that turns them upright."""
    if not ROTATABLE:
        pytest.skip(f"PyAV {av.__version__} cannot write a display matrix "
                    "(VideoStream.set_display_rotation) and no rotated clip is stored")
    undo = {90: cv2.ROTATE_90_CLOCKWISE, 270: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180}
    stored = [cv2.rotate(f, undo[rotation]) for f in frames]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10, options={"crf": "12", "preset": "veryfast"})
        s.height, s.width = stored[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.set_display_rotation(rotation)
        for f in stored:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")))
        c.mux(s.encode(None))
    return path


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(int) - b).mean()) < 6


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_video_is_read_upright(tmp_path, rotation):
    want = _upright_frames(3)
    clip = _phone_clip(tmp_path / "phone.mp4", want, rotation)
    with av.open(str(clip)) as c:  # stored sideways: landscape
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].height) == (320, 240)
    info = probe(clip)
    assert (info.width, info.height, info.rotation) == (240, 320, rotation)
    got = list(iter_frames(clip))
    assert len(got) == 3 and all(g.shape == (320, 240, 3) for g in got)  # width/height swapped
    assert all(_close(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_rotated_video_is_written_upright_without_rotation(tmp_path, ext):
    want = _upright_frames(3)
    clip = _phone_clip(tmp_path / f"phone{ext}", want, 90)
    out = tmp_path / f"out{ext}"
    stats = process_video(clip, out, lambda f: f, progress=False)
    assert stats.frames == 3
    info = probe(out)
    assert (info.width, info.height, info.rotation) == (240, 320, 0)  # upright, no flag
    assert all(_close(g, w) for g, w in zip(iter_frames(out), want))


def test_rotated_video_on_a_yuv420p_stage(tmp_path):
    """The GPU path's frame format (packed yuv420p planes) is turned upright too."""
    from fusionrt.pipeline.video.loop import VideoConfig, transcode

    class PassThrough:
        frame_format = "yuv420p"

        def warmup(self, batch, height, width):
            self.size = (width, height)

        def upload(self, frames):
            return [f if isinstance(f, np.ndarray) else f.to_ndarray(format="yuv420p")
                    for f in frames]

        def compute(self, frames):
            return frames, [None] * len(frames)

        def download(self, frames):
            return frames

    want = _upright_frames(3)
    clip = _phone_clip(tmp_path / "phone.mp4", want, 270)
    stage = PassThrough()
    transcode(clip, tmp_path / "out.mp4", stage, VideoConfig(batch=2, encoders=1))
    assert stage.size == (240, 320)
    assert all(_close(g, w) for g, w in zip(iter_frames(tmp_path / "out.mp4"), want))


def test_swap_on_a_rotated_video_finds_the_upright_face(capsys, tmp_path, astronaut_path):
    clip = _phone_clip(tmp_path / "phone.mp4", _upright_frames(2), 90)
    out = tmp_path / "out.mp4"
    rc, stdout, err = _run(capsys, "-s", astronaut_path, "-t", clip, "-o", out)
    assert rc == 0, err
    assert "2 frames" in stdout and "2 face(s) swapped" in stdout, stdout
    info = probe(out)
    assert (info.width, info.height, info.rotation) == (240, 320, 0)


def test_rotation_from_display_matrix_bytes():
    from fusionrt.pipeline.video.orient import matrix_rotation, quarter, rotate_array
    one = 1 << 16
    ccw90 = struct.pack("=9i", 0, -one, 0, one, 0, 0, 0, 0, 1 << 30)  # FFmpeg's own layout
    assert quarter(matrix_rotation(ccw90)) == 90
    assert quarter(matrix_rotation(struct.pack("=9i", one, 0, 0, 0, one, 0, 0, 0, 1 << 30))) == 0
    assert quarter(matrix_rotation(bytes(36))) == 0 and quarter(-90) == 270
    yuv = np.arange(6 * 4 * 3 // 2, dtype=np.uint8).reshape(9, 4)  # 4x6 frame: Y 6x4, U/V 3x2
    assert rotate_array(yuv, 90, "yuv420p").shape == (6, 6)  # 6x4 frame: Y 4x6, U/V 2x3


# ---- 6. the pixel budget on video frames -------------------------------------------------------

def test_video_frames_over_the_pixel_budget_are_refused(capsys, tmp_path, astronaut_path):
    clip = make_test_video(tmp_path / "clip.mp4", 0.2, 10, (640, 480), audio=False)
    from fusionrt.pipeline.video.io import check_frame_pixels
    check_frame_pixels(clip)  # the default budget: 50 MP
    with pytest.raises(InputError, match=r"frames of 640x480 are over the limit of 307199 "
                                         r"pixels; raise it with --max-pixels N"):
        check_frame_pixels(clip, 307_199)
    with pytest.raises(InputError, match="over the limit"):
        probe(clip, max_pixels=307_199)
    with pytest.raises(InputError, match="over the limit"):
        next(iter_frames(clip, max_pixels=307_199))
    from fusionrt.pipeline.video.loop import VideoConfig, transcode
    from fusionrt.pipeline.video.frame_fn import FrameFnStage
    with pytest.raises(InputError, match="over the limit"):
        transcode(clip, tmp_path / "o.mp4", FrameFnStage(lambda f: f),
                  VideoConfig(max_pixels=307_199))
    out = tmp_path / "out.mp4"
    rc, _, err = _run(capsys, "-s", astronaut_path, "-t", clip, "-o", out,  # source: 512x512
                      "--max-pixels", 307_199)
    assert rc == InputError.exit_code
    _one_line_error(err, "frames of 640x480 are over the limit of 307199 pixels")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # nothing written
