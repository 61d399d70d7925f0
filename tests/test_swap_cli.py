"""``fusionrt swap`` end to end on the example photos, and every bad input it must refuse."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fusionrt.cli import main
from fusionrt.errors import InputError, OutputError
from fusionrt.pipeline.image_io import read_image, write_image


def _run(capsys, *argv):
    rc = main(["swap", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err: str, code_text: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("fusionrt: error:")]
    assert len(lines) == 1 and code_text in lines[0], err


@pytest.mark.slow
def test_swap_image_writes_output(capsys, tmp_path, astronaut_path, grace_path, grace):
    out = tmp_path / "out.png"
    rc, stdout, _ = _run(capsys, "--source", astronaut_path, "--target", grace_path, "-o", out,
                         "--explain")
    assert rc == 0
    img = cv2.imread(str(out))
    assert img.shape == grace.shape
    assert np.abs(img.astype(int) - grace.astype(int)).mean() > 1  # something was swapped
    assert "swapper: classic" in stdout and "1 face(s) swapped" in stdout
    assert "ms/frame" in stdout and "retinaface_mnet025 (real weights) on ort-cpu" in stdout
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temp file left


def test_missing_source(capsys, tmp_path, grace_path):
    out = tmp_path / "out.png"
    rc, _, err = _run(capsys, "-s", tmp_path / "nope.png", "-t", grace_path, "-o", out)
    assert rc == InputError.exit_code
    _one_line_error(err, "source '" + str(tmp_path / "nope.png") + "' | file not found")
    assert not out.exists()


def test_corrupt_image(capsys, tmp_path, astronaut_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "out.png"
    rc, _, err = _run(capsys, "-s", astronaut_path, "-t", bad, "-o", out)
    assert rc == InputError.exit_code
    _one_line_error(err, "not a decodable image")
    assert not out.exists()


def test_source_without_face(capsys, tmp_path, grace_path):
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((256, 256, 3), 128, np.uint8))
    out = tmp_path / "out.png"
    rc, _, err = _run(capsys, "-s", grey, "-t", grace_path, "-o", out)
    assert rc == 3
    _one_line_error(err, f"no face in the source image '{grey}'")
    assert not out.exists()


def test_unwritable_output(capsys, tmp_path, astronaut_path, grace_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    out = a_file / "out.png"  # a path under a file
    rc, _, err = _run(capsys, "-s", astronaut_path, "-t", grace_path, "-o", out)
    assert rc == OutputError.exit_code
    _one_line_error(err, "does not exist or is not a folder")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_synthetic_needs_permission(capsys, tmp_path, astronaut_path, grace_path):
    out = tmp_path / "out.png"
    rc, _, err = _run(capsys, "-s", astronaut_path, "-t", grace_path, "-o", out,
                      "--swapper", "inswapper_128")
    assert rc == 4
    _one_line_error(err, "model 'inswapper_128' | not installed")
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("swapper", ["inswapper_128", "simswap_256"])
def test_synthetic_swapper_runs_with_warning(capsys, caplog, synthetic_home, tmp_path,
                                            astronaut_path, grace_path, grace, swapper):
    out = tmp_path / "out.png"
    rc, stdout, _ = _run(capsys, "-s", astronaut_path, "-t", grace_path, "-o", out,
                         "--swapper", swapper, "--allow-synthetic", "--explain")
    assert rc == 0 and out.is_file()
    assert f"swapper: {swapper}" in stdout and "WARNING: synthetic" in stdout
    assert f"{swapper} (SYNTHETIC weights)" in stdout
    assert any("SYNTHETIC WEIGHTS" in r.message for r in caplog.records)
    # random weights: the face box changed, the rest did not
    img = cv2.imread(str(out))
    assert np.abs(img[150:300, 200:330].astype(int) - grace[150:300, 200:330]).mean() > 5
    assert np.array_equal(img[450:], grace[450:])


@pytest.mark.slow
def test_auto_never_picks_synthetic(capsys, synthetic_home, tmp_path, astronaut_path, grace_path):
    out = tmp_path / "out.png"
    rc, stdout, _ = _run(capsys, "-s", astronaut_path, "-t", grace_path, "-o", out,
                         "--allow-synthetic")
    assert rc == 0 and "swapper: classic" in stdout and "WARNING" not in stdout


def test_write_image_atomic_and_errors(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    p = write_image(tmp_path / "a.png", img)
    assert np.array_equal(read_image(p), img)
    with pytest.raises(OutputError, match="unknown image extension '.xyz'"):
        write_image(tmp_path / "a.xyz", img)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        write_image(tmp_path / "dir.png", img)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.png", "dir.png"]  # no temp files


def test_read_image_empty_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="not a decodable image"):
        read_image(p)


@pytest.mark.slow
def test_neural_swapper_contracts(synthetic_home, astronaut, grace, detector):
    torch = pytest.importorskip("torch")
    from fusionrt.engines.registry import get_engine
    from fusionrt.models.store import ModelStore
    from fusionrt.pipeline.host.align import warp_face
    from fusionrt.pipeline.host.swap import NeuralSwapper, read_emap
    store = ModelStore()
    art = store.resolve("inswapper_128", allow_synthetic=True)
    buf = torch.load(art.weights_path, map_location="cpu")["state_dict"]["emap"].numpy()
    np.testing.assert_array_equal(read_emap(art.onnx_path), buf)  # last initializer = emap
    sw = NeuralSwapper(get_engine("ort-cpu")(art))
    emb = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    lat = sw.latent(emb)
    np.testing.assert_allclose(lat[0], (emb / np.linalg.norm(emb)) @ buf /
                               np.linalg.norm((emb / np.linalg.norm(emb)) @ buf), rtol=1e-5)
    crops = [warp_face(im, detector.detect(im)[0].landmarks, "arcface_128", 128)[0]
             for im in (astronaut, grace)]
    both = sw.swap_crops(crops, lat)  # one engine call, batch 2
    one = sw.swap_crops(crops[1:], lat)
    assert both[0].shape == (128, 128, 3) and both[0].dtype == np.uint8
    assert np.abs(both[1].astype(int) - one[0]).max() <= 1
    sim = NeuralSwapper(get_engine("ort-cpu")(store.resolve("simswap_256", allow_synthetic=True)))
    assert sim.template == "arcface_112_v1" and sim.size == 256
    np.testing.assert_allclose(np.linalg.norm(sim.latent(emb)), 1.0, rtol=1e-6)


def test_pipeline_source_without_face_api(grace):
    from fusionrt.errors import NoFaceError
    from fusionrt.pipeline.settings import PipelineConfig
    from fusionrt.pipeline.swapper import FaceSwapper
    with FaceSwapper.open(PipelineConfig(swapper="classic")) as pipe:
        with pytest.raises(NoFaceError, match="no face in the source image 'flat.png'"):
            pipe.set_source(np.full((64, 64, 3), 90, np.uint8), "flat.png")
        with pytest.raises(InputError, match="no source identity"):
            pipe.process_frame(grace)
        pipe.set_source(grace, "grace")
        out, n = pipe.process_frame(grace)
        assert n == 1 and set(pipe.stage_ms()) == {"detect", "swap", "paste"}
        assert pipe.describe()["swap"].startswith("classic")


def test_open_with_source_closes_the_engines_when_it_has_no_face(grace, monkeypatch):
    """``FaceSwapper.open(settings, source=…, reference=…)`` (what swap, live and batch call):
    the identities are set before it returns; a source without a face closes what it loaded."""
    from fusionrt.errors import NoFaceError
    from fusionrt.pipeline.settings import PipelineConfig
    from fusionrt.pipeline.swapper import FaceSwapper
    closed = []
    monkeypatch.setattr(FaceSwapper, "close", lambda self: closed.append(self))
    with pytest.raises(NoFaceError, match="'flat.png'"):
        FaceSwapper.open(PipelineConfig(swapper="classic"),
                         source=(np.full((64, 64, 3), 90, np.uint8), "flat.png"))
    assert len(closed) == 1
    monkeypatch.undo()
    with FaceSwapper.open(PipelineConfig(swapper="classic"), source=(grace, "grace")) as pipe:
        assert pipe.source is not None and pipe.process_frame(grace)[1] == 1


@pytest.mark.slow
def test_swap_video(capsys, tmp_path, astronaut_path, grace):
    av = pytest.importorskip("av")
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("libx264", rate=5)
        s.width, s.height, s.pix_fmt = grace.shape[1], grace.shape[0], "yuv420p"
        for i in range(4):
            shifted = np.roll(grace, 4 * i, axis=1)  # the face moves a little per frame
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(shifted), "bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    out = tmp_path / "out.mp4"
    rc, stdout, _ = _run(capsys, "-s", astronaut_path, "-t", clip, "-o", out, "--crf", 23)
    assert rc == 0 and out.is_file()
    assert "4 frames" in stdout and "4 face(s) swapped" in stdout and "swapper: classic" in stdout


def test_select_faces_modes():
    from fusionrt.pipeline.select import select_faces
    from fusionrt.pipeline.types import Face
    e1, e2 = np.eye(512, dtype=np.float32)[:2]
    small = Face(np.array([0, 0, 10, 10], np.float32), 0.9, np.zeros((5, 2)), e1)
    big = Face(np.array([0, 0, 50, 40], np.float32), 0.8, np.zeros((5, 2)), e2)
    assert select_faces([small, big], "largest") == [big]
    assert select_faces([small, big], "all") == [small, big]
    near_e1 = e1 + 0.5 * e2  # cosine 0.89 with e1, 0.45 with e2
    assert select_faces([small, big], "reference", near_e1, threshold=0.5) == [small]
    assert select_faces([small, big], "reference", near_e1, threshold=0.4) == [small, big]
    assert select_faces([], "largest") == []
    with pytest.raises(InputError, match="selection 'biggest' | unknown"):
        select_faces([small], "biggest")
    with pytest.raises(InputError, match="no reference embedding"):
        select_faces([small], "reference")
