"""The web page in headless Chromium (Playwright): upload the two example photos, see the result.

Needs the ``playwright`` Python package and a system Chromium (Debian: ``apt-get install -y
chromium``); ``playwright install`` (a browser download) is never used.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright not installed: pip install playwright")

from fusionrt.serve.loadtest import ServerProcess  # noqa: E402

expect = sync_api.expect  # waits in Playwright's own world: the page's CSP forbids the eval
# that page.wait_for_function("...") needs

CHROMIUM = os.environ.get("FUSIONRT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set FUSIONRT_CHROMIUM)")


@pytest.fixture
def page(tmp_path, fusionrt_home):
    env = {**os.environ, "FUSIONRT_HOME": str(fusionrt_home)}
    with ServerProcess(["--swapper", "classic", "--jobs-dir", str(tmp_path / "jobs")],
                       tmp_path / "server.log", env) as srv, sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=ARGS[1:])
        try:
            pg = ctx.new_page()
            pg.set_default_timeout(60_000)
            pg.goto(srv.url + "/")
            yield pg
        finally:
            ctx.close()


def _result_size(page) -> list[int]:
    expect(page.locator("#result")).to_be_visible()
    return page.locator("#result").evaluate(
        "img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")


@pytest.mark.slow
def test_upload_two_photos_and_see_result_and_timings(page, astronaut_path, grace_path,
                                                      tmp_path):
    expect(page.locator("#version")).to_contain_text("classic")
    page.set_input_files("#source", str(astronaut_path))
    page.set_input_files("#target", str(grace_path))
    page.click("#go")
    size = _result_size(page)
    assert size == [512, 600]  # the target's size
    assert "1 face(s) swapped by v1-classic" in page.text_content("#status")
    stages = page.eval_on_selector_all("#timings tbody td:first-child",
                                       "tds => tds.map(td => td.textContent)")
    assert {"decode", "detect", "swap", "paste", "encode"} <= set(stages)
    assert page.text_content("#timings tbody th:last-child").replace(".", "").isdigit()


@pytest.mark.slow
def test_error_is_shown_for_a_source_without_face(page, grace_path, tmp_path):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((128, 128, 3), 200, np.uint8))
    page.set_input_files("#source", str(blank))
    page.set_input_files("#target", str(grace_path))
    page.click("#go")
    expect(page.locator("#status")).to_have_class("error")
    assert "error 422" in page.text_content("#status")
    assert "no face found" in page.text_content("#status")
    assert page.evaluate("document.getElementById('result').style.display") != "block"


# -- video jobs and stale results --------------------------------------------------------------
def _clip(path: Path, frames: int) -> Path:
    from videos import make_test_video  # tests/videos.py
    return make_test_video(path, frames / 10, 10, (320, 240), audio=False)


def _job(page) -> dict:
    """The job behind the download link, read from the API the page uses."""
    return page.evaluate("fetch(document.getElementById('download').href.replace(/\\/result$/, "
                         "'')).then(r => r.json())")


@pytest.mark.slow
def test_video_job_shows_progress_and_offers_the_result(page, astronaut_path, tmp_path):
    page.set_input_files("#source", str(astronaut_path))
    page.set_input_files("#video", str(_clip(tmp_path / "c.mp4", 12)))
    page.fill("#crf", "30")
    page.click("#video-go")
    expect(page.locator("#download")).to_be_visible()
    assert "video done: 12 / 12 frames by v1-classic" in page.text_content("#status")
    assert page.evaluate("document.getElementById('progress').value") == 1
    assert page.is_hidden("#cancel") and page.is_enabled("#video-go")
    job = _job(page)
    assert job["state"] == "succeeded" and job["crf"] == 30 and job["frames_done"] == 12
    got = page.evaluate("fetch(document.getElementById('download').href)"
                        ".then(async r => [r.status, r.headers.get('content-type'), "
                        "(await r.arrayBuffer()).byteLength])")
    assert got[0] == 200 and got[1] == "video/mp4" and got[2] > 1000


@pytest.mark.slow
def test_running_video_job_can_be_cancelled(page, astronaut_path, tmp_path):
    page.set_input_files("#source", str(astronaut_path))
    page.set_input_files("#video", str(_clip(tmp_path / "long.mp4", 400)))
    page.click("#video-go")
    expect(page.locator("#status")).to_have_text(re.compile(r"^video running: \d+ / 400"))
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text(re.compile(r"^job cancelled after \d+ / 400"))
    assert page.is_hidden("#cancel") and page.is_hidden("#download")
    assert page.is_enabled("#video-go")


@pytest.mark.slow
def test_an_error_clears_the_previous_result(page, astronaut_path, grace_path, tmp_path):
    page.set_input_files("#source", str(astronaut_path))
    page.set_input_files("#target", str(grace_path))
    page.select_option("#format", "png")
    page.click("#go")
    assert _result_size(page) == [512, 600] and page.is_visible("#timings")
    page.set_input_files("#video", str(astronaut_path))  # an image where a video belongs
    page.click("#video-go")
    expect(page.locator("#status")).to_have_class("error")
    assert "error 400: upload 'video' | is an image" in page.text_content("#status")
    assert page.evaluate("document.getElementById('result').style.display") != "block"
    assert page.is_hidden("#timings") and page.is_hidden("#download")
    assert page.is_enabled("#video-go")


def test_page_has_no_inline_code_or_styles():
    """The CSP allows only the page's own files: no <style>, inline <script> or on* handler."""
    static = Path(__file__).resolve().parent.parent / "fusionrt" / "serve" / "static"
    html = (static / "index.html").read_text()
    assert "<style" not in html and " style=" not in html
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/app.js">']
    assert "</script>" in html and not re.search(r"<script[^>]*>\s*\S+\s*</script>", html)
    assert not re.search(r"\son[a-z]+\s*=", html)
    assert '<link rel="stylesheet" href="/static/app.css">' in html
