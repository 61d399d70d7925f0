"""The service against the bad inputs of issue 16: identity memory, streamed body limits and
timeouts, cross-site requests, reload payloads, error bodies, EXIF orientation.

Body tests drive the app through ``httpx.ASGITransport``, which pulls an async request body one
chunk per ``receive``: the tests count how much the server read, and can stall an upload.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from fusionrt.cli import build_parser  # noqa: E402
from fusionrt.errors import InputError  # noqa: E402
from fusionrt.pipeline.settings import PipelineConfig  # noqa: E402
from fusionrt.pipeline.types import Face, Identity  # noqa: E402
from fusionrt.serve.app import create_app  # noqa: E402
from fusionrt.serve.commands import settings_from_args  # noqa: E402
from fusionrt.serve.guards import clean  # noqa: E402
from fusionrt.serve.runtime import IdentityStore  # noqa: E402
from fusionrt.serve.settings import ServeSettings  # noqa: E402
from fusionrt.serve.uploads import ApiError, decode_image  # noqa: E402

KEY = "hardening-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BOUNDARY = "x0x0x0"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
PART = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"target\"; filename=\"t.jpg\""
        "\r\nContent-Type: image/jpeg\r\n\r\n").encode()
CHUNK = 64 * 1024


def _app(home: Path, **kw):
    kw.setdefault("pipeline", PipelineConfig(swapper="classic"))
    return create_app(ServeSettings(jobs_dir=home / "jobs", **kw))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    home = tmp_path_factory.mktemp("hardening_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONRT_HOME", str(home))
        app = _app(home, api_key=KEY, max_delay_ms=1)
        with TestClient(app) as c:
            assert app.state.runtime.wait_ready(120), app.state.runtime.error
            yield c


@pytest.fixture(scope="module")
def photos(astronaut_path, grace_path) -> dict[str, bytes]:
    return {"source": astronaut_path.read_bytes(), "target": grace_path.read_bytes()}


def _error(r, status: int, text: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "request_id"} and text in body["error"], body
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def _asgi(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                             timeout=30)


# -- 11: identities keep an embedding and a face thumbnail, capped by bytes ------------------
def test_identity_of_a_large_photo_keeps_a_thumbnail_and_still_swaps(client, astronaut, photos):
    big = cv2.resize(astronaut, (4096, 4096), interpolation=cv2.INTER_LINEAR)
    jpeg = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    r = client.post("/v1/identities", files={"image": ("big.jpg", jpeg)})
    assert r.status_code == 201, r.text
    rec = client.app.state.identities.get(r.json()["id"])
    assert max(rec.image.shape[:2]) <= 384 and rec.nbytes <= 500_000  # was 48 MB: the photo
    assert rec.nbytes >= rec.image.nbytes and client.app.state.identities.nbytes >= rec.nbytes
    # a reloaded version prepares the identity again from the thumbnail: the face is found
    rec.prepared.clear()
    res = client.post("/v1/swap", files={"target": ("t.jpg", photos["target"])},
                      data={"identity_id": rec.id})
    assert res.status_code == 200 and res.headers["x-faces-swapped"] == "1"
    assert len(rec.prepared) == 1 and rec.nbytes <= 500_000


def _prepared(side: int = 1000) -> tuple[np.ndarray, Identity]:
    img = np.zeros((side, side, 3), np.uint8)
    lmk = np.float32([[450, 470], [550, 470], [500, 520], [460, 570], [540, 570]])
    face = Face(np.float32([400, 400, 600, 600]), 0.99, lmk, np.ones(512, np.float32))
    return img, Identity(face, img, None, np.ones((1, 512), np.float32))


def test_identity_store_evicts_least_recently_used_by_bytes():
    img, prep = _prepared()
    one = IdentityStore(100).add(img, "v1", prep).nbytes
    assert 400_000 < one < 460_000  # 384x384 thumbnail + embedding + latent (photo: 3 MB)
    store = IdentityStore(limit=100, max_bytes=int(2.5 * one))
    a, b = store.add(img, "v1", prep), store.add(img, "v1", prep)
    assert store.get(a.id) is a  # a is now the most recently used
    c = store.add(img, "v1", prep)
    assert store.get(b.id) is None and store.get(a.id) is a and store.get(c.id) is c
    assert len(store) == 2 and store.nbytes == a.nbytes + c.nbytes
    counted = IdentityStore(limit=2)  # the count cap still holds
    ids = [counted.add(img, "v1", prep).id for _ in range(3)]
    assert counted.get(ids[0]) is None and len(counted) == 2


def test_identity_thumbnail_maps_the_face_into_its_pixels():
    img, prep = _prepared()
    rec = IdentityStore(10).add(img, "v1", prep)
    face = rec.prepared["v1"].face
    # crop from 400 - 0.6 * 200 = 280 to 720, 440 px, scaled to 384
    k = 384 / 440
    assert rec.image.shape == (384, 384, 3) and rec.prepared["v1"].image is rec.image
    np.testing.assert_allclose(face.box, (np.float32([400, 400, 600, 600]) - 280) * k, atol=1e-3)
    np.testing.assert_allclose(face.landmarks, (prep.face.landmarks - 280) * k, atol=1e-3)
    assert face.embedding is prep.face.embedding


# -- 12 and 15: body limits while streaming, body timeouts, uploads count as admitted ----------
def test_chunked_upload_over_the_limit_is_413_without_reading_it(fusionrt_home):
    app = _app(fusionrt_home, max_upload_bytes=1_000_000)
    limit = 2 * 1_000_000 + 65536  # two images + framing for /v1/swap
    sent = 0

    async def body():  # no Content-Length: "chunked"; 50 MB if the server reads it all
        nonlocal sent
        yield PART
        while sent < 50_000_000:
            sent += CHUNK
            yield b"\0" * CHUNK

    async def run():
        async with _asgi(app) as c:
            return await c.post("/v1/swap", content=body(), headers=MULTIPART)
    r = asyncio.run(run())
    _error(r, 413, "request | body over 2.1 MB (stopped there); expected at most 2.1 MB")
    assert r.headers["connection"] == "close"
    assert sent <= limit + 2 * CHUNK, f"server read {sent} bytes for a limit of {limit}"


def test_declared_length_over_the_limit_is_413_before_reading(fusionrt_home):
    c = TestClient(_app(fusionrt_home, api_key=KEY))  # no model load: refused first
    _error(c.post("/admin/reload", content=b"{}" + b" " * 70_000, headers=AUTH), 413,
           "request | body 70 KB; expected at most 66 KB")


def test_stalled_upload_is_408_and_a_slow_one_too(fusionrt_home):
    app = _app(fusionrt_home, body_timeout_s=0.3, body_total_s=1.0)

    async def stalled():
        yield PART
        await asyncio.sleep(30)
        yield b"never"

    async def slow():  # a chunk every 0.1 s: never idle, never done
        yield PART
        for _ in range(300):
            await asyncio.sleep(0.1)
            yield b"\0" * 100

    async def run(gen):
        async with _asgi(app) as c:
            t0 = time.perf_counter()
            r = await c.post("/v1/swap", content=gen(), headers=MULTIPART)
            return r, time.perf_counter() - t0
    r, seconds = asyncio.run(run(stalled))
    _error(r, 408, "request | no body bytes for 0.3 s; expected the upload to keep arriving")
    assert seconds < 5 and r.headers["connection"] == "close"
    r, seconds = asyncio.run(run(slow))
    _error(r, 408, "request | body not complete after 1 s")
    assert 0.9 < seconds < 5


def test_uploading_requests_count_against_the_queue(fusionrt_home):
    app = _app(fusionrt_home, queue=1)
    release = asyncio.Event()

    async def held():
        yield PART
        await release.wait()
        yield b"\0" * 100 + f"\r\n--{BOUNDARY}--\r\n".encode()

    async def run():
        async with _asgi(app) as c:
            first = asyncio.create_task(c.post("/v1/swap", content=held(), headers=MULTIPART))
            for _ in range(200):  # until the first upload is in progress
                if app.state.admission.count:
                    break
                await asyncio.sleep(0.05)
            assert app.state.admission.count == 1
            second = await c.post("/v1/swap", files={"target": ("t.jpg", b"x")})
            release.set()
            return second, await first
    second, first = asyncio.run(run())
    _error(second, 429, "queue | full (1 requests in progress)")
    assert first.status_code != 429 and app.state.admission.count == 0


def test_a_real_server_closes_the_connection_of_a_stalled_upload(fusionrt_home):
    uvicorn = pytest.importorskip("uvicorn")
    app = _app(fusionrt_home, body_timeout_s=0.5)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        with socket.create_connection(sock.getsockname(), timeout=10) as c:
            c.sendall(f"POST /v1/identities HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                      f"\r\nContent-Type: {MULTIPART['content-type']}\r\n\r\n".encode()
                      + f"{len(PART):x}\r\n".encode() + PART + b"\r\n")
            t0, got = time.perf_counter(), b""
            while chunk := c.recv(65536):  # b"" once the server closed the connection
                got += chunk
        assert got.startswith(b"HTTP/1.1 408") and b"no body bytes for 0.5 s" in got
        assert time.perf_counter() - t0 < 5
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# -- 13: cross-site requests, security headers, debug-only batch size ---------------------------
def test_cross_origin_state_changes_are_403(fusionrt_home, photos):
    app = _app(fusionrt_home, allow_origins=("http://localhost:3000",))
    c = TestClient(app)  # no `with`: no model load; refusals come first
    image = {"image": ("a.png", photos["source"])}
    _error(c.post("/v1/identities", files=image, headers={"Origin": "http://evil.example"}), 403,
           "origin 'http://evil.example' | cross-origin POST; expected http://testserver")
    _error(c.post("/v1/identities", files=image, headers={"Sec-Fetch-Site": "cross-site"}), 403,
           "cross-site")
    _error(c.delete("/v1/jobs/x", headers={"Origin": "http://localhost:8000"}), 403,
           "cross-origin DELETE")
    _error(c.post("/admin/reload", headers={"Origin": "null", **AUTH}), 403, "origin 'null'")
    # same origin, no Origin (curl), an allowed origin: past the check (503: no model loaded)
    for headers in ({"Origin": "http://testserver"}, {}, {"Origin": "http://LOCALHOST:3000/"}):
        r = c.post("/v1/identities", files=image, headers=headers)
        _error(r, 503, "models | not ready")
    r = c.post("/v1/identities", files=image, headers={"Origin": "http://localhost:3000"})
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert c.get("/healthz", headers={"Origin": "http://evil.example"}).status_code == 200
    assert 'cross_origin"} 4.0' in c.get("/metrics").text


def test_security_headers_on_every_response(client):
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for path in ("/", "/static/app.js", "/healthz", "/nope", "/docs"):
        assert client.get(path).headers["x-content-type-options"] == "nosniff", path
    assert "content-security-policy" not in client.get("/docs").headers  # Swagger UI's CDN


def test_batch_size_header_only_with_debug_headers(client, photos):
    files = {"target": ("t.jpg", photos["target"]), "source": ("s.png", photos["source"])}
    r = client.post("/v1/swap", files=files)
    assert r.status_code == 200 and "x-batch-size" not in r.headers
    settings = client.app.state.settings
    settings.debug_headers = True
    try:
        assert client.post("/v1/swap", files=files).headers["x-batch-size"] == "1"
    finally:
        settings.debug_headers = False


# -- 16: reload payloads are validated ------------------------------------------------------
@pytest.mark.parametrize("body, reason", [
    ({"det_size": "abc"}, "det_size: Input should be a valid integer"),
    ({"det_size": 100}, "det_size: Input should be a multiple of 32"),
    ({"feather": None}, "feather: Input should be a valid number"),
    ({"feather": 2.0}, "feather: Input should be less than or equal to 0.5"),
    ({"score_threshold": "0.5"}, "score_threshold: Input should be a valid number"),
    ({"poisson": 1}, "poisson: Input should be a valid boolean"),
    ({"swapper": "nope"}, "swapper: Input should be 'auto', 'classic'"),
    ({"select": "reference"}, "select: Input should be 'largest' or 'all'"),
    ({"device": "tpu"}, "device: device 'tpu' | unknown; expected cpu, cuda or cuda:N"),
    ([1], "reload | body: Input should be a valid dictionary"),
    ({"enhancer": "nope"}, "enhancer: Input should be 'none', 'gfpgan_1.4'"),
    ({"masks": ["hair"]}, "masks.0: Input should be 'box', 'occlusion', 'area' or 'region'"),
    ({"masks": []}, "masks: List should have at least 1 item"),
    ({"enhancer_blend": 80}, "enhancer_blend: Input should be less than or equal to 1"),
    ({"pixel_boost": -1}, "pixel_boost: Input should be greater than or equal to 0"),
])
def test_reload_body_is_validated(client, body, reason):
    before = client.get("/readyz").json()["version"]
    _error(client.post("/admin/reload", json=body, headers=AUTH), 422, reason)
    assert client.get("/readyz").json()["version"] == before


def test_reload_to_a_cuda_device_on_a_cpu_host_is_422(client):
    from fusionrt.pipeline.plan import check_device
    try:
        check_device("cuda")
        pytest.skip("this machine has a CUDA GPU")
    except Exception:  # noqa: BLE001 - the refusal is what this host should say
        pass
    _error(client.post("/admin/reload", json={"device": "cuda", "feather": 0.1}, headers=AUTH),
           422, "device: device 'cuda' | no such CUDA GPU here")


# -- 17: one error shape, no internals; the API key from a file or the environment -------------
def test_every_error_has_one_shape(client, photos):
    _error(client.get("/nope"), 404, "route '/nope' | not found")
    _error(client.get("/static/nope.js"), 404, "route '/static/nope.js' | not found")
    r = _error(client.get("/v1/swap"), 405, "method GET not allowed; expected POST")
    _error(client.put("/healthz"), 405, "method PUT not allowed")
    _error(client.post("/v1/swap", data={"target": "text"}), 422,
           "request | target: Expected UploadFile, received: str")
    _error(client.post("/v1/identities", files={"image": ("a.png", b"hello" * 50)}), 400,
           "upload 'image' | not an image format Pillow knows")
    assert "0x" not in r["error"]


def test_error_text_has_no_reprs_or_server_paths(tmp_path):
    roots = [str(tmp_path), "/"]
    assert clean("cannot identify image file <_io.BytesIO object at 0x7f00aa>", roots) == \
        "cannot identify image file the upload"
    assert clean(f"video '{tmp_path}/jobs/ab/input.mp4' | cannot be opened", roots) == \
        "video 'input.mp4' | cannot be opened"
    assert clean("create one with POST /v1/identities", roots) == \
        "create one with POST /v1/identities"


def test_api_key_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("FUSIONRT_API_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    parse = build_parser().parse_args
    assert settings_from_args(parse(["serve", "--api-key-file", str(key_file)])).api_key == \
        "from-file"
    assert settings_from_args(parse(["serve"])).api_key is None
    monkeypatch.setenv("FUSIONRT_API_KEY", "from-env")
    assert settings_from_args(parse(["serve"])).api_key == "from-env"
    with pytest.raises(InputError, match="api key file '.*missing' | cannot read"):
        ServeSettings(api_key_file=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match="| empty; expected the key"):
        ServeSettings(api_key_file=tmp_path / "empty")
    with pytest.raises(SystemExit):  # one or the other
        parse(["serve", "--api-key", "k", "--api-key-file", str(key_file)])


def test_serve_flags_for_the_new_limits(capsys):
    args = build_parser().parse_args(
        ["serve", "--allow-origin", "http://a.example", "--allow-origin", "http://b.example:81",
         "--debug-headers", "--body-timeout", "5", "--body-total-timeout", "60",
         "--max-identities", "10", "--max-identity-mb", "8"])
    s = settings_from_args(args)
    assert s.allow_origins == ("http://a.example", "http://b.example:81") and s.debug_headers
    assert (s.body_timeout_s, s.body_total_s) == (5, 60)
    assert (s.max_identities, s.max_identity_bytes) == (10, 8_000_000)
    with pytest.raises(InputError, match="origin 'a.example' | not an origin"):
        ServeSettings(allow_origins=("a.example",))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--api-key-file", "FUSIONRT_API_KEY", "--allow-origin", "--debug-headers",
                 "--body-timeout", "--max-identity-mb"):
        assert flag in text, flag


# -- 2: EXIF orientation ----------------------------------------------------------------------
def test_uploads_are_turned_upright_by_their_exif_orientation():
    from PIL import Image
    stored = np.zeros((32, 64, 3), np.uint8)  # 64 wide, 32 tall: left red, right blue (RGB)
    stored[:, :32] = (255, 0, 0)
    stored[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display" (a phone held upright)
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", exif=exif, quality=95)
    img = decode_image(buf.getvalue(), "target", 4096)
    assert img.shape == (64, 32, 3)  # upright: 32 wide, 64 tall
    upright = cv2.rotate(stored[:, :, ::-1], cv2.ROTATE_90_CLOCKWISE)
    assert np.abs(img.astype(int) - upright.astype(int)).mean() < 8
    assert img[5, 16, 2] > 200 and img[60, 16, 0] > 200  # red on top, blue below (BGR)
    with pytest.raises(ApiError, match="64x32 pixels; expected at most 40"):  # side limit
        decode_image(buf.getvalue(), "target", 40)


def test_reload_accepts_the_post_swap_stages():
    from fusionrt.serve.runtime import reload_changes
    assert reload_changes({"enhancer": "gfpgan_1.4", "masks": ["box", "occlusion"],
                           "enhancer_blend": 0.5}) == {
        "enhancer": "gfpgan_1.4", "masks": ["box", "occlusion"], "enhancer_blend": 0.5}
