"""FaceFusion's model names in the zoo, the plan and the CLI: the identity converters run as the
plan's ``convert`` stage where FaceFusion runs them, and ``hyperswap_1a_256`` swaps end to end
with synthetic weights on the CPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fusionrt.cli import main
from fusionrt.errors import ModelError
from fusionrt.models.store import ModelStore
from fusionrt.models.zoo import ZOO, get_spec
from fusionrt.pipeline.plan import plan_stages
from fusionrt.pipeline.settings import NEURAL_SWAPPERS, SWAPPER_CHOICES, PipelineConfig

FF_SWAPPERS = ("hyperswap_1a_256", "hyperswap_1b_256", "hyperswap_1c_256")
CONVERTERS = ("crossface_simswap", "crossface_ghost", "crossface_hififace")


def test_facefusion_names_are_in_the_zoo_and_the_choices():
    for name in FF_SWAPPERS:
        spec = get_spec(name)
        assert name in NEURAL_SWAPPERS and name in SWAPPER_CHOICES
        # face_swapper/core.py create_static_model_set: hyperswap options
        assert spec.template == "arcface_128" and spec.preprocess.size == (256, 256)
        assert spec.preprocess.mean == (127.5,) * 3 and spec.preprocess.std == (127.5,) * 3
        assert spec.extra["source_transform"] == "l2norm" and spec.extra["output"] == "tanh"
        assert "models-3.3.0" in spec.url and not spec.sha256_verified
        assert spec.license.startswith("ResearchRAIL") and "stand-in" in spec.notes
    for name in CONVERTERS:
        spec = get_spec(name)
        assert spec.task == "convert" and "models-3.4.0" in spec.url
        assert [t.name for t in spec.inputs] == ["input"] and spec.outputs[0].shape == ("N", 512)
    assert ZOO["simswap_256"].extra["converter"] == "crossface_simswap"
    assert ZOO["simswap_256"].extra["source_transform"] == "converter_l2norm"


# face_swapper/core.py create_static_model_set and prepare_source_embedding / normalize_crop_frame
EMBEDDING_SWAPPERS = {
    # name: (template, size, mean, std, converter, transform, output)
    "ghost_1_256": ("arcface_112_v1", 256, 127.5, 127.5, "crossface_ghost", "converter", "tanh"),
    "ghost_2_256": ("arcface_112_v1", 256, 127.5, 127.5, "crossface_ghost", "converter", "tanh"),
    "ghost_3_256": ("arcface_112_v1", 256, 127.5, 127.5, "crossface_ghost", "converter", "tanh"),
    "hififace_unofficial_256": ("mtcnn_512", 256, 127.5, 127.5, "crossface_hififace",
                                "converter_l2norm", "tanh"),
    "simswap_unofficial_512": ("arcface_112_v1", 512, 0.0, 255.0, "crossface_simswap",
                               "converter_l2norm", "unit"),
}


@pytest.mark.parametrize("name", sorted(EMBEDDING_SWAPPERS))
def test_converter_swappers_carry_facefusions_options(name):
    template, size, mean, std, conv, transform, output = EMBEDDING_SWAPPERS[name]
    spec = get_spec(name)
    assert name in NEURAL_SWAPPERS and spec.template == template
    assert spec.preprocess.size == (size, size) and spec.input("target").shape[2:] == (size, size)
    assert spec.preprocess.mean == (mean,) * 3 and spec.preprocess.std == (std,) * 3
    assert spec.extra["converter"] == conv and spec.extra["source_transform"] == transform
    assert spec.extra.get("output", "unit") == output and "stand-in" in spec.extra["standin"]


def test_list_groups_by_task_and_marks_trust(capsys):
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    titles = [ln for ln in lines if not ln.startswith("  ")]  # one title line per task block
    order = ["Detectors (detect)", "Embedders (embed)", "Identity converters (convert)",
             "Swappers (swap)"]
    assert [t for t in titles if t in order] == order  # pipeline order
    row = next(ln for ln in lines if ln.startswith("  hyperswap_1a_256 "))
    assert "needs --trust" in row and " not installed " in row
    block = lines[lines.index("Swappers (swap)") + 1:]
    assert row in block[:next((i for i, ln in enumerate(block) if not ln.startswith("  ")),
                              len(block))]


def test_simswap_plan_runs_its_converter(synthetic_home):
    plan = plan_stages(PipelineConfig(swapper="simswap_256", allow_synthetic=True))
    assert list(plan.stages) == ["detect", "embed", "convert", "swap"]
    assert plan.stages["convert"].model == "crossface_simswap"
    assert plan.stages["convert"].engine == "ort-cpu"
    hyper = plan_stages(PipelineConfig(swapper="hyperswap_1a_256", allow_synthetic=True))
    assert "convert" not in hyper.stages  # hyperswap takes the unit embedding


def test_missing_converter_is_named(synthetic_store, tmp_path, monkeypatch):
    import shutil
    home = tmp_path / "home"
    shutil.copytree(synthetic_store, home)
    (home / "synthetic" / "crossface_simswap.onnx").unlink()
    monkeypatch.setenv("FUSIONRT_HOME", str(home))
    with pytest.raises(ModelError, match="crossface_simswap"):
        plan_stages(PipelineConfig(swapper="simswap_256", allow_synthetic=True))


@pytest.mark.slow
def test_simswap_swap_gets_the_converted_identity(synthetic_home, astronaut):
    from fusionrt.pipeline.swapper import FaceSwapper
    with FaceSwapper.open(PipelineConfig(swapper="simswap_256", allow_synthetic=True)) as pipe:
        ident = pipe.set_source(astronaut, "astronaut")
        sw = pipe.kernels.swapper
        assert sw.converter is not None and ident.face.embedding_scale > 0
        conv = sw.converter
        raw = ident.face.embedding * ident.face.embedding_scale
        want = conv.run({"input": raw[None].astype(np.float32)})[conv.outputs[0].name]
        want = want / np.linalg.norm(want)
        np.testing.assert_allclose(ident.latent.reshape(-1), want.reshape(-1), rtol=1e-4,
                                   atol=1e-6)


@pytest.mark.slow
def test_hyperswap_synth_then_swap_on_cpu(capsys, tmp_path, astronaut_path, grace_path, grace):
    pytest.importorskip("torch")  # models synth builds reference modules
    assert main(["models", "synth", "hyperswap_1a_256", "--width", "0.0625"]) == 0
    store = ModelStore()  # the embedder came with it: the swap below needs nothing else
    assert store.installed("hyperswap_1a_256") == store.installed("arcface_w600k_r50") \
        == "synthetic"
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines()
               if ln.startswith("  hyperswap_1a_256 "))
    assert " synthetic " in row
    out = tmp_path / "o.png"
    rc = main(["swap", "--swapper", "hyperswap_1a_256", "--allow-synthetic", "--source",
               str(astronaut_path), "--target", str(grace_path), "-o", str(out)])
    assert rc == 0 and out.is_file()
    img = cv2.imread(str(out))
    assert img.shape == grace.shape and not np.array_equal(img, grace)


@pytest.mark.slow
def test_synth_of_a_converter_swapper_also_makes_its_converter(capsys):
    pytest.importorskip("torch")  # models synth builds reference modules
    assert main(["models", "synth", "simswap_256", "--width", "0.0625"]) == 0
    assert ModelStore().installed("crossface_simswap") == "synthetic"


@pytest.mark.parametrize("name", ["crossface_ghost", "ghost_1_256", "simswap_unofficial_512"])
def test_stand_ins_run_the_same_on_ort_and_torch(tmp_path, name):
    pytest.importorskip("torch")
    from fusionrt.builders.synth import synth_model
    from fusionrt.engines.registry import get_engine
    from fusionrt.models.spec import sample_feeds
    store = ModelStore(tmp_path)
    synth_model(store, name, width=0.03)
    art = store.resolve(name, allow_synthetic=True)
    feeds = sample_feeds(art, 2)
    key = art.spec.outputs[0].name
    with get_engine("ort-cpu")(art) as ort, get_engine("torch")(art) as native:
        want, got = np.asarray(ort.run(feeds)[key]), np.asarray(native.run(feeds)[key])
    assert got.shape == want.shape == art.spec.outputs[0].with_batch(2)
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("name,src_template,src_size,mean", [
    ("blendswap_256", "arcface_112", 112, 0.0), ("uniface_256", "ffhq_512", 256, 127.5)])
def test_image_source_swappers_are_contracts_only(name, src_template, src_size, mean):
    # face_swapper/core.py prepare_source_frame: blendswap warps the source with
    # arcface_112_v2 at 112, uniface with ffhq_512 at 256; the target with ffhq_512 at 256
    spec = get_spec(name)
    assert spec.template == "ffhq_512" and spec.preprocess.mean == (mean,) * 3
    assert spec.input("source").shape == ("N", 3, src_size, src_size)
    assert spec.extra["source_template"] == src_template and not spec.extra["runnable"]
    assert name not in NEURAL_SWAPPERS
    with pytest.raises(ModelError, match=f"swapper '{name}' \\| takes the source face as an "
                                         "image"):
        PipelineConfig(swapper=name).check()
