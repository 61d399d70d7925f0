"""Engine cache: round trip, and every kind of bad entry is detected, deleted and rebuilt."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest

from fusionrt.runtime import cache as cache_mod
from fusionrt.runtime.cache import MAGIC, EngineCache, Fingerprint, cache_root


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONRT_HOME", str(tmp_path / "home"))


@pytest.fixture
def fp() -> Fingerprint:
    return Fingerprint(onnx_sha256="ab" * 32, precision="fp16", batch_profile="1:4:8",
                       engine="trt", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
                       tensorrt="10.13.0", onnxruntime="1.22.0", cuda="12.8",
                       torch="2.13.0", fusionrt="0.1.0", builder="opt3")


@pytest.fixture
def cache() -> EngineCache:
    return EngineCache()


PAYLOAD = bytes(range(256)) * 64  # 16 KiB, every byte value


def test_cache_root_follows_fusionrt_home(tmp_path):
    assert cache_root() == tmp_path / "home" / "engines"
    assert EngineCache().root == cache_root()


def test_key_is_stable_and_sensitive(fp):
    assert fp.key() == Fingerprint.from_dict(fp.to_dict()).key()
    assert len(fp.key()) == 64
    assert dataclasses.replace(fp, tensorrt="10.14.0").key() != fp.key()
    assert dataclasses.replace(fp, batch_profile="1:8:8").key() != fp.key()


def test_slot_keeps_versions_out_of_the_file_name(fp, cache):
    newer = dataclasses.replace(fp, tensorrt="10.14.0")
    other_gpu = dataclasses.replace(fp, gpu_name="NVIDIA L4", compute_capability="8.9")
    assert cache.path_for(newer) == cache.path_for(fp)
    assert cache.path_for(other_gpu) != cache.path_for(fp)


def test_round_trip_bytes(fp, cache):
    path = cache.put(fp, PAYLOAD)
    assert path.is_file() and path.read_bytes().startswith(MAGIC)
    assert cache.get(fp) == path
    assert cache.read(fp) == PAYLOAD


def test_round_trip_from_file(fp, cache, tmp_path):
    src = tmp_path / "model.plan"
    src.write_bytes(PAYLOAD)
    cache.put(fp, src)
    assert cache.read(fp) == PAYLOAD


def test_miss_returns_none(fp, cache):
    assert cache.get(fp) is None
    assert cache.read(fp) is None


def _corrupt_cases():
    def truncate(p):
        data = p.read_bytes()
        p.write_bytes(data[:-100])

    def flip_payload_byte(p):
        data = bytearray(p.read_bytes())
        data[-10] ^= 0xFF
        p.write_bytes(bytes(data))

    def bad_magic(p):
        data = p.read_bytes()
        p.write_bytes(b"NOTCACHE" + data[8:])

    def truncated_header(p):
        p.write_bytes(p.read_bytes()[:20])

    return {"truncated": (truncate, "payload is"), "flipped byte": (flip_payload_byte, "sha256"),
            "bad magic": (bad_magic, "bad magic"), "header cut": (truncated_header, "header")}


@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_bad_entry_detected_deleted_rebuilt(case, fp, cache, caplog):
    damage, words = _corrupt_cases()[case]
    path = cache.put(fp, PAYLOAD)
    damage(path)
    with caplog.at_level(logging.WARNING, logger="fusionrt.runtime.cache"):
        assert cache.get(fp) is None
    assert words in caplog.text and "rebuilt" in caplog.text
    assert not path.exists()

    damage_again = cache.put(fp, PAYLOAD)
    damage(damage_again)
    calls = []
    payload, built = cache.get_or_build(fp, lambda: calls.append(1) or b"rebuilt plan")
    assert (payload, built, calls) == (b"rebuilt plan", True, [1])
    assert cache.read(fp) == b"rebuilt plan"


def test_stale_fingerprint_is_rebuilt(fp, cache, caplog):
    """An entry built with another TensorRT version sits at the same path; it must not load."""
    path = cache.put(fp, PAYLOAD)
    upgraded = dataclasses.replace(fp, tensorrt="10.14.0")
    with caplog.at_level(logging.WARNING, logger="fusionrt.runtime.cache"):
        assert cache.get(upgraded) is None
    assert "stale fingerprint" in caplog.text and "10.13.0" in caplog.text
    assert not path.exists()
    payload, built = cache.get_or_build(upgraded, lambda: b"new plan")
    assert built and payload == b"new plan"
    assert cache.read(upgraded) == b"new plan"
    assert cache.read(fp) is None  # and the old fingerprint no longer matches the new entry


def test_foreign_entry_at_path_is_rejected(fp, cache, caplog):
    """A file copied over another slot's path (fingerprint in header ≠ asked for)."""
    other = dataclasses.replace(fp, onnx_sha256="cd" * 32)
    src = cache.put(other, PAYLOAD)
    dst = cache.path_for(fp)
    dst.write_bytes(src.read_bytes())
    with caplog.at_level(logging.WARNING, logger="fusionrt.runtime.cache"):
        assert cache.get(fp) is None
    assert "onnx_sha256" in caplog.text and not dst.exists()


def test_get_or_build_hits_without_building(fp, cache):
    cache.put(fp, PAYLOAD)
    payload, built = cache.get_or_build(fp, lambda: pytest.fail("must not rebuild"))
    assert (payload, built) == (PAYLOAD, False)


def test_failed_write_leaves_no_temp_and_keeps_old_entry(fp, cache, monkeypatch):
    cache.put(fp, PAYLOAD)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        cache.put(fp, b"half-written new plan")
    monkeypatch.undo()
    folder = cache.path_for(fp).parent
    assert [p.name for p in folder.iterdir()] == [cache.path_for(fp).name]
    assert cache.read(fp) == PAYLOAD


def test_build_failure_stores_nothing(fp, cache):
    def fail():
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        cache.get_or_build(fp, fail)
    assert not cache.path_for(fp).parent.exists() or not os.listdir(cache.path_for(fp).parent)


def test_runtime_fields_never_raise_and_name_versions():
    fields = cache_mod.runtime_fingerprint_fields()
    assert set(fields) == {"gpu_name", "compute_capability", "tensorrt", "onnxruntime", "cuda",
                           "torch", "fusionrt"}
    import onnxruntime
    assert fields["onnxruntime"] == onnxruntime.__version__


def test_for_model_hashes_the_file(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph bytes")
    a = Fingerprint.for_model(onnx, engine="trt", precision="fp32", batch_profile="1:1:1")
    onnx.write_bytes(b"other graph bytes")
    b = Fingerprint.for_model(onnx, engine="trt", precision="fp32", batch_profile="1:1:1")
    assert a.onnx_sha256 != b.onnx_sha256 and a.key() != b.key()
    import hashlib
    assert b.onnx_sha256 == hashlib.sha256(b"other graph bytes").hexdigest()
