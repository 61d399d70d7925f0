"""The pipeline in a real Triton server (PyTriton's tritonserver, CPU) on loopback: HTTP and
gRPC inference, server-side dynamic batching, ``nv_inference_*`` metrics, and a release during
live inference with zero failed requests.

The server runs in the isolated PyTriton venv (scripts/triton_venv.sh; PyTriton pins
numpy < 2); this test process talks to it with tritonclient.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.http", reason="needs tritonclient: pip install "
                    "'tritonclient[http,grpc]'")
pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc]")
pytest.importorskip("torch", reason="synthetic models are built with torch")

import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("FUSIONRT_TRITON_VENV") or ROOT / ".venv-triton")
PY = VENV / "bin" / "python"

pytestmark = pytest.mark.slow


def venv_ready() -> str | None:
    """None when the PyTriton venv works (creating it if missing), else why not."""
    probe = [str(PY), "-c", "import pytriton, fusionrt"]
    if PY.is_file() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return None
    try:
        r = subprocess.run(["bash", str(ROOT / "scripts" / "triton_venv.sh"), str(VENV)],
                           capture_output=True, text=True, timeout=900,
                           check=False)
    except subprocess.TimeoutExpired:
        return "scripts/triton_venv.sh took over 15 min"
    if r.returncode != 0 or subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        return "cannot create the PyTriton venv: " + (r.stderr or r.stdout).strip()[-300:]
    return None


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def server(tmp_path_factory, synthetic_store):
    why = venv_ready()
    if why:
        pytest.skip(why)
    from fusionrt.triton.repository import RepoOptions, write_repository
    old = os.environ.get("FUSIONRT_HOME")
    os.environ["FUSIONRT_HOME"] = str(synthetic_store)
    try:
        repo = tmp_path_factory.mktemp("triton") / "repo"
        write_repository(repo, RepoOptions(allow_synthetic=True, det_size=320))
    finally:
        os.environ.pop("FUSIONRT_HOME") if old is None else os.environ.update(FUSIONRT_HOME=old)
    http, grpc, metrics = free_ports(3)
    log = open(repo.parent / "server.log", "w")
    env = dict(os.environ, FUSIONRT_HOME=str(synthetic_store), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [str(PY), "-m", "fusionrt.triton.server", "--repo", str(repo), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--max-delay-us", "20000"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{http}"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"{url}/v2/models/fusionrt_control/ready", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("triton server did not start:\n" +
                    (repo.parent / "server.log").read_text()[-3000:])
    yield {"repo": repo, "url": url, "http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}",
           "metrics": f"http://127.0.0.1:{metrics}/metrics", "home": synthetic_store}
    proc.send_signal(signal.SIGINT)  # PyTriton stops tritonserver and its stubs on SIGINT
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def pipeline_inputs(mod, target: np.ndarray, source: np.ndarray):
    ins = [mod.InferInput("TARGET", [1, *target.shape], "UINT8"),
           mod.InferInput("SOURCE", [1, *source.shape], "UINT8")]
    ins[0].set_data_from_numpy(target[None])
    ins[1].set_data_from_numpy(source[None])
    return ins


def in_process_reference(repo: Path, home: Path, out: Path, source: Path, target: Path):
    """The same repository's pipeline in-process, in the server's own environment."""
    code = ("import sys, cv2, numpy as np; from fusionrt.triton.repo_pipeline import "
            "build_pipeline; L = build_pipeline(sys.argv[1], warm=False); "
            "L.pipe.set_source(cv2.imread(sys.argv[2])); o, n = L.pipe.process_frame("
            "cv2.imread(sys.argv[3])); np.save(sys.argv[4], o)")
    subprocess.run([str(PY), "-c", code, str(repo), str(source), str(target), str(out)],
                   check=True, capture_output=True,
                   env=dict(os.environ, FUSIONRT_HOME=str(home), PYTHONPATH=str(ROOT)))
    return np.load(out)


def test_http_and_grpc_equal_in_process(server, astronaut, grace, astronaut_path, grace_path,
                                        tmp_path):
    h = thttp.InferenceServerClient(server["http"])
    g = tgrpc.InferenceServerClient(server["grpc"])
    r1 = h.infer("fusionrt_pipeline", pipeline_inputs(thttp, grace, astronaut))
    r2 = g.infer("fusionrt_pipeline", pipeline_inputs(tgrpc, grace, astronaut))
    img = r1.as_numpy("IMAGE")[0]
    assert r1.as_numpy("FACES").tolist() == [[1]] and r1.as_numpy("VERSION").tolist() == [[1]]
    assert np.array_equal(img, r2.as_numpy("IMAGE")[0])
    assert (img != grace).mean() > 0.01
    ref = in_process_reference(server["repo"], server["home"], tmp_path / "ref.npy",
                               astronaut_path, grace_path)
    assert np.array_equal(img, ref)
    # This process has numpy 2 / OpenCV 5 (the server numpy 1 / OpenCV 4): the warps differ by
    # a few grey levels at most, on a small share of the pixels.
    from fusionrt.triton.repo_pipeline import build_pipeline
    here = build_pipeline(server["repo"], warm=False)
    here.pipe.set_source(astronaut.copy())
    mine, _ = here.pipe.process_frame(grace.copy())
    diff = np.abs(mine.astype(int) - img.astype(int))
    assert diff.max() <= 8 and diff.mean() < 0.5


def metric(text: str, name: str, model: str) -> float:
    m = re.search(rf'^{name}{{model="{model}",version="\d+"}} (\S+)$', text, re.MULTILINE)
    assert m, f"{name} for {model} not in /metrics"
    return float(m.group(1))


def settled_count(url: str, name: str, model: str, at_least: float = 0.0) -> tuple[float, str]:
    """``name`` for ``model`` once /metrics has caught up. Triton's counters can lag the last
    replies by a moment (a CI run once read 24 of 32 right after all 32 answers arrived), and
    the pipeline of earlier tests calls fusionrt_swap too: wait until the count is at least
    ``at_least`` and the same in two reads 0.3 s apart (10 s at most)."""
    deadline = time.monotonic() + 10
    last = None
    while True:
        text = urllib.request.urlopen(url).read().decode()
        value = metric(text, name, model)
        if (value == last and value >= at_least) or time.monotonic() > deadline:
            return value, text
        last = value
        time.sleep(0.3)


def test_dynamic_batching_and_metrics(server):
    c = thttp.InferenceServerClient(server["http"], concurrency=16)
    rng = np.random.default_rng(0)
    req0, before = settled_count(server["metrics"], "nv_inference_request_success",
                                 "fusionrt_swap")
    exe0 = metric(before, "nv_inference_exec_count", "fusionrt_swap")

    def one(i):
        ins = [thttp.InferInput("target", [1, 3, 128, 128], "FP32"),
               thttp.InferInput("source", [1, 512], "FP32")]
        ins[0].set_data_from_numpy(rng.random((1, 3, 128, 128), dtype=np.float32))
        lat = rng.standard_normal((1, 512)).astype(np.float32)
        ins[1].set_data_from_numpy(lat / np.linalg.norm(lat))
        return c.async_infer("fusionrt_swap", ins)

    futures = [one(i) for i in range(32)]
    outs = [f.get_result().as_numpy("output") for f in futures]
    assert all(o.shape == (1, 3, 128, 128) for o in outs)
    req1, after = settled_count(server["metrics"], "nv_inference_request_success",
                                "fusionrt_swap", at_least=req0 + 32)
    requests = req1 - req0
    executions = metric(after, "nv_inference_exec_count", "fusionrt_swap") - exe0
    assert requests == 32
    assert executions < requests  # Triton's dynamic batcher merged requests
    assert metric(after, "nv_inference_request_success", "fusionrt_pipeline") >= 1


def test_release_during_live_inference(server, astronaut, grace, monkeypatch):
    from fusionrt.triton.notify import Server, control
    from fusionrt.triton.release import ReleaseOptions, release
    monkeypatch.setenv("FUSIONRT_HOME", str(server["home"]))
    results: list[tuple[str, int]] = []
    stop = threading.Event()

    def client():
        c = thttp.InferenceServerClient(server["http"])
        while not stop.is_set():
            try:
                r = c.infer("fusionrt_pipeline", pipeline_inputs(thttp, grace, astronaut))
                results.append(("ok", int(r.as_numpy("VERSION")[0, 0])))
            except Exception as e:  # noqa: BLE001 - every failure is counted
                results.append((f"error: {e}", -1))

    with ThreadPoolExecutor(2) as pool:
        workers = [pool.submit(client) for _ in range(2)]
        time.sleep(1.0)
        r = release("inswapper_128", server["repo"], ReleaseOptions(
            precisions=("fp16",), precision="fp16", allow_synthetic=True, bench_runs=2,
            servers=(Server(server["url"]),)))
        n = len(results)
        while len(results) < n + 4:
            time.sleep(0.1)
        stop.set()
        for w in workers:
            w.result()
    assert r.version == 2 and r.previous == 1
    failed = [s for s, _ in results if s != "ok"]
    assert failed == []
    versions = [v for _, v in results]
    assert versions[0] == 1 and versions[-1] == 2 and set(versions) == {1, 2}
    assert control(server["url"], {"action": "status"})["versions"]["fusionrt_swap"] == 2
    assert json.loads((server["repo"] / "fusionrt_swap" / "2" / "release.json").read_text())[
        "precision"] == "fp16"
