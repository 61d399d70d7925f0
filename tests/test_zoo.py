"""The zoo's metadata: well-formed, self-consistent, round-trips through ONNX metadata, and
carries the facts the pipeline needs (preprocessing, template, source-embedding transform)."""

from __future__ import annotations

import re

import pytest

from fusionrt.errors import ModelError
from fusionrt.models.spec import spec_from_metadata
from fusionrt.models.zoo import ZOO, get_spec
from fusionrt.pipeline.host.align import get_template

SPECS = list(ZOO.values())
HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_spec_is_well_formed(spec):
    assert ZOO[spec.name] is spec
    assert spec.task in {"detect", "landmark", "embed", "convert", "swap", "occlude", "parse",
                         "enhance"}
    assert spec.inputs and spec.outputs and spec.license and spec.source.startswith("https://")
    assert spec.preprocess.channel_order in {"RGB", "BGR"}
    assert all(s > 0 for s in spec.preprocess.std)
    if spec.builtin:
        assert spec.url is None
        return
    assert spec.url.startswith("https://")
    assert spec.sha256 is None or HEX64.fullmatch(spec.sha256)
    assert spec.size is None or spec.size > 0
    if spec.sha256 is None:
        assert not spec.sha256_verified and "sha256" in spec.notes  # says why
    names = {t.name for t in spec.inputs + spec.outputs}
    assert set(spec.extra.get("unverified_io", ())) <= names


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_spec_round_trips_through_onnx_metadata(spec):
    meta = spec.to_metadata(exporter="test")
    assert spec_from_metadata(meta) == spec and meta["fusionrt.exporter"] == "test"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_template_is_known_to_align(spec):
    if spec.template is not None:
        assert get_template(spec.template).name == spec.template


def test_inswapper_128_matches_the_published_file():
    spec = get_spec("inswapper_128")
    assert spec.sha256 == "e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af"
    assert spec.size == 554_253_681 and spec.sha256_verified
    assert [t.name for t in spec.inputs] == ["target", "source"]
    assert spec.input("target").shape == ("N", 3, 128, 128)
    assert spec.input("source").shape == ("N", 512)
    assert spec.template == "arcface_128"
    assert spec.preprocess.mean == (0.0, 0.0, 0.0) and spec.preprocess.std == (255.0,) * 3


def test_inswapper_source_embedding_facts():
    extra = get_spec("inswapper_128").extra
    assert extra["source_transform"] == "emap" and extra["emap"]["initializer_index"] == -1
    assert extra["emap"]["shape"] == [512, 512] and extra["embedder"] in ZOO
    assert "clip" in extra["output_denorm"]


def test_inswapper_fp16_shares_the_contract_but_needs_trust():
    fp32, fp16 = get_spec("inswapper_128"), get_spec("inswapper_128_fp16")
    assert fp16.inputs == fp32.inputs and fp16.outputs == fp32.outputs
    assert fp16.preprocess == fp32.preprocess
    assert fp16.sha256 is None and not fp16.sha256_verified and "models-3.0.0" in fp16.url


def test_arcface_contract():
    spec = get_spec("arcface_w600k_r50")
    assert spec.sha256 == "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43"
    assert spec.size == 174_383_860 and spec.sha256_verified
    assert spec.inputs[0].name == "input.1" and spec.outputs[0].shape == ("N", 512)
    assert spec.preprocess.mean == (127.5,) * 3 and spec.preprocess.std == (127.5,) * 3
    assert spec.preprocess.channel_order == "RGB" and spec.template == "arcface_112"


def test_simswap_uses_imagenet_normalisation_in_pixels():
    spec = get_spec("simswap_256")
    mean = tuple(round(m * 255, 3) for m in (0.485, 0.456, 0.406))
    std = tuple(round(s * 255, 3) for s in (0.229, 0.224, 0.225))
    assert spec.preprocess.mean == mean and spec.preprocess.std == std
    assert spec.template == "arcface_112_v1" and spec.extra["embedder"] in ZOO
    assert "no ImageNet de-normalisation" in spec.extra["output_denorm"]


def test_swappers_name_their_embedder_and_output_mapping():
    for spec in SPECS:
        if spec.task == "swap":
            assert get_spec(spec.extra["embedder"]).task == "embed"
            assert spec.extra["source_transform"] in {"emap", "l2norm", "converter_l2norm",
                                                      "converter", "image"}
            assert spec.extra["output_denorm"]
            if spec.extra["source_transform"].startswith("converter"):
                assert get_spec(spec.extra["converter"]).task == "convert"


def test_unknown_name_lists_known_ones():
    with pytest.raises(ModelError, match=r"model 'nope' \| unknown; expected one of: .*_fp16"):
        get_spec("nope")
