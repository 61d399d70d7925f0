"""The web page in headless Chromium (Playwright): upload the two example photos, see the result.

Needs the ``playwright`` Python package and a system Chromium (Debian: ``apt-get install -y
chromium``); ``playwright install`` (a browser download) is never used.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright not installed: pip install playwright")

from fusionrt.serve.loadtest import ServerProcess  # noqa: E402

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


@pytest.mark.slow
def test_upload_two_photos_and_see_result_and_timings(page, astronaut_path, grace_path,
                                                      tmp_path):
    page.wait_for_function("document.getElementById('version').textContent.includes('classic')")
    page.set_input_files("#source", str(astronaut_path))
    page.set_input_files("#target", str(grace_path))
    page.click("#go")
    page.wait_for_function("document.getElementById('result').naturalWidth > 0")
    size = page.evaluate("[document.getElementById('result').naturalWidth, "
                         "document.getElementById('result').naturalHeight]")
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
    page.wait_for_function("document.getElementById('status').className === 'error'")
    assert "error 422" in page.text_content("#status")
    assert "no face found" in page.text_content("#status")
    assert page.evaluate("document.getElementById('result').style.display") != "block"
