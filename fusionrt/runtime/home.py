"""Where fusionrt keeps its files: ``$FUSIONRT_HOME`` (default ``~/.cache/fusionrt``).

Models, synthetic models, the engine cache, calibration sets and server jobs all live under it.
"""

from __future__ import annotations

import os
from pathlib import Path


def fusionrt_home() -> Path:
    return Path(os.environ.get("FUSIONRT_HOME") or Path.home() / ".cache" / "fusionrt")
