"""Where fusionrt keeps its files: ``$FUSIONRT_HOME`` (default ``~/.cache/fusionrt``).

Models, synthetic models, the engine cache, calibration sets and server jobs all live under it.
"""

from __future__ import annotations

import os
from pathlib import Path


def fusionrt_home() -> Path:
    return Path(os.environ.get("FUSIONRT_HOME") or Path.home() / ".cache" / "fusionrt")


def writable_folder(folder: Path, home: Path | None = None) -> Path:
    """``folder`` (under the home), created if needed; an ``OutputError`` naming
    ``FUSIONRT_HOME`` when it cannot be written (a regular file in the way, read-only, missing
    under an unwritable parent): one line, never a traceback."""
    from ..errors import OutputError

    home = Path(home) if home else fusionrt_home()
    folder = Path(folder)
    why = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            why = "permission denied"
    except OSError as e:
        why = e.strerror or type(e).__name__
    if why and not folder.is_relative_to(home):  # e.g. an explicit --jobs-dir
        raise OutputError(f"folder '{folder}' | not a writable folder ({why}); expected a "
                          "folder fusionrt can write")
    if why:
        raise OutputError(f"FUSIONRT_HOME '{home}' | not a writable folder ({why}: '{folder}'); "
                          "expected a folder fusionrt can write: set FUSIONRT_HOME to one")
    return folder
