"""User-facing errors. The CLI prints ``str(err)`` on one line and exits with ``err.exit_code``."""

from __future__ import annotations


class FusionError(Exception):
    """Base of every error a user can cause and fix; never shown as a traceback."""

    exit_code = 1


class InputError(FusionError):
    """Missing, unreadable or corrupt input file (image, video, calibration set)."""

    exit_code = 2


class NoFaceError(FusionError):
    """No face where one is required (e.g. the source image)."""

    exit_code = 3


class ModelError(FusionError):
    """A model file is missing, has a wrong hash, or breaks its I/O contract."""

    exit_code = 4


class EngineError(FusionError):
    """An engine cannot be loaded or run here (missing library, wrong device, bad feeds)."""

    exit_code = 5


class OutputError(FusionError):
    """The output path cannot be written."""

    exit_code = 6
