"""Model versions in a repository: which exist, which one serves, pinning it back (rollback).

Triton serves what the config's ``version_policy`` selects among the numbered folders:
``latest { num_versions: 1 }`` (what fusionrt writes) serves the highest number; a rollback
rewrites it to ``specific { versions: [N] }``, and the next release sets ``latest`` again.
Every server fusionrt runs resolves the served version with ``served_version`` so Triton and the
PyTriton server agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .configs import pinned_versions, with_version_policy
from .repository import MANIFEST, STAGES, write_text

RELEASE_FILE = "release.json"  # per version folder: what the release measured


@dataclass(frozen=True)
class VersionInfo:
    """One version folder of a model."""

    version: int
    path: Path
    serving: bool
    release: dict | None  # contents of release.json (None for versions written by `repo`)


def model_dir(repo: Path | str, model: str) -> Path:
    """The folder of ``model``: a Triton model name, a stage (``swap``) or a zoo name."""
    repo = Path(repo)
    if not (repo / MANIFEST).is_file():
        raise InputError(f"repository '{repo}' | no {MANIFEST}; expected a folder written by "
                         "'fusionrt triton repo'")
    names = dict(STAGES)
    manifest = json.loads((repo / MANIFEST).read_text())
    for info in manifest.get("stages", {}).values():
        names[info["zoo"]] = info["model"]
    name = names.get(model, model)
    path = repo / name
    if not (path / "config.pbtxt").is_file():
        known = sorted(set(names) | set(names.values()))
        raise InputError(f"model '{model}' | not in repository '{repo}'; expected one of: "
                         f"{', '.join(known)}")
    return path


def version_numbers(mdir: Path) -> list[int]:
    return sorted(int(p.name) for p in mdir.iterdir() if p.is_dir() and p.name.isdigit())


def served_version(mdir: Path) -> int:
    """The version Triton's policy in ``config.pbtxt`` serves (highest pinned, else highest)."""
    have = version_numbers(mdir)
    if not have:
        raise InputError(f"model '{mdir.name}' | no version folders in {mdir}")
    pinned = pinned_versions((mdir / "config.pbtxt").read_text())
    if pinned:
        ok = [v for v in pinned if v in have]
        if not ok:
            raise InputError(f"model '{mdir.name}' | pinned versions {pinned} not on disk; "
                             f"have {have}")
        return max(ok)
    return max(have)


def list_versions(repo: Path | str, model: str) -> list[VersionInfo]:
    mdir = model_dir(repo, model)
    serving = served_version(mdir)
    out = []
    for v in version_numbers(mdir):
        rel = mdir / str(v) / RELEASE_FILE
        out.append(VersionInfo(v, mdir / str(v), v == serving,
                               json.loads(rel.read_text()) if rel.is_file() else None))
    return out


def set_policy(mdir: Path, version: int | None) -> str:
    """Pin ``version`` (None: back to latest); returns the previous config text for undo."""
    cfg = mdir / "config.pbtxt"
    old = cfg.read_text()
    write_text(cfg, with_version_policy(old, [version] if version is not None else None))
    return old


def rollback(repo: Path | str, model: str, to: int | None = None) -> tuple[int, int]:
    """Serve ``to`` (default: the version below the serving one); returns (from, to).

    Only the config changes: every version folder stays, so a rollback can itself be undone
    (``rollback --to`` the newer number, or the next release).
    """
    mdir = model_dir(repo, model)
    have = version_numbers(mdir)
    current = served_version(mdir)
    if to is None:
        older = [v for v in have if v < current]
        if not older:
            raise InputError(f"model '{mdir.name}' | version {current} is the oldest; nothing "
                             "to roll back to")
        to = older[-1]
    if to not in have:
        raise InputError(f"version {to} | not in {mdir}; expected one of {have}")
    set_policy(mdir, None if to == max(have) else to)
    return current, to
