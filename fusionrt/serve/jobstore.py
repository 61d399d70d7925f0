"""Video job records: the ``Job`` dataclass and its table in one SQLite file
(``jobs.sqlite3``) in the jobs folder.

One row per job. Python's ``sqlite3`` with WAL (a reader never waits for the writer; a killed
process loses no committed row) and one connection shared by the server's threads behind a
lock: writes are a few per job plus a progress update per second, far below what one
connection does. An unreadable file is moved aside and a new one started (a warning), as the
project does with every other state file: the service starts, the old jobs are forgotten (and
their folders swept).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OutputError

if TYPE_CHECKING:
    from .runtime import IdentityRecord

log = logging.getLogger(__name__)

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
RESULT = "result.mp4"
DB_NAME = "jobs.sqlite3"
SCHEMA_VERSION = 1
COLUMNS = ("id", "identity_id", "input_name", "frames_total", "width", "height", "crf", "state",
           "frames_done", "error", "version", "created", "started", "finished")
_SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, identity_id TEXT NOT NULL, input_name TEXT NOT NULL,
    frames_total INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    crf INTEGER NOT NULL, state TEXT NOT NULL, frames_done INTEGER NOT NULL, error TEXT,
    version TEXT, created REAL NOT NULL, started REAL, finished REAL)"""


@dataclass
class Job:
    """One video job: its row (``COLUMNS``) and what only the process running it holds."""

    id: str
    identity_id: str
    folder: Path
    input_name: str
    frames_total: int
    width: int = 0
    height: int = 0
    crf: int = 18
    state: str = "queued"
    frames_done: int = 0
    error: str | None = None
    version: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    # in memory only: the identity while this process has it, a stop request, "no longer running"
    identity: IdentityRecord | None = field(default=None, repr=False, compare=False)
    stop: str | None = field(default=None, repr=False, compare=False)
    ended: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    saved_at: float = field(default=0.0, repr=False, compare=False)

    @property
    def input(self) -> Path:
        return self.folder / self.input_name

    @property
    def result(self) -> Path:
        return self.folder / RESULT

    def row(self) -> dict:
        return {c: getattr(self, c) for c in COLUMNS}

    def to_dict(self) -> dict:
        d = {c: getattr(self, c) for c in COLUMNS if c != "input_name"}
        d["progress"] = round(self.frames_done / self.frames_total, 4) if self.frames_total else (
            1.0 if self.state == "succeeded" else 0.0)
        d["result_url"] = f"/v1/jobs/{self.id}/result" if self.state == "succeeded" else None
        return d


class JobStore:
    """Rows of ``COLUMNS``, keyed by job id."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / DB_NAME
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.OperationalError as e:  # locked, read-only, no room: not the file's fault
            raise OutputError(f"jobs database '{self.path}' | cannot be used ({e}); expected a "
                              "writable jobs folder that no other server uses") from None
        except sqlite3.DatabaseError as e:  # garbled or from another schema
            aside = self.path.with_name(f"{DB_NAME}.unreadable-{int(time.time())}")
            log.warning("jobs database '%s' | unreadable (%s); moved to '%s', starting empty",
                        self.path, e, aside.name)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self.path.replace(aside)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        # check_same_thread=False: the request threads and the job worker share it, under _lock
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                             timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: no fsync per commit; a power cut may lose the last commits, a
            # killed process none (the WAL is in the OS's cache)
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema version {version}; expected {SCHEMA_VERSION}")
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM jobs").fetchone()  # a garbled file fails here
        except BaseException:
            db.close()
            raise
        return db

    def put(self, row: dict) -> None:
        """Insert or replace one job's row."""
        values = [row[c] for c in COLUMNS]
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO jobs ({', '.join(COLUMNS)}) VALUES "
                             f"({', '.join('?' * len(COLUMNS))})", values)

    def progress(self, job_id: str, frames_done: int) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET frames_done = ? WHERE id = ?", (frames_done, job_id))

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def rows(self) -> list[dict]:
        """Every job, oldest first."""
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs ORDER BY created, id")
            return [dict(zip(COLUMNS, r)) for r in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()
