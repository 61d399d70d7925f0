"""The model store: resumable sha256-checked downloads from a loopback server, offline import
with the I/O contract check, verify, and the synth hand-off. Small generated files stand in for
the real models through zoo spec copies (``dataclasses.replace``)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from fusionrt.errors import InputError, ModelError
from fusionrt.models import zoo
from fusionrt.models.spec import TensorSpec
from fusionrt.models.store import ModelStore, mirrored

NAME = "inswapper_128"  # the zoo slot the tests overwrite with a small spec copy
DATA = random.Random(0).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


class LoopbackServer:
    """Serves ``data`` on 127.0.0.1 with optional Range support; can cut the first response."""

    def __init__(self, data: bytes, ranges: bool = True, cut_after: int | None = None):
        self.data, self.ranges, self.cut_after = data, ranges, cut_after
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body, status, start = server.data, 200, 0
                if rng and server.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(server.data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    body, status = server.data[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(server.data) - 1}/{len(server.data)}")
                self.end_headers()
                if server.cut_after is not None and len(server.requests) == 1:
                    body = body[:server.cut_after]  # then the connection closes
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return self.base + "/model.onnx"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """A proxy in the environment must not take the loopback requests."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def serve():
    servers = []

    def start(data: bytes = DATA, **kw) -> LoopbackServer:
        servers.append(LoopbackServer(data, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def tiny_onnx(path: Path, in_name: str = "x", out_name: str = "y", dim: int = 4) -> Path:
    """A one-node ONNX graph (Relu) with input [N, dim] and output [N, dim]."""
    x = helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["N", dim])
    y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", dim])
    graph = helper.make_graph([helper.make_node("Relu", [in_name], [out_name])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def use_spec(monkeypatch, **changes):
    """Put a copy of the zoo's inswapper_128 spec (tiny x→y contract, ``changes``) in the zoo."""
    base = dict(inputs=(TensorSpec("x", "float32", ("N", 4)),),
                outputs=(TensorSpec("y", "float32", ("N", 4)),), url=None, extra={})
    spec = replace(zoo.get_spec(NAME), **{**base, **changes})
    monkeypatch.setitem(zoo.ZOO, NAME, spec)
    return spec


def test_pull_good_hash_installs(monkeypatch, serve):
    use_spec(monkeypatch, sha256=SHA, size=len(DATA))
    server, store = serve(), ModelStore()
    dest = store.pull(NAME, url=server.url, progress=False)
    assert dest == store.real_path(NAME) and dest.read_bytes() == DATA
    assert not dest.with_name(dest.name + ".part").exists()
    assert json.loads((dest.parent / f"{NAME}.json").read_text())["sha256"] == SHA
    assert store.installed(NAME) == "real" and store.resolve(NAME).onnx_path == dest
    store.pull(NAME, url=server.url, progress=False)  # already there: no second request
    assert len(server.requests) == 1


def test_pull_bad_hash_refused_and_nothing_left(monkeypatch, serve):
    use_spec(monkeypatch, sha256="0" * 64, size=len(DATA))
    store = ModelStore()
    with pytest.raises(ModelError, match=f"sha256 mismatch: expected {'0' * 64}, got {SHA}"):
        store.pull(NAME, url=serve().url, progress=False)
    assert not any(store.real_path(NAME).parent.glob(f"{NAME}.onnx*"))


def test_pull_resumes_after_interrupted_download(monkeypatch, serve):
    use_spec(monkeypatch, sha256=SHA, size=len(DATA))
    server, store = serve(cut_after=100_000), ModelStore()
    part = store.real_path(NAME).with_name(f"{NAME}.onnx.part")
    with pytest.raises(ModelError, match=f"interrupted after 100000 of {len(DATA)} bytes"):
        store.pull(NAME, url=server.url, progress=False)
    assert part.stat().st_size == 100_000 and not store.real_path(NAME).exists()
    dest = store.pull(NAME, url=server.url, progress=False)
    assert [r for _, r in server.requests] == [None, "bytes=100000-"]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == SHA and not part.exists()


def test_pull_restarts_when_server_ignores_range(monkeypatch, serve):
    use_spec(monkeypatch, sha256=SHA, size=len(DATA))
    server, store = serve(ranges=False), ModelStore()
    part = store.real_path(NAME).with_name(f"{NAME}.onnx.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 50_000)  # not a prefix of DATA: appending would break the hash
    dest = store.pull(NAME, url=server.url, progress=False)
    assert server.requests[0][1] == "bytes=50000-"
    assert dest.read_bytes() == DATA


def test_pull_unverified_refused_without_trust(monkeypatch, serve):
    use_spec(monkeypatch, sha256=None, size=None, sha256_verified=False)
    server = serve()
    with pytest.raises(ModelError, match="no published sha256; rerun with --trust"):
        ModelStore().pull(NAME, url=server.url, progress=False)
    assert server.requests == []  # refused before any download


def test_pull_unverified_accepted_with_trust(monkeypatch, serve, tmp_path, caplog):
    data = tiny_onnx(tmp_path / "m.onnx").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    use_spec(monkeypatch, sha256="1" * 64, size=None, sha256_verified=False)
    store = ModelStore()
    with pytest.raises(ModelError, match="not verified against a public source"):
        store.pull(NAME, url=serve(data).url, progress=False)
    with caplog.at_level(logging.WARNING, logger="fusionrt.models.store"):
        dest = store.pull(NAME, trust=True, url=serve(data).url, progress=False)
    assert dest.read_bytes() == data and sha in caplog.text
    [result] = store.verify(NAME)
    assert (result.status, result.trusted, result.got) == ("ok", True, sha)


def test_pull_trusted_file_must_meet_contract(monkeypatch, serve):
    use_spec(monkeypatch, sha256=None, size=None, sha256_verified=False)
    store = ModelStore()
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        store.pull(NAME, trust=True, url=serve().url, progress=False)
    assert not any(store.real_path(NAME).parent.glob(f"{NAME}.onnx*"))


def test_mirror_env_replaces_host(monkeypatch, serve):
    server = serve()
    use_spec(monkeypatch, sha256=SHA, size=len(DATA),
             url="https://example.invalid/releases/download/v1/inswapper_128.onnx")
    monkeypatch.setenv("FUSIONRT_MODEL_MIRROR", server.base + "/")
    assert mirrored("https://h.example/a/b.onnx?x=1") == server.base + "/a/b.onnx?x=1"
    ModelStore().pull(NAME, progress=False)
    assert server.requests[0][0] == "/releases/download/v1/inswapper_128.onnx"


def test_pull_unreachable_url(monkeypatch, serve):
    use_spec(monkeypatch, sha256=SHA, size=len(DATA))
    server = serve()
    url = server.url
    server.close()
    with pytest.raises(ModelError, match=r"'inswapper_128' \| cannot reach http://127\.0\.0\.1"):
        ModelStore().pull(NAME, url=url, progress=False)


def test_import_installs_and_verifies(monkeypatch, tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    use_spec(monkeypatch, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    store = ModelStore()
    dest = store.import_file(NAME, path)
    assert dest.read_bytes() == path.read_bytes() and store.path(NAME) == dest
    assert [r.status for r in store.verify(NAME)] == ["ok"]
    dest.write_bytes(dest.read_bytes() + b"\0")  # corrupt it
    [result] = store.verify(NAME)
    assert result.status == "mismatch" and result.expected != result.got


def test_import_wrong_hash(monkeypatch, tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    use_spec(monkeypatch, sha256="2" * 64)
    with pytest.raises(ModelError, match=f"sha256 mismatch for .*expected {'2' * 64}, got"):
        ModelStore().import_file(NAME, path)
    assert not ModelStore().real_path(NAME).exists()


def test_import_not_onnx(monkeypatch, tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n")
    use_spec(monkeypatch, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        ModelStore().import_file(NAME, path)
    assert not ModelStore().real_path(NAME).exists()


def test_import_missing_file(monkeypatch, tmp_path):
    use_spec(monkeypatch, sha256=SHA)
    with pytest.raises(InputError, match="not found"):
        ModelStore().import_file(NAME, tmp_path / "nope.onnx")


@pytest.mark.parametrize("kwargs, message", [
    (dict(in_name="input"), r"input 'x' \| missing from the file \(it has: input\)"),
    (dict(dim=5), r"input 'x' \| got shape \(N, 5\); expected \(N, 4\)"),
    (dict(out_name="z"), r"output 'y' \| missing from the file \(it has: z\)"),
])
def test_import_contract_mismatch_names_tensor(monkeypatch, tmp_path, kwargs, message):
    path = tiny_onnx(tmp_path / "m.onnx", **kwargs)
    use_spec(monkeypatch, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(ModelError, match=message):
        ModelStore().import_file(NAME, path)
    assert not ModelStore().real_path(NAME).exists()


def test_unverified_io_name_matched_by_position(monkeypatch, tmp_path, caplog):
    path = tiny_onnx(tmp_path / "m.onnx", out_name="683")
    use_spec(monkeypatch, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
             extra={"unverified_io": ["y"]})
    with caplog.at_level(logging.WARNING, logger="fusionrt.models.store"):
        ModelStore().import_file(NAME, path)
    assert "named '683' in this file" in caplog.text


def test_verify_all_reports_missing_and_builtin():
    status = {r.name: r.status for r in ModelStore().verify()}
    assert set(status) == set(zoo.ZOO)
    assert status["retinaface_mnet025"] == "builtin" and status["inswapper_128"] == "missing"
    ModelStore().path("retinaface_mnet025")  # extracts the built-in weights
    assert ModelStore().verify("retinaface_mnet025")[0].status == "ok"


def test_synth_delegates_to_build_synth(monkeypatch):
    synth = pytest.importorskip("fusionrt.builders.synth")
    calls = []

    def fake(name, out_path, seed=0, width=1.0):
        calls.append((name, out_path, seed, width))
        out_path.write_bytes(b"onnx")
        return out_path

    monkeypatch.setattr(synth, "synthesize", fake)
    store = ModelStore()
    out = synth.synth_model(store, "simswap_256", seed=3, width=0.25)
    assert calls == [("simswap_256", store.synthetic_path("simswap_256"), 3, 0.25)]
    assert out == store.synthetic_path("simswap_256")
    assert store.installed("simswap_256") == "synthetic"


def test_pull_replaces_a_corrupted_install(monkeypatch, serve):
    use_spec(monkeypatch, sha256=SHA, size=len(DATA))
    server, store = serve(), ModelStore()
    dest = store.pull(NAME, url=server.url, progress=False)
    dest.write_bytes(b"corrupt")
    assert store.pull(NAME, url=server.url, progress=False).read_bytes() == DATA
    assert len(server.requests) == 2


def test_ensure_synthetic_builds_only_what_is_missing(tmp_path):
    pytest.importorskip("torch")
    from fusionrt.builders.synth import ensure_synthetic
    store = ModelStore(tmp_path)
    built = ensure_synthetic(store, ["arcface_w600k_r50"], width=0.05)
    assert list(built) == ["arcface_w600k_r50"] and store.installed("arcface_w600k_r50") == "synthetic"
    before = store.synthetic_path("arcface_w600k_r50").stat().st_mtime_ns
    assert ensure_synthetic(store, ["arcface_w600k_r50"], width=0.05) == {}
    assert store.synthetic_path("arcface_w600k_r50").stat().st_mtime_ns == before
    with pytest.raises(ModelError):
        ensure_synthetic(store, ["no_such_model"])
