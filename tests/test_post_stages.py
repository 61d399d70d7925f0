"""Enhancer, masks and pixel boost as pipeline stages (issue 19): the plan, both kernel sets
through ``FaceSwapper``, the CLI, and a test per bad setting. The stage modules' conformance
with FaceFusion is in tests/test_enhancers.py and tests/test_masks.py; here: that the
orchestrator runs them where FaceFusion does, and touches nothing outside the masks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import facefusion_oracle as ff  # tests/facefusion_oracle.py (FaceFusion's own functions)
from conftest import synthetic_models
from fusionrt.errors import FusionError, InputError, ModelError
from fusionrt.pipeline.host.swap import explode_pixel_boost, implode_pixel_boost
from fusionrt.pipeline.options import parse_enhancer
from fusionrt.pipeline.settings import PipelineConfig

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = {"arcface_w600k_r50": 0.0625, "inswapper_128": 0.03, "gfpgan_1.4": 0.05,
          "xseg_1": 0.05, "bisenet_resnet_34": 0.05, "2dfan4": 0.0625}
SYN = dict(swapper="inswapper_128", allow_synthetic=True, det_size=320)


@pytest.fixture(scope="module")
def post_home(tmp_path_factory):
    return synthetic_models(tmp_path_factory.mktemp("post_home"), WIDTHS)


@pytest.fixture
def home(post_home, monkeypatch):
    monkeypatch.setenv("FUSIONRT_HOME", str(post_home))
    return post_home


def _swap(frame, source, **kw):
    from fusionrt.pipeline.swapper import FaceSwapper
    with FaceSwapper.open(PipelineConfig(**{**SYN, **kw})) as sw:
        sw.set_source(source)
        out, n = sw.process_frame(frame)
        return out, n, sw.describe(), sw.stage_ms()


# -- pixel boost: FaceFusion's tiling -------------------------------------------------------------

def _ff_implode(crop, total, size):
    """facefusion/processors/modules/face_swapper/core.py implode_pixel_boost (3.8.1)."""
    frame = crop.reshape(size, total, size, total, 3)
    return frame.transpose(1, 3, 0, 2, 4).reshape(total ** 2, size, size, 3)


def _ff_explode(frames, total, size, boost):
    """… explode_pixel_boost (3.8.1)."""
    frame = np.stack(frames, axis=0).reshape(total, total, size, size, 3)
    return frame.transpose(2, 0, 3, 1, 4).reshape(boost, boost, 3)


def test_pixel_boost_tiles_are_facefusions():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 512, 512, 3), dtype=np.uint8)
    tiles = implode_pixel_boost(crops, 4)
    assert tiles.shape == (48, 128, 128, 3)
    for k in range(3):
        np.testing.assert_array_equal(tiles[16 * k:16 * (k + 1)], _ff_implode(crops[k], 4, 128))
        np.testing.assert_array_equal(_ff_explode(list(tiles[16 * k:16 * (k + 1)]), 4, 128, 512),
                                      crops[k])
    np.testing.assert_array_equal(explode_pixel_boost(tiles, 4), crops)


def test_device_tiles_equal_host_tiles():
    torch = pytest.importorskip("torch")
    from fusionrt.pipeline.device.warp import explode_tiles, implode_tiles
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    t = torch.from_numpy(crops).permute(0, 3, 1, 2)
    tiles = implode_tiles(t, 2)
    np.testing.assert_array_equal(tiles.permute(0, 2, 3, 1).numpy(), implode_pixel_boost(crops, 2))
    assert torch.equal(explode_tiles(tiles, 2), t)


# -- settings and plan: a test per bad input -------------------------------------------------------

@pytest.mark.parametrize("kw, error, text", [
    (dict(enhancer="gfpgan"), ModelError, "enhancer 'gfpgan' | unknown"),
    (dict(enhancer="inswapper_128"), ModelError, "a 'swap' model"),
    (dict(enhancer_blend=1.5), InputError, "--enhancer blend | got 1.5"),
    (dict(masks=("box", "hair")), InputError, "'hair' is unknown"),
    (dict(masks=()), InputError, "none given"),
    (dict(mask_regions=("ears",)), InputError, "'ears' is unknown"),
    (dict(masks=("area",)), InputError, "--landmarker 2dfan4"),
    (dict(mask_blur=2.0), InputError, "--mask-blur | got 2.0"),
    (dict(mask_padding=(0, 0, 0, 101)), InputError, "0..100"),
    (dict(occluder="bisenet_resnet_34"), ModelError, "occluder 'bisenet_resnet_34' | a 'parse'"),
    (dict(pixel_boost=-1), InputError, "--pixel-boost | got -1"),
])
def test_bad_settings_are_one_line_errors(kw, error, text):
    with pytest.raises(error) as e:
        PipelineConfig(**kw).check()
    assert text in str(e.value) and "\n" not in str(e.value)


def test_plan_refusals(home):
    from fusionrt.pipeline.plan import plan_stages
    with pytest.raises(InputError, match="expected a multiple of inswapper_128's size 128"):
        plan_stages(PipelineConfig(**SYN, pixel_boost=200))
    with pytest.raises(InputError, match="need a neural swapper"):
        plan_stages(PipelineConfig(swapper="classic", masks=("box", "occlusion")))


def test_plan_has_the_stages_in_facefusions_order(home):
    from fusionrt.pipeline.plan import plan_stages
    plan = plan_stages(PipelineConfig(**SYN, enhancer="gfpgan_1.4",
                                      masks=("box", "occlusion", "region"), pixel_boost=256))
    assert list(plan.stages) == ["detect", "embed", "swap", "occlude", "parse", "enhance"]
    assert (plan.stages["occlude"].model, plan.stages["parse"].model,
            plan.stages["enhance"].model) == ("xseg_1", "bisenet_resnet_34", "gfpgan_1.4")
    text = plan.explain()
    assert "pixel boost 256: 4 tiles per face" in text["swap"]
    assert "masks box+occlusion+region" in text["paste"]


@pytest.mark.parametrize("text, want", [("gfpgan_1.4", ("gfpgan_1.4", 0.8)),
                                        ("codeformer:60", ("codeformer", 0.6)),
                                        ("gpen_bfr_512:0.25", ("gpen_bfr_512", 0.25))])
def test_enhancer_flag(text, want):
    assert parse_enhancer(text) == want


@pytest.mark.parametrize("text", ["gfpgan_1.4:x", "gfpgan_1.4:150"])
def test_bad_enhancer_flag(text):
    with pytest.raises(InputError, match="--enhancer"):
        parse_enhancer(text)


# -- both kernel sets through FaceSwapper ----------------------------------------------------------

def _outside(frame, out, face_box, margin=0.6):
    """Pixels far outside the face box: never written."""
    x1, y1, x2, y2 = face_box
    w, h = x2 - x1, y2 - y1
    keep = np.ones(frame.shape[:2], bool)
    keep[max(0, int(y1 - margin * h)):int(y2 + margin * h),
         max(0, int(x1 - margin * w)):int(x2 + margin * w)] = False
    return np.array_equal(frame[keep], out[keep])


def test_enhancer_and_masks_host(home, grace, astronaut, detector):
    box = max(detector.detect(grace), key=lambda f: f.area).box
    base, n0, _, _ = _swap(grace, astronaut)
    out, n, explain, ms = _swap(grace, astronaut, enhancer="gfpgan_1.4",
                                masks=("box", "occlusion", "region"))
    assert n == n0 == 1
    assert {"masks", "enhance"} <= set(ms)
    assert "gfpgan_1.4 (SYNTHETIC weights)" in explain["enhance"]
    assert not np.array_equal(out, base)  # the enhancer and masks changed the face
    assert _outside(grace, out, box) and _outside(grace, base, box)


def test_masks_limit_the_paste(home, grace, astronaut):
    """Every extra mask can only take weight away: the pixels changed with box+occlusion+region
    are a subset of those changed with the box alone (same crops, min of masks)."""
    base, _, _, _ = _swap(grace, astronaut)
    masked, _, _, _ = _swap(grace, astronaut, masks=("box", "occlusion", "region"))
    changed_base = np.any(base != grace, axis=2)
    changed_masked = np.any(masked != grace, axis=2)
    assert changed_masked.sum() < changed_base.sum()
    assert not (changed_masked & ~changed_base).any()


def test_zero_occlusion_mask_pastes_nothing(home, grace, astronaut):
    """A fully occluding mask (the occluder says 0 everywhere) leaves the frame as it was."""
    from fusionrt.pipeline.swapper import FaceSwapper
    with FaceSwapper.open(PipelineConfig(**SYN, masks=("box", "occlusion"))) as sw:
        sw.set_source(astronaut)

        class Blind:
            @staticmethod
            def masks(crops):
                return np.zeros((len(crops),) + crops[0].shape[:2], np.float32)

        sw.kernels.occluder = Blind()
        out, n = sw.process_frame(grace)
    assert n == 1 and np.array_equal(out, grace)


def test_pixel_boost_runs_tiles_in_one_call(home, grace, astronaut):
    from fusionrt.pipeline.swapper import FaceSwapper
    with FaceSwapper.open(PipelineConfig(**SYN, pixel_boost=512)) as sw:
        sw.set_source(astronaut)
        eng, calls = sw.kernels.swapper.engine, []
        run = eng.run
        eng.run = lambda feeds: calls.append(feeds["target"].shape) or run(feeds)
        out, n = sw.process_frame(grace)
    assert n == 1 and calls == [(16, 3, 128, 128)]
    assert not np.array_equal(out, grace)


def test_device_kernels_match_host(home, grace, astronaut):
    pytest.importorskip("torch")
    kw = dict(enhancer="gfpgan_1.4", pixel_boost=256)
    host, _, _, _ = _swap(grace, astronaut, **kw)
    dev, n, explain, ms = _swap(grace, astronaut, kernels="device", **kw)
    assert n == 1 and {"enhance", "generator"} <= set(ms)
    mse = np.mean((host.astype(np.float64) - dev.astype(np.float64)) ** 2)
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-10)) > 40


def test_device_masks_run(home, grace, astronaut):
    pytest.importorskip("torch")
    out, n, _, ms = _swap(grace, astronaut, kernels="device", enhancer="gfpgan_1.4",
                          masks=("box", "occlusion", "region"))
    assert n == 1 and "masks" in ms and not np.array_equal(out, grace)


def test_cli_runs_enhancer_and_masks(home, tmp_path, grace_path, astronaut_path):
    out = tmp_path / "out.png"
    cmd = [sys.executable, "-m", "fusionrt.cli", "swap", "-s", str(astronaut_path), "-t",
           str(grace_path), "-o", str(out), "--swapper", "inswapper_128", "--allow-synthetic",
           "--enhancer", "gfpgan_1.4:70", "--mask", "box,occlusion,region", "--explain"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**__import__("os").environ, "FUSIONRT_HOME": str(home)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.is_file() and "enhance" in r.stdout and "masks" in r.stdout
    bad = subprocess.run(cmd[:-5] + ["--mask", "box,hair"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300,
                         env={**__import__("os").environ, "FUSIONRT_HOME": str(home)})
    assert bad.returncode != 0 and "'hair' is unknown" in bad.stderr
    assert not (tmp_path / "out2.png").exists()


def test_oracle_is_facefusions():
    assert "ffhq_512" in ff.WARP_TEMPLATE_SET  # the enhancers' template, from face_helper.py
    assert issubclass(InputError, FusionError)


@pytest.mark.parametrize("size", [0, 33, 8192])
def test_det_size_out_of_range(size):
    with pytest.raises(InputError, match=f"--det-size \\| got {size}; expected 64 to 4096"):
        PipelineConfig(det_size=size).check()


def test_device_warmup_runs_the_enhancer_before_the_loop(home, grace, astronaut):
    """The enhancer's call sizes run in ``warmup`` (their CUDA graphs are captured there on a GPU,
    before the video loop's threads start)."""
    pytest.importorskip("torch")
    from fusionrt.pipeline.swapper import FaceSwapper
    with FaceSwapper.open(PipelineConfig(**SYN, kernels="device", enhancer="gfpgan_1.4")) as sw:
        sw.set_source(astronaut)
        eng, calls = sw.kernels.enhancer.engine, []
        run = eng.run
        eng.run = lambda feeds: calls.append(feeds["input"].shape[0]) or run(feeds)
        sw.warmup(4, 240, 320)
    assert calls == sw.kernels.enhancer.calls.sizes() == [8]  # CPU: the chunk, unpadded


def test_area_mask_per_face_on_both_kernel_sets(home):
    """A face without 68 points (the landmarker was not confident) gets no area limit, the
    others their area: per face, the same on the host and the device kernels."""
    torch = pytest.importorskip("torch")
    from fusionrt.pipeline.swapper import FaceSwapper
    from fusionrt.pipeline.types import Face
    rng = np.random.default_rng(5)
    size = 128
    lm68 = (rng.uniform(0.3, 0.7, (68, 2)) * 400).astype(np.float32)
    faces = [Face(np.zeros(4, np.float32), 0.9, np.zeros((5, 2), np.float32), landmarks68=lm68),
             Face(np.zeros(4, np.float32), 0.9, np.zeros((5, 2), np.float32))]
    mats = np.stack([np.array([[0.32, 0, 0], [0, 0.32, 0]])] * 2)
    crops = [np.zeros((size, size, 3), np.uint8)] * 2
    got = {}
    for kernels in ("host", "device"):
        cfg = PipelineConfig(**SYN, kernels=kernels, landmarker="2dfan4", masks=("box", "area"))
        with FaceSwapper.open(cfg) as sw:
            k = sw.kernels
            if kernels == "host":
                got[kernels] = np.stack(k._masks(crops, crops, list(mats), faces))
            else:
                t = torch.zeros((2, 3, size, size))
                got[kernels] = k._masks(t, t, torch.from_numpy(mats), faces).numpy()
            box = np.asarray(k.box if kernels == "host" else k.mask.numpy())
    np.testing.assert_allclose(got["device"], got["host"], atol=1e-5)
    np.testing.assert_array_equal(got["host"][1], box)  # no 68 points: the box alone
    assert got["host"][0].sum() < 0.8 * box.sum()      # 68 points: the area limits it
