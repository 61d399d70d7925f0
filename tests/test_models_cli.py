"""``fusionrt models …`` through ``fusionrt.cli.main``: exit codes, one-line errors, output."""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import onnx
import pytest
from onnx import TensorProto, helper

from fusionrt.cli import main
from fusionrt.models import zoo
from fusionrt.models.spec import TensorSpec

NAME = "simswap_256"  # the zoo slot overwritten with a tiny spec copy


def tiny_onnx(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.fixture
def model_file(tmp_path, monkeypatch):
    """A tiny ONNX file and a zoo spec copy whose verified sha256 and contract it meets."""
    path = tiny_onnx(tmp_path / "tiny.onnx")
    spec = replace(zoo.get_spec(NAME), inputs=(TensorSpec("x", "float32", ("N", 4)),),
                   outputs=(TensorSpec("y", "float32", ("N", 4)),), extra={},
                   sha256=hashlib.sha256(path.read_bytes()).hexdigest(), sha256_verified=True,
                   size=path.stat().st_size)
    monkeypatch.setitem(zoo.ZOO, NAME, spec)
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_model(capsys):
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["NAME", "TASK", "INSTALLED"]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == set(zoo.ZOO)
    assert rows["retinaface_mnet025"][2] == "real" and rows["inswapper_128"][2] == "none"
    assert rows["inswapper_128"][3:5] == ["528.6", "MiB"]


def test_import_then_list_path_verify(capsys, model_file, fusionrt_home):
    code, out, _ = run(capsys, "models", "import", NAME, str(model_file))
    dest = fusionrt_home / "models" / f"{NAME}.onnx"
    assert code == 0 and out.strip() == str(dest) and dest.read_bytes() == model_file.read_bytes()
    code, out, _ = run(capsys, "models", "list")
    assert [line.split()[2] for line in out.splitlines() if line.startswith(NAME)] == ["real"]
    assert run(capsys, "models", "path", NAME)[:2] == (0, f"{dest}\n")
    assert run(capsys, "models", "verify", NAME)[:2] == (0, f"{NAME}: ok\n")
    dest.write_bytes(b"corrupt")
    code, out, _ = run(capsys, "models", "verify")
    assert code == 4 and f"{NAME}: mismatch (expected " in out and "inswapper_128: missing" in out


def test_path_not_installed_is_one_line_error(capsys):
    code, out, err = run(capsys, "models", "path", "inswapper_128")
    assert code == 4 and out == ""
    assert err == ("fusionrt: error: model 'inswapper_128' | not installed; run: "
                   "fusionrt models pull inswapper_128\n")


def test_path_of_builtin_detector(capsys, fusionrt_home):
    code, out, _ = run(capsys, "models", "path", "retinaface_mnet025")
    assert code == 0 and out.strip() == str(fusionrt_home / "models" / "retinaface_mnet025.onnx")


def test_verify_missing_named_model_fails(capsys):
    code, out, _ = run(capsys, "models", "verify", "arcface_w600k_r50")
    assert code == 4 and out == "arcface_w600k_r50: missing\n"


def test_unknown_model_name(capsys):
    code, _, err = run(capsys, "models", "verify", "nope")
    assert code == 4 and err.count("\n") == 1
    assert err.startswith("fusionrt: error: model 'nope' | unknown")


def test_import_not_onnx(capsys, tmp_path, monkeypatch):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 not protobuf")
    spec = replace(zoo.get_spec(NAME), sha256=hashlib.sha256(bad.read_bytes()).hexdigest(),
                   sha256_verified=True)
    monkeypatch.setitem(zoo.ZOO, NAME, spec)
    code, _, err = run(capsys, "models", "import", NAME, str(bad))
    assert code == 4 and "not a loadable ONNX model" in err and err.count("\n") == 1


def test_import_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "models", "import", NAME, str(tmp_path / "none.onnx"))
    assert code == 2 and "not found" in err


def test_pull_unverified_needs_trust(capsys):
    code, _, err = run(capsys, "models", "pull", "inswapper_128_fp16")
    assert code == 4 and "--trust" in err


def test_pull_from_url(capsys, model_file, tmp_path, monkeypatch, fusionrt_home):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{model_file.name}"
        code, out, _ = run(capsys, "models", "pull", NAME, "--url", url, "--no-progress")
    finally:
        httpd.shutdown()
        httpd.server_close()
    dest = fusionrt_home / "models" / f"{NAME}.onnx"
    assert code == 0 and out.strip() == str(dest) and dest.read_bytes() == model_file.read_bytes()


def test_build_allow_synthetic_makes_a_missing_model_first(capsys, fusionrt_home, monkeypatch):
    """``fusionrt build NAME --allow-synthetic`` on a fresh home: the stand-in is synthesized
    (here at a tiny width, to keep the test fast), then built; without the flag it is refused."""
    pytest.importorskip("torch")
    from fusionrt.builders import synth
    real = synth.ensure_synthetic
    monkeypatch.setattr(synth, "ensure_synthetic",
                        lambda store, names: real(store, names, width=0.0625))
    assert main(["build", "simswap_256"]) != 0
    assert "not installed" in capsys.readouterr().err
    assert main(["build", "simswap_256", "--allow-synthetic"]) == 0
    out = capsys.readouterr().out
    assert "simswap_256  not installed: synthesized a random-weight stand-in" in out
    assert (fusionrt_home / "synthetic" / "simswap_256.onnx").is_file()
