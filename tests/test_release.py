"""The release pipeline: a new version appears whole or not at all, a failing gate or load
leaves the repository byte-for-byte as it was, versions list and roll back."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2",
                    reason="needs tritonclient: pip install 'tritonclient[http,grpc]'")
pytest.importorskip("torch", reason="synthetic models and their re-export need torch")

from fusionrt.errors import EngineError, InputError, ModelError
from fusionrt.triton.configs import parse_pbtxt
from fusionrt.triton.notify import Server, parse_servers
from fusionrt.triton.release import ReleaseOptions, release
from fusionrt.triton.repository import RepoOptions, write_repository
from fusionrt.triton.versions import list_versions, rollback, served_version


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".fusionrt.lock"}


@pytest.fixture(scope="module")
def base_repo(tmp_path_factory, synthetic_store):
    import os
    old = os.environ.get("FUSIONRT_HOME")
    os.environ["FUSIONRT_HOME"] = str(synthetic_store)
    try:
        root = tmp_path_factory.mktemp("base") / "repo"
        write_repository(root, RepoOptions(allow_synthetic=True, det_size=320))
    finally:
        os.environ.pop("FUSIONRT_HOME") if old is None else os.environ.update(FUSIONRT_HOME=old)
    return root


@pytest.fixture
def repo(base_repo, tmp_path, synthetic_home) -> Path:
    dest = tmp_path / "models" / "repo"
    shutil.copytree(base_repo, dest)
    return dest


def opts(**kw) -> ReleaseOptions:
    kw.setdefault("precisions", ("fp32", "fp16"))
    kw.setdefault("allow_synthetic", True)
    kw.setdefault("bench_runs", 2)
    return ReleaseOptions(**kw)


@pytest.mark.slow
def test_release_versions_and_rollback(repo):
    before = snapshot(repo)
    r = release("inswapper_128", repo, opts(precision="fp16"))
    assert (r.triton_model, r.previous, r.version, r.precision) == ("fusionrt_swap", 1, 2, "fp16")
    assert r.gates["fp32"] == "reference" and "psnr" in r.gates["fp16"]
    assert [row["precision"] for row in r.bench] == ["fp32", "fp16"]
    assert all(row["latency_ms"]["p50"] > 0 for row in r.bench)
    mdir = repo / "fusionrt_swap"
    rel = json.loads((mdir / "2" / "release.json").read_text())
    assert rel["precision"] == "fp16" and rel["synthetic"] is True
    assert snapshot(repo / "fusionrt_swap" / "1") == {
        k.split("/", 2)[2]: v for k, v in before.items() if k.startswith("fusionrt_swap/1/")}
    assert not list(repo.parent.glob(".repo.release-*"))  # staging cleaned up
    vs = list_versions(repo, "swap")
    assert [(v.version, v.serving) for v in vs] == [(1, False), (2, True)]
    assert rollback(repo, "inswapper_128") == (2, 1)
    assert served_version(mdir) == 1
    cfg = parse_pbtxt((mdir / "config.pbtxt").read_text())
    assert list(cfg.version_policy.specific.versions) == [1]
    assert rollback(repo, "fusionrt_swap", to=2) == (1, 2)
    assert parse_pbtxt((mdir / "config.pbtxt").read_text()).version_policy.latest.num_versions == 1


@pytest.mark.slow
def test_failing_gate_leaves_repo_untouched(repo):
    before = snapshot(repo)
    with pytest.raises(ModelError, match="fp16 refused by the quality gate: psnr"):
        release("inswapper_128", repo, opts(thresholds={"fp16": {"psnr": 1e9}}))
    assert snapshot(repo) == before
    assert not list(repo.parent.glob(".repo.release-*"))


@pytest.mark.slow
def test_failed_load_rolls_back(repo):
    before = snapshot(repo)
    dead = Server("http://127.0.0.1:9", timeout_s=2)  # discard port: nothing listens
    with pytest.raises(ModelError, match="failed to load .* rolled back, version 1 keeps"):
        release("inswapper_128", repo, opts(precisions=("fp32",), servers=(dead,)))
    assert snapshot(repo) == before


def test_unknown_model(repo):
    with pytest.raises(InputError, match="model 'nope' \\| not in repository"):
        release("nope", repo, opts())


def test_served_precision_must_be_built(repo):
    with pytest.raises(InputError, match="includes the served precision 'fp16'"):
        release("inswapper_128", repo, opts(precisions=("fp32",), precision="fp16"))


def test_rollback_to_missing_version(repo):
    with pytest.raises(InputError, match="version 7 \\| not in"):
        rollback(repo, "swap", to=7)


def test_rollback_without_older_version(repo):
    with pytest.raises(InputError, match="is the oldest"):
        rollback(repo, "swap")


def test_not_a_repository(tmp_path):
    with pytest.raises(InputError, match="no fusionrt.json"):
        list_versions(tmp_path, "swap")


def test_notify_fusionrt_needs_key():
    with pytest.raises(InputError, match="needs --api-key"):
        parse_servers(None, ["http://127.0.0.1:8000"], None)


def test_gate_flag_format():
    from fusionrt.triton.commands import _thresholds
    assert _thresholds(["fp16:psnr=45", "int8:ssim=0.9"]) == {"fp16": {"psnr": 45.0},
                                                              "int8": {"ssim": 0.9}}
    with pytest.raises(InputError, match="expected PRECISION:METRIC=VALUE"):
        _thresholds(["psnr45"])


# -- notifications, against a recording HTTP server -------------------------------------------

@pytest.fixture
def recorder():
    """A loopback HTTP server answering like Triton (explicit model control) or fusionrt."""
    seen: list[tuple[str, str, dict, bytes]] = []
    replies: dict[tuple[str, str], tuple[int, bytes]] = {}

    class H(BaseHTTPRequestHandler):
        def _answer(self, method):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((method, self.path, dict(self.headers), body))
            code, out = replies.get((method, self.path), (404, b'{"error": "no"}'))
            self.send_response(code)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self):
            self._answer("GET")

        def do_POST(self):
            self._answer("POST")

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen, replies
    srv.shutdown()


def test_triton_explicit_model_control(recorder):
    url, seen, replies = recorder
    replies[("POST", "/v2/repository/models/fusionrt_swap/load")] = (200, b"")
    replies[("GET", "/v2/models/fusionrt_swap/versions/3/ready")] = (200, b"")
    assert "loaded fusionrt_swap v3" in Server(url).load("fusionrt_swap", 3)
    assert [(m, p) for m, p, _, _ in seen] == [
        ("GET", "/v2/models/fusionrt_control/ready"),
        ("POST", "/v2/repository/models/fusionrt_swap/load"),
        ("GET", "/v2/models/fusionrt_swap/versions/3/ready")]


def test_triton_version_not_ready(recorder):
    url, _, replies = recorder
    replies[("POST", "/v2/repository/models/fusionrt_swap/load")] = (200, b"")
    with pytest.raises(EngineError, match="version 3 not ready after load"):
        Server(url).load("fusionrt_swap", 3)


def test_fusionrt_admin_reload(recorder):
    url, seen, replies = recorder
    replies[("POST", "/admin/reload")] = (200, b'{"version": "v2-inswapper_128-abc"}')
    assert "v2-inswapper_128-abc" in Server(url, "fusionrt", "k3y").load("fusionrt_swap", 2)
    _, _, headers, body = seen[-1]
    assert headers["Authorization"] == "Bearer k3y" and json.loads(body) == {}
    replies[("POST", "/admin/reload")] = (422, b'{"error": "reload refused"}')
    with pytest.raises(EngineError, match="reload answered 422"):
        Server(url, "fusionrt", "k3y").load("fusionrt_swap", 2)


def test_serve_command_runs_server_module(monkeypatch, tmp_path):
    import argparse

    from fusionrt.triton import commands
    calls = []
    monkeypatch.setattr(commands, "triton_python", lambda: "/venv/bin/python")
    monkeypatch.setattr(commands.subprocess, "call", lambda cmd, env: calls.append(cmd) or 0)
    p = argparse.ArgumentParser()
    commands.register(p.add_subparsers())
    args = p.parse_args(["triton", "serve", "--repo", str(tmp_path), "--http-port", "9100"])
    assert args.func(args) == 0
    assert calls[0][:3] == ["/venv/bin/python", "-m", "fusionrt.triton.server"]
    assert calls[0][calls[0].index("--http-port") + 1] == "9100"


def test_serve_without_venv(monkeypatch, tmp_path):
    from fusionrt.triton import commands
    monkeypatch.setattr(commands.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("FUSIONRT_TRITON_VENV", str(tmp_path / "none"))
    with pytest.raises(EngineError, match="scripts/triton_venv.sh"):
        commands.triton_python()
