"""Fingerprinted engine cache: a built engine is reused only where it was built for exactly this
model, precision, batch profile, GPU and library versions.

An entry is one file: ``b"FRTCACHE"`` + header length (uint32, little endian) + a JSON header
(fingerprint, payload size, payload sha256) + the payload (e.g. a serialized TensorRT plan).
Entries are written atomically (temp file + ``os.replace``) and checked in full on every read;
a truncated, corrupt, foreign or stale entry is logged, deleted and reported as a miss, so the
caller rebuilds it. A bad plan handed to TensorRT can crash the process, so it is never loaded.

Layout: ``$FUSIONRT_HOME/engines/<engine>/<slot>.frtc``. The slot hashes *what* was built (model,
precision, profile, builder settings) and *where* (GPU, compute capability); the library versions
are checked from the header, so an upgrade of TensorRT replaces the old entry instead of
leaving it behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from .._fs import CHUNK, sha256_file, unlink_quietly
from .home import fusionrt_home
from .machine import library_version

log = logging.getLogger(__name__)

MAGIC = b"FRTCACHE"
FORMAT = 1
_LEN = struct.Struct("<I")
_MAX_HEADER = 1 << 20  # a header is a few hundred bytes; anything larger is garbage


def cache_root() -> Path:
    """Where engines are cached: ``$FUSIONRT_HOME/engines``."""
    return fusionrt_home() / "engines"


@dataclass(frozen=True)
class Fingerprint:
    """Everything that makes a built engine valid; two builds with equal fingerprints are
    interchangeable. ``None`` means "not present here" and is part of the identity too."""

    onnx_sha256: str
    precision: str
    batch_profile: str
    engine: str
    gpu_name: str | None = None
    compute_capability: str | None = None
    tensorrt: str | None = None
    onnxruntime: str | None = None
    cuda: str | None = None
    torch: str | None = None
    fusionrt: str | None = None
    builder: str = ""  # builder settings that change the plan, e.g. "opt3"

    # Fields naming what is built and for which device (→ file name); the rest are versions.
    _SLOT = ("onnx_sha256", "precision", "batch_profile", "engine", "builder",
             "gpu_name", "compute_capability")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def key(self) -> str:
        """sha256 of the canonical JSON: the identity of the whole fingerprint."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def slot(self) -> str:
        """Hash of the model/device fields only: the entry's file name."""
        part = {k: getattr(self, k) for k in self._SLOT}
        return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:40]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fingerprint":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def for_model(cls, onnx_path: Path, engine: str, precision: str, batch_profile: str,
                  builder: str = "", device_index: int = 0) -> "Fingerprint":
        """Fingerprint of ``onnx_path`` built by ``engine`` on this machine's GPU and libraries."""
        return cls(onnx_sha256=sha256_file(Path(onnx_path)), precision=precision,
                   batch_profile=batch_profile, engine=engine, builder=builder,
                   **runtime_fingerprint_fields(device_index))

    def diff(self, other: "Fingerprint") -> dict[str, tuple[Any, Any]]:
        """Fields that differ: {name: (self's, other's)}."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}


def runtime_fingerprint_fields(device_index: int = 0) -> dict[str, str | None]:
    """GPU name, compute capability and library versions, each ``None`` where unavailable.

    Never raises: a missing or broken library is simply absent from the fingerprint.
    """
    out: dict[str, str | None] = {
        "gpu_name": None, "compute_capability": None, "tensorrt": library_version("tensorrt"),
        "onnxruntime": library_version("onnxruntime"), "cuda": None, "torch": None,
        "fusionrt": library_version("fusionrt")}
    try:
        import torch
        out["torch"] = library_version("torch")
        out["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            out["gpu_name"] = torch.cuda.get_device_name(device_index)
            out["compute_capability"] = "%d.%d" % torch.cuda.get_device_capability(device_index)
    except Exception as e:  # torch absent or CUDA init failed: fall back to NVML
        log.debug("torch GPU query failed: %s", e)
    if out["gpu_name"] is None:
        try:
            import pynvml  # from nvidia-ml-py
            pynvml.nvmlInit()
            try:
                h = pynvml.nvmlDeviceGetHandleByIndex(device_index)
                name = pynvml.nvmlDeviceGetName(h)
                out["gpu_name"] = name.decode() if isinstance(name, bytes) else str(name)
                out["compute_capability"] = "%d.%d" % pynvml.nvmlDeviceGetCudaComputeCapability(h)
            finally:
                pynvml.nvmlShutdown()
        except Exception as e:
            log.debug("NVML GPU query failed: %s", e)
    return out


class CacheEntryError(Exception):
    """Internal: why an entry was rejected (logged, never raised to the user)."""


class EngineCache:
    """Engine files keyed by ``Fingerprint``. See the module docstring for the format."""

    suffix = ".frtc"

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_root()

    def path_for(self, fp: Fingerprint) -> Path:
        return self.root / fp.engine / f"{fp.slot()}{self.suffix}"

    # -- read ------------------------------------------------------------------
    def _read_header(self, f, fp: Fingerprint, size: int) -> tuple[dict, int]:
        if f.read(len(MAGIC)) != MAGIC:
            raise CacheEntryError("bad magic (not a fusionrt cache entry)")
        raw_len = f.read(_LEN.size)
        if len(raw_len) != _LEN.size:
            raise CacheEntryError("truncated header")
        (n,) = _LEN.unpack(raw_len)
        if n > _MAX_HEADER or len(MAGIC) + _LEN.size + n > size:
            raise CacheEntryError("truncated or corrupt header")
        try:
            header = json.loads(f.read(n))
            stored = Fingerprint.from_dict(header["fingerprint"])
            psize, psha = int(header["payload_size"]), str(header["payload_sha256"])
        except (ValueError, KeyError, TypeError) as e:
            raise CacheEntryError(f"corrupt header ({e})") from None
        if stored != fp or header.get("key") != fp.key():
            changed = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in stored.diff(fp).items())
            raise CacheEntryError(f"stale fingerprint ({changed or 'key mismatch'})")
        offset = len(MAGIC) + _LEN.size + n
        if size - offset != psize:
            raise CacheEntryError(f"payload is {size - offset} bytes; header says {psize}")
        return {"sha256": psha, "size": psize}, offset

    def _load(self, fp: Fingerprint, want_bytes: bool) -> tuple[Path, bytes | None] | None:
        path = self.path_for(fp)
        if not path.is_file():
            return None
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                meta, _ = self._read_header(f, fp, size)
                h, chunks = hashlib.sha256(), []
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    h.update(chunk)
                    if want_bytes:
                        chunks.append(chunk)
            if h.hexdigest() != meta["sha256"]:
                raise CacheEntryError("payload sha256 mismatch (corrupt file)")
        except (CacheEntryError, OSError) as e:
            log.warning("engine cache | %s: %s; deleting it, the engine will be rebuilt", path, e)
            unlink_quietly(path)  # a read-only cache keeps it; it is ignored all the same
            return None
        return path, (b"".join(chunks) if want_bytes else None)

    def get(self, fp: Fingerprint) -> Path | None:
        """The verified entry file for ``fp``, or ``None`` (missing, or bad and now deleted)."""
        hit = self._load(fp, want_bytes=False)
        return hit[0] if hit else None

    def read(self, fp: Fingerprint) -> bytes | None:
        """The verified payload for ``fp`` (read and checked in one pass), or ``None``."""
        hit = self._load(fp, want_bytes=True)
        return hit[1] if hit else None

    # -- write -----------------------------------------------------------------
    def put(self, fp: Fingerprint, data: bytes | Path) -> Path:
        """Store ``data`` (bytes, or a file to copy) under ``fp``; atomic, replaces any old entry."""
        src = Path(data) if isinstance(data, (str, os.PathLike)) else None
        if src is not None:
            psha, psize = sha256_file(src), src.stat().st_size
        else:
            psha, psize = hashlib.sha256(data).hexdigest(), len(data)
        header = json.dumps({"format": FORMAT, "key": fp.key(), "fingerprint": fp.to_dict(),
                             "payload_size": psize, "payload_sha256": psha},
                            sort_keys=True).encode()
        path = self.path_for(fp)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + _LEN.pack(len(header)) + header)
                if src is None:
                    f.write(data)
                else:
                    with open(src, "rb") as s:
                        for chunk in iter(lambda: s.read(CHUNK), b""):
                            f.write(chunk)
                f.flush()
                os.fsync(f.fileno())  # a crash right after replace must not leave a hole
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("engine cache | stored %s (%.1f MB)", path, psize / 1e6)
        return path

    def invalidate(self, fp: Fingerprint) -> None:
        """Delete the entry for ``fp`` (e.g. it verified but the runtime still rejected it)."""
        self.path_for(fp).unlink(missing_ok=True)

    def get_or_build(self, fp: Fingerprint, build_fn: Callable[[], bytes]) -> tuple[bytes, bool]:
        """(payload, built): the cached payload, or ``build_fn()`` stored and returned.

        Two processes building the same entry at once both build; the last rename wins, and
        both entries are complete, so no reader ever sees a partial file.
        """
        payload = self.read(fp)
        if payload is not None:
            log.info("engine cache | hit %s", self.path_for(fp))
            return payload, False
        payload = build_fn()
        try:
            self.put(fp, payload)
        except OSError as e:  # a read-only cache: the engine holds for this run only
            log.warning("engine cache | cannot store %s (%s); it is built again next time",
                        self.path_for(fp), e)
        return payload, True
