"""Video jobs in the service: budgets, time limit, cancel/delete, reload mid-job, and job state
that survives a restart (SQLite), with the orphan sweep.

One shared app (classic swapper, 2 frames per batch) for most tests; the restart tests build
their own apps over one jobs folder. Jobs are held mid-way by a ``process_frames`` that waits
on an event in the job thread only (warm-up and image requests pass straight through).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

from fusionrt.pipeline.settings import PipelineConfig  # noqa: E402
from fusionrt.serve import versions  # noqa: E402
from fusionrt.serve.app import create_app  # noqa: E402
from fusionrt.serve.jobstore import DB_NAME, JobStore  # noqa: E402
from fusionrt.serve.settings import ServeSettings  # noqa: E402

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
W, H = 320, 240
BUDGET = W * H * 10  # the 8-frame clip passes, a 12-frame one does not


def _clip(path: Path, frames: int) -> Path:
    from videos import make_test_video  # tests/videos.py
    return make_test_video(path, frames / 10, 10, (W, H), audio=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _clip(tmp_path_factory.mktemp("clips") / "clip.mp4", 8)


def _app(jobs_dir: Path, **kw):
    return create_app(ServeSettings(
        jobs_dir=jobs_dir, pipeline=PipelineConfig(swapper="classic"), api_key=KEY, max_batch=2,
        max_delay_ms=1, max_job_pixels=BUDGET, **kw))


def _started(app) -> TestClient:
    c = TestClient(app).__enter__()
    assert app.state.runtime.wait_ready(120), app.state.runtime.error
    return c


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    c = _started(_app(tmp_path_factory.mktemp("jobs_home") / "jobs"))
    yield c
    c.__exit__(None, None, None)


def _identity(c, astronaut_path: Path) -> str:
    r = c.post("/v1/identities", files={"image": ("a.png", astronaut_path.read_bytes())})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def identity(client, astronaut_path) -> str:
    return _identity(client, astronaut_path)


def _submit(c, clip: Path, identity: str, **data) -> dict:
    r = c.post("/v1/jobs", files={"video": ("c.mp4", clip.read_bytes())},
               data={"identity_id": identity, **data})
    assert r.status_code == 202, r.text
    return r.json()


def _wait(c, job_id: str, until=lambda j: j["state"] not in ("queued", "running"),
          timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = c.get(f"/v1/jobs/{job_id}").json()
        if until(j):
            return j
        time.sleep(0.05)
    raise AssertionError(f"job {job_id}: {j}")


def _error(r, status: int, text: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert text in r.json()["error"], r.json()


@pytest.fixture
def hold(monkeypatch):
    """Job batches after the first wait until ``hold.set()`` (or ``hold.until`` is true)."""
    real = versions.ModelVersion.process_frames
    ev = threading.Event()
    seen: list[str] = []

    def process_frames(self, frames, prepared):
        if threading.current_thread().name == "fusionrt-jobs":
            seen.append(self.version)
            if len(seen) > 1:
                assert ev.wait(30), "test never released the job"
        return real(self, frames, prepared)
    monkeypatch.setattr(versions.ModelVersion, "process_frames", process_frames)
    ev.seen = seen
    yield ev
    ev.set()  # a failed test must not leave the job thread waiting


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# -- budgets ------------------------------------------------------------------------------
def test_job_over_the_pixel_budget_is_422_with_the_figures(client, identity, tmp_path):
    r = client.post("/v1/jobs", files={"video": ("l.mp4", _clip(tmp_path / "l.mp4", 12).read_bytes())},
                    data={"identity_id": identity})
    _error(r, 422, f"video | 320x240 x 12 frames = 921,600 pixels; expected at most {BUDGET:,} "
                   "per job")
    assert not [p for p in client.app.state.jobs.dir.iterdir() if p.name == "l"]


def test_default_budget_passes_1080p_two_minutes_and_refuses_4096_at_the_frame_limit():
    s = ServeSettings()
    assert 1920 * 1080 * 30 * 120 <= s.max_job_pixels < 4096 * 4096 * s.max_video_frames


def test_bad_crf_is_422(client, clip, identity):
    r = client.post("/v1/jobs", files={"video": ("c.mp4", clip.read_bytes())},
                    data={"identity_id": identity, "crf": "60"})
    _error(r, 422, "field 'crf' | 60; expected 0 to 51")


def test_job_over_the_time_limit_fails_and_leaves_no_output(client, clip, identity, hold,
                                                            monkeypatch):
    monkeypatch.setattr(client.app.state.settings, "job_time_limit_s", 0.3)
    j = _submit(client, clip, identity)
    _wait(client, j["id"], lambda j: j["frames_done"] >= 2)
    time.sleep(0.4)
    hold.set()
    j = _wait(client, j["id"])
    assert j["state"] == "failed" and j["result_url"] is None
    assert re.match(r"job \| time limit 0.3 s reached after [24] of 8 frames; expected a "
                    "shorter video", j["error"]), j["error"]
    assert _leftovers(client.app.state.jobs.dir / j["id"]) == []  # no input, no partial video


def test_frames_beyond_the_budget_stop_the_job(client, clip, identity, hold, monkeypatch):
    """A header may promise fewer frames than the file holds: the budget is checked again."""
    j = _submit(client, clip, identity)
    _wait(client, j["id"], lambda j: j["frames_done"] >= 2)
    monkeypatch.setattr(client.app.state.settings, "max_job_pixels", W * H * 3)
    hold.set()
    j = _wait(client, j["id"])
    assert j["state"] == "failed" and "320x240 x 6+ frames (the header said 8) = 460,800 pixels" in j["error"]
    assert _leftovers(client.app.state.jobs.dir / j["id"]) == []


# -- cancel and delete ----------------------------------------------------------------------
def test_delete_running_job_stops_it_and_removes_partial_output(client, clip, identity, hold):
    j = _submit(client, clip, identity)
    _wait(client, j["id"], lambda j: j["frames_done"] >= 2)
    threading.Timer(0.3, hold.set).start()  # the held batch finishes; the next one is not run
    r = client.delete(f"/v1/jobs/{j['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    assert r.json()["frames_done"] == 4 and r.json()["result_url"] is None
    folder = client.app.state.jobs.dir / j["id"]
    assert _leftovers(folder) == []
    _error(client.get(f"/v1/jobs/{j['id']}/result"), 409, "state cancelled; expected succeeded")
    assert client.delete(f"/v1/jobs/{j['id']}").status_code == 204  # now forgotten
    assert not folder.exists()
    _error(client.get(f"/v1/jobs/{j['id']}"), 404, "unknown")


def test_delete_queued_job_cancels_it(client, clip, identity, hold):
    first = _submit(client, clip, identity)
    _wait(client, first["id"], lambda j: j["frames_done"] >= 2)
    second = _submit(client, clip, identity)
    r = client.delete(f"/v1/jobs/{second['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled" and r.json()["started"] is None
    assert _leftovers(client.app.state.jobs.dir / second["id"]) == []
    hold.set()
    assert _wait(client, first["id"])["state"] == "succeeded"
    assert client.get(f"/v1/jobs/{second['id']}").json()["state"] == "cancelled"  # never ran


def test_delete_finished_job_removes_its_files_and_unknown_is_404(client, clip, identity):
    j = _wait(client, _submit(client, clip, identity)["id"])
    folder = client.app.state.jobs.dir / j["id"]
    assert j["state"] == "succeeded" and _leftovers(folder) == ["result.mp4"]
    assert client.delete(f"/v1/jobs/{j['id']}").status_code == 204
    assert not folder.exists() and client.get(f"/v1/jobs/{j['id']}").status_code == 404
    assert j["id"] not in [r["id"] for r in client.app.state.jobs.store.rows()]
    _error(client.delete("/v1/jobs/nope"), 404, "job 'nope' | unknown")


# -- reload -----------------------------------------------------------------------------
def test_reload_mid_job_lets_it_finish_on_the_old_version(client, clip, identity, hold,
                                                          monkeypatch):
    """The reported failure: the old version was closed after the drain timeout (600 s) while
    a longer job still used it ("batcher 'detect' | closed"). The timeout is 0.2 s here."""
    real = versions.ModelVersion.drain_and_close
    monkeypatch.setattr(versions.ModelVersion, "drain_and_close",
                        lambda self, timeout=600.0, **kw: real(self, 0.2, **kw))
    old = client.get("/readyz").json()["version"]
    j = _submit(client, clip, identity)
    _wait(client, j["id"], lambda j: j["frames_done"] >= 2)
    r = client.post("/admin/reload", json={"feather": 0.11}, headers=AUTH)
    assert r.status_code == 200 and r.json()["previous"] == old, r.text
    time.sleep(0.5)  # past the (shortened) drain timeout for requests
    hold.set()
    j = _wait(client, j["id"])
    assert j["state"] == "succeeded" and j["version"] == old, j
    assert set(hold.seen) == {old}
    later = _wait(client, _submit(client, clip, identity)["id"])  # new jobs: the new version
    assert later["state"] == "succeeded" and later["version"] == r.json()["version"]


# -- restart ----------------------------------------------------------------------------
def test_jobs_survive_a_restart_and_orphans_are_swept(tmp_path, clip, astronaut_path, hold,
                                                      caplog):
    jobs_dir = tmp_path / "jobs"
    a = _started(_app(jobs_dir))
    ident = _identity(a, astronaut_path)
    hold.set()
    done = _wait(a, _submit(a, clip, ident)["id"])  # finished before the restart
    hold.clear()
    hold.seen.clear()
    running = _submit(a, clip, ident)
    _wait(a, running["id"], lambda j: j["frames_done"] >= 2)
    queued = _submit(a, clip, ident)
    no_identity = _submit(a, clip, ident)
    (jobs_dir / no_identity["id"] / "source.png").unlink()
    manager = a.app.state.jobs
    threading.Thread(target=lambda: (manager._stopping.wait(30), hold.set())).start()
    a.__exit__(None, None, None)  # clean shutdown: the running job stops at its next batch
    assert done["state"] == "succeeded"

    store = JobStore(jobs_dir)  # what a crash leaves: a row still "running", stray folders
    rows = {r["id"]: r for r in store.rows()}
    assert rows[running["id"]]["state"] == "queued" and rows[queued["id"]]["state"] == "queued"
    crashed = dict(rows[done["id"]], id="c" * 32, state="running", finished=None)
    (jobs_dir / crashed["id"]).mkdir()
    (jobs_dir / crashed["id"] / ".result.0badc0de.part.mp4").write_bytes(b"half")
    store.put(crashed)
    store.put(dict(crashed, id="d" * 32))  # its folder is gone
    store.close()
    (jobs_dir / ("e" * 32)).mkdir()  # a folder the database does not know
    (jobs_dir / "not-a-job").mkdir()  # not named like a job: never touched

    with caplog.at_level(logging.INFO, logger="fusionrt.serve.jobs"):
        b = _started(_app(jobs_dir))
    try:
        for j in (running, queued):
            got = _wait(b, j["id"])
            assert got["state"] == "succeeded" and got["frames_done"] == 8, got
        got = _wait(b, no_identity["id"])
        assert got["state"] == "failed" and got["error"].startswith(
            f"identity '{ident}' | gone after a restart and not in the job folder")
        assert b.get(f"/v1/jobs/{done['id']}").json()["state"] == "succeeded"
        assert b.get(done["result_url"]).status_code == 200
        got = b.get(f"/v1/jobs/{'c' * 32}").json()
        assert got["state"] == "failed" and "server restarted" in got["error"]
        assert _leftovers(jobs_dir / crashed["id"]) == []
        assert b.get(f"/v1/jobs/{'d' * 32}").status_code == 404
        assert not (jobs_dir / ("e" * 32)).exists() and (jobs_dir / "not-a-job").is_dir()
        assert "5 known, 3 re-queued, 1 failed (server restarted), 1 orphan folders removed" in caplog.text
    finally:
        b.__exit__(None, None, None)


def test_database_is_wal_and_an_unreadable_one_is_moved_aside(tmp_path, caplog):
    JobStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    for f in tmp_path.iterdir():
        f.unlink()
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING):
        store = JobStore(tmp_path)
    assert store.rows() == [] and "unreadable" in caplog.text
    assert [p.name for p in tmp_path.glob(f"{DB_NAME}.unreadable-*")]
    store.close()


def test_job_limits_from_flags_and_bad_values_refused():
    from fusionrt.cli import build_parser
    from fusionrt.errors import InputError
    from fusionrt.serve.commands import settings_from_args
    s = settings_from_args(build_parser().parse_args(
        ["serve", "--max-job-pixels", "2.5e9", "--job-time-limit-s", "90"]))
    assert (s.max_job_pixels, s.job_time_limit_s) == (2_500_000_000, 90.0)
    with pytest.raises(InputError, match="setting 'job_time_limit_s' | got 0; expected > 0"):
        ServeSettings(job_time_limit_s=0)
    with pytest.raises(InputError, match="setting 'max_job_pixels' | got 0; expected >= 1"):
        ServeSettings(max_job_pixels=0)
