"""``fusionrt models …`` through ``fusionrt.cli.main``: exit codes, one-line errors, output."""

from __future__ import annotations

import functools
import hashlib
import re
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


def listing(out: str) -> tuple[list[str], dict[str, tuple[str, list[str]]]]:
    """``models list`` output → (group titles in order, name → (its group title, [installed,
    size, sha256, licence])). Rows are indented; a title line is not; columns are 2+ spaces
    apart."""
    lines = out.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip())[:4] == ["NAME", "INSTALLED", "SIZE", "SHA256"]
    titles, rows = [], {}
    for line in lines[1:]:
        if line.startswith("  "):
            name, *cols = re.split(r"\s{2,}", line.strip())
            assert name not in rows and titles  # each model once, under a title
            rows[name] = (titles[-1], cols)
        else:
            titles.append(line)
    return titles, rows


def test_list_shows_every_model(capsys):
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    _, rows = listing(out)
    assert set(rows) == set(zoo.ZOO)
    assert rows["retinaface_mnet025"][1][0] == "built in"
    assert rows["retinaface_mnet025"][1][2] == "package"
    assert rows["inswapper_128"][1][:3] == ["not installed", "528.6 MiB", "verified"]
    assert rows["2dfan4"][1][0] == "not installed" and rows["2dfan4"][1][2] == "needs --trust"


def test_list_groups_by_task_with_titles(capsys, fusionrt_home, monkeypatch):
    from fusionrt.cli.models import TASK_ORDER, task_title
    odd = replace(zoo.get_spec(NAME), name="odd_model", task="frobnicate")
    monkeypatch.setitem(zoo.ZOO, "odd_model", odd)
    synthetic = fusionrt_home / "synthetic" / "2dfan4.onnx"
    synthetic.parent.mkdir(parents=True)
    synthetic.write_bytes(b"stand-in")  # ``installed`` looks for the file only
    titles, rows = listing(run(capsys, "models", "list")[1])
    tasks = list(dict.fromkeys(s.task for s in zoo.ZOO.values()))
    known = sorted((t for t in tasks if t in TASK_ORDER), key=TASK_ORDER.index)
    assert titles == [task_title(t) for t in known + [t for t in tasks if t not in TASK_ORDER]]
    assert titles[:2] == ["Detectors (detect)", "Landmarkers (landmark)"]
    assert titles[-1] == "frobnicate"  # an unknown task: its raw name, after the known ones
    for name, spec in zoo.ZOO.items():
        assert rows[name][0] == task_title(spec.task)
    assert "Swappers (swap)" in titles and "Embedders (embed)" in titles
    assert rows["2dfan4"][1][0] == "synthetic" and rows["odd_model"][0] == "frobnicate"


def test_import_then_list_path_verify(capsys, model_file, fusionrt_home):
    code, out, _ = run(capsys, "models", "import", NAME, str(model_file))
    dest = fusionrt_home / "models" / f"{NAME}.onnx"
    assert code == 0 and out.strip() == str(dest) and dest.read_bytes() == model_file.read_bytes()
    code, out, _ = run(capsys, "models", "list")
    assert listing(out)[1][NAME][1][0] == "real"
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
