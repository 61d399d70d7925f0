"""The install itself: one OpenCV wheel, and the README's first command on a fresh virtualenv."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPENCV_DISTS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                "opencv-contrib-python-headless")


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def test_exactly_one_opencv_wheel_is_installed():
    # Two OpenCV wheels write the same cv2/ folder; whichever installs last wins, silently.
    present = [d for d in OPENCV_DISTS if _installed(d)]
    assert present == ["opencv-python"], present


def test_readme_first_lines_are_the_two_commands():
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.strip()]
    code = [ln for ln in lines[:8] if ln.startswith(("pip ", "python"))]
    assert code[0].startswith("pip install -e . && fusionrt swap --source examples/astronaut.png")
    assert code[1].endswith("python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\npython -m pytest -q " in ci


@pytest.mark.slow
def test_fresh_virtualenv_install_runs_the_main_job(tmp_path):
    """README line 1 in a new virtualenv (no system site-packages): install, then swap."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = subprocess.run([py, "-m", "pip", "install", "-q", str(ROOT)], capture_output=True,
                         text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-2000:]
    check = subprocess.run([py, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    out = tmp_path / "out.png"
    env = {**os.environ, "FUSIONRT_HOME": str(tmp_path / "home")}
    run = subprocess.run([env_dir / "bin" / "fusionrt", "swap", "--source",
                          str(ROOT / "examples/astronaut.png"), "--target",
                          str(ROOT / "examples/grace_hopper.jpg"), "-o", str(out)],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.is_file() and out.stat().st_size > 10_000
    assert "classic" in (run.stdout + run.stderr)
    assert sys.version_info >= (3, 10)
