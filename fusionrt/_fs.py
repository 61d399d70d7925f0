"""File helpers every area shares: atomic writes and streaming hashes.

Kept free of other fusionrt imports so that exporters, caches and the model store can all use
them without importing each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import uuid
from pathlib import Path

CHUNK = 1 << 20  # model files are hundreds of MB: hash them in 1 MiB blocks

log = logging.getLogger(__name__)


def read_json_state(path: Path, default=None, what: str = "state file"):
    """A JSON object the project wrote earlier, read defensively.

    A missing file gives ``default``; a truncated, garbled or unreadable one (or one that is not a
    JSON object) is logged as a warning and gives ``default`` too, so the caller rebuilds it on its
    next write. Never raises.
    """
    default = {} if default is None else default
    path = Path(path)
    try:
        if not path.is_file():
            return default
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except (OSError, ValueError, UnicodeDecodeError) as e:
        log.warning("%s '%s' | unreadable (%s); ignoring it, it is rebuilt on the next write",
                    what, path, e)
        return default


def unlink_quietly(path: Path) -> bool:
    """Delete ``path`` if possible (a read-only folder only leaves it there); True if gone."""
    try:
        Path(path).unlink(missing_ok=True)
        return True
    except OSError as e:
        log.warning("cannot delete '%s' (%s); leaving it", path, e)
        return False


def part_path(dst: Path) -> Path:
    """The hidden name a media file is written under before its rename,
    ``.<stem>.<8 hex>.part<ext>``: the extension stays (muxers pick the container by it), and
    the stale-temp sweep and batch resume know the pattern."""
    dst = Path(dst)
    return dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:8]}.part{dst.suffix}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; models are shared read-only files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# The project's own temp names: ``.<name>.<random>.tmp`` (atomic writes, the store, the engine
# cache) and ``.<stem>.<hex8>.part<suffix>`` (video outputs). ``models/<name>.onnx.part`` is a
# resumable download and is not one of them.
_TEMP_NAMES = re.compile(r"^\..+\.(tmp|[0-9a-f]{8}\.part(\.[^./]+)?)$")
STALE_AFTER_S = 3600.0


def sweep_stale_temps(folder: Path, older_than_s: float = STALE_AFTER_S,
                      recursive: bool = False) -> list[Path]:
    """Delete this project's temp files in ``folder`` left by a killed run (untouched for
    ``older_than_s``); returns what was deleted. Never raises."""
    folder, gone = Path(folder), []
    now = time.time()
    try:
        if not folder.is_dir():
            return gone
        files = folder.rglob(".*") if recursive else folder.glob(".*")
        for f in files:
            try:
                if (_TEMP_NAMES.match(f.name) and f.is_file() and not f.is_symlink()
                        and now - f.stat().st_mtime > older_than_s):
                    f.unlink()
                    gone.append(f)
                    log.info("removed a stale temp file left by an interrupted run: %s", f)
            except OSError:
                continue
    except OSError:
        pass
    return gone
