"""``fusionrt release``: export → build FP32/FP16/INT8 → quality gate → benchmark row → write
version N+1 into the repository (staged, then renamed) → tell running servers to load it.

Every step before the rename works in a scratch folder beside the repository, so a failing
export, build, gate or benchmark leaves the repository byte-for-byte as it was. After the rename,
a server that cannot load N+1 rolls the release back: the folder is moved out again, the config
restored and the servers told to load N, which they kept serving throughout (Triton loads a new
version before it unloads the old; the PyTriton server swaps only after N+1 is warmed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._fs import atomic_write_bytes as write_text_bytes
from ..errors import FusionError, InputError, ModelError
from ..models.spec import ModelSpec
from ..pipeline.plan import REFERENCE_ENGINE  # gate and bench row: the FP32 reference
from .notify import Server, parse_servers
from .repository import MANIFEST, place_stage, stage_io, write_text
from .versions import RELEASE_FILE, model_dir, served_version, set_policy, version_numbers

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Built:
    """A gated artifact: the file, its precision and the gate report (None for FP32)."""

    path: Path
    precision: str
    report: Any = None
    details: dict = field(default_factory=dict)


def calibration_for(spec: ModelSpec, source: Path | None, workdir: Path,
                    allow_synthetic: bool) -> Path | None:
    """A calibration set for ``spec``: ``source`` itself if it is a ``.npz``, else one made from
    the images/video at ``source`` (augmented up to 64 crops when there are few faces)."""
    if source is None or Path(source).suffix == ".npz":
        return source
    from ..pipeline.artifacts import build_calibration_set
    cal = build_calibration_set(spec.name, source, count=64, do_augment=True,
                                allow_synthetic=allow_synthetic)
    return cal.save(workdir / f"{spec.name}.calibration.npz")


def gated_artifact(spec: ModelSpec, fp32: Path, precision: str, workdir: Path, *,
                   calibration: Path | None = None, synthetic: bool = False,
                   allow_synthetic: bool = False, thresholds: dict | None = None,
                   det_size: int = 640) -> Built:
    """``fp32`` converted to ``precision`` in ``workdir`` and passed through the quality gate.

    Raises:
        ModelError: the gate refused it (its figures in the message).
        InputError: INT8 without a calibration source.
    """
    if precision == "fp32":
        return Built(Path(fp32), "fp32")
    from ..builders.convert import holdout_feeds, make_artifact
    from ..builders.gate import evaluate, refusal, thresholds_for
    from ..pipeline.artifacts import gate_inputs
    workdir.mkdir(parents=True, exist_ok=True)
    cal = calibration_for(spec, calibration, workdir, allow_synthetic)
    if cal is None:  # no calibration set: the gate judges the example photos, not noise
        from ..bench.stages import DEFAULT_FRAME, DEFAULT_SOURCE, make_feeds, read_images
        images = read_images((DEFAULT_FRAME, DEFAULT_SOURCE))
        fit, held = [], [make_feeds(spec, 1, det_size, images[i % 2:] + images[:i % 2], i)
                         for i in range(4)]
        notes = ["gate inputs: the example photos resized to the model input (no calibration "
                 "set given)"]
    else:
        fit, held, notes = holdout_feeds(spec, cal)
    out = workdir / f"{spec.name}.{precision}.onnx"
    details = make_artifact(spec, Path(fp32), precision, out, fit)
    report = evaluate(spec, Path(fp32), out, precision, held, engine=REFERENCE_ENGINE,
                      thresholds=thresholds_for(precision, **(thresholds or {})),
                      synthetic=synthetic, **gate_inputs(spec, allow_synthetic))
    report.notes[:0] = notes
    report.details = details
    if not report.passed:
        out.unlink(missing_ok=True)
        raise refusal(report)
    log.info("%s %s passed the gate: %s", spec.name, precision, report.summary())
    keep_emap(spec, Path(fp32), out)
    return Built(out, precision, report, details)


def keep_emap(spec: ModelSpec, fp32: Path, out: Path) -> None:
    """inswapper's ``emap`` is an initializer no node uses: ORT's quantization pre-processing
    drops it, and the pipeline reads it from the served file. Put the FP32 one back as the last
    initializer when the artifact lost it."""
    if spec.extra.get("source_transform") != "emap":
        return
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from ..pipeline.host.swap import read_emap
    want = read_emap(fp32, int(spec.extra.get("emap", {}).get("initializer_index", -1)))
    try:
        if np.array_equal(read_emap(out), want):
            return
    except ModelError:
        pass
    model = onnx.load(str(out))
    model.graph.initializer.append(numpy_helper.from_array(want, "emap"))
    write_text_bytes(out, model.SerializeToString())
    log.info("%s: re-attached emap (512x512) to %s", spec.name, out.name)


def bench_row(spec: ModelSpec, path: Path, precision: str, runs: int = 5,
              det_size: int = 640) -> dict:
    """One benchmark row (the FP32 reference engine, ORT on the CPU; batch 1, ``runs`` timed
    runs after one warm-up)."""
    from ..bench.stages import DEFAULT_FRAME, DEFAULT_SOURCE, make_feeds, read_images
    from ..bench.timers import PerfCounterTimer, RowKey, summarize
    from ..builders.open import open_engine
    from ..models.spec import Artifact
    feeds = make_feeds(spec, 1, det_size, read_images((DEFAULT_FRAME, DEFAULT_SOURCE)))
    with open_engine(REFERENCE_ENGINE, Artifact(spec, path)) as eng:
        eng.run(feeds)
        timing, _ = PerfCounterTimer().measure(lambda: eng.run(feeds), runs,
                                               RowKey(spec.task, REFERENCE_ENGINE, precision, 1))
    return {"model": spec.name, "precision": precision, "engine": REFERENCE_ENGINE, "batch": 1,
            "runs": runs, "latency_ms": summarize(timing.latency_ms),
            "bytes": path.stat().st_size}


def export_fp32(spec: ModelSpec, workdir: Path, allow_synthetic: bool) -> tuple[Path, bool]:
    """The FP32 ONNX to release. Real weights ship as ONNX: the store's file is the export.
    Synthetic models are re-exported from their torch weights (parity-checked by export)."""
    from ..models.store import ModelStore
    art = ModelStore().resolve(spec.name, allow_synthetic=allow_synthetic)
    if not art.synthetic or art.weights_path is None:
        return Path(art.onnx_path), art.synthetic
    import numpy as np

    from ..builders.export import export_onnx
    from ..models.arch.reference import load_reference
    module = load_reference(spec.name, art.weights_path)
    extra = {"emap": module.emap.numpy().astype(np.float32)} if hasattr(module, "emap") else None
    out = workdir / f"{spec.name}.fp32.onnx"
    export_onnx(module, spec, out, metadata={"synthetic": "1"}, extra_initializers=extra)
    return out, True


@dataclass
class ReleaseOptions:
    """How to release. ``precision`` is the one the new version serves (default: the
    repository's); every precision in ``precisions`` must pass the gate."""

    precisions: tuple[str, ...] = PRECISIONS
    precision: str | None = None
    calibration: Path | None = None
    allow_synthetic: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)
    servers: tuple[Server, ...] = ()
    bench_runs: int = 5


@dataclass
class ReleaseResult:
    model: str
    triton_model: str
    version: int
    previous: int
    precision: str
    gates: dict[str, str]
    bench: list[dict]
    notified: list[str]
    seconds: float


@contextlib.contextmanager
def repo_lock(repo: Path):
    """One release at a time per repository (an flock on a file Triton ignores)."""
    with open(repo / ".fusionrt.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"repository '{repo}' | another release is running") from None
        yield


def release(model: str, repo: Path | str, opts: ReleaseOptions | None = None) -> ReleaseResult:
    """Release ``model`` (zoo or Triton name) into ``repo`` as a new version; see module doc."""
    from ..models.zoo import get_spec
    t0 = time.perf_counter()
    opts = opts or ReleaseOptions()
    repo = Path(repo)
    mdir = model_dir(repo, model)
    manifest = json.loads((repo / MANIFEST).read_text())
    stage, info = next(((s, i) for s, i in manifest["stages"].items()
                        if i["model"] == mdir.name), (None, None))
    if stage is None:
        raise InputError(f"model '{model}' | not a stage model; expected one of "
                         f"{[i['model'] for i in manifest['stages'].values()]}")
    spec = get_spec(info["zoo"])
    precision = opts.precision or manifest["precision"]
    bad = [p for p in opts.precisions if p not in PRECISIONS]
    if bad or precision not in opts.precisions:
        raise InputError(f"precisions {list(opts.precisions)} | expected a subset of "
                         f"{list(PRECISIONS)} that includes the served precision '{precision}'")
    from .repository import RepoOptions
    ro = RepoOptions(**{k: (Path(v) if k == "calibration" and v else
                            tuple(v) if isinstance(v, list) else v)
                        for k, v in manifest.get("options", {}).items()})
    ro = dataclasses.replace(ro, precision=precision)
    with repo_lock(repo):
        previous = served_version(mdir)
        new = max(version_numbers(mdir)) + 1
        scratch = Path(tempfile.mkdtemp(dir=repo.parent, prefix=f".{repo.name}.release-"))
        try:
            log.info("release %s -> %s version %d: export", spec.name, mdir.name, new)
            fp32, synthetic = export_fp32(spec, scratch / "work", opts.allow_synthetic)
            built, gates, bench = {}, {}, []
            for p in opts.precisions:
                log.info("release %s: build + gate %s", spec.name, p)
                built[p] = gated_artifact(spec, fp32, p, scratch / "work",
                                          calibration=opts.calibration, synthetic=synthetic,
                                          allow_synthetic=opts.allow_synthetic,
                                          thresholds=opts.thresholds.get(p),
                                          det_size=ro.det_size)
                gates[p] = built[p].report.summary() if built[p].report else "reference"
                bench.append(bench_row(spec, built[p].path, p, opts.bench_runs, ro.det_size))
            chosen = built[precision].path
            _check_contract(spec, chosen, mdir, ro)
            from .repository import RepoReport
            plans = RepoReport(repo)
            vdir = place_stage(scratch, stage, spec, chosen, ro, new, plans)
            if plans.trtexec:  # tensorrt backend: Triton cannot load N+1 until these ran
                log.warning("version %d has no TensorRT plans (TensorRT builds them per GPU "
                            "kind); until they exist a Triton load fails and is rolled back:\n%s",
                            new, "\n".join(f"[cc {cc}] {cmd}" for cc, cmd in plans.trtexec))
            write_text(vdir / RELEASE_FILE, json.dumps(
                {"model": spec.name, "version": new, "previous": previous,
                 "precision": precision, "synthetic": synthetic, "gates": gates,
                 "bench": bench, "released": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                indent=2, default=str) + "\n")
            os.rename(vdir, mdir / str(new))  # atomic: the version appears whole or not at all
            old_config = set_policy(mdir, None)
            try:
                notified = [s.load(mdir.name, new) for s in opts.servers]
            except FusionError as e:
                _undo(mdir, new, old_config, scratch, opts.servers, previous)
                raise ModelError(f"release '{spec.name}' | version {new} failed to load ({e}); "
                                 f"rolled back, version {previous} keeps serving") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return ReleaseResult(spec.name, mdir.name, new, previous, precision, gates, bench, notified,
                         time.perf_counter() - t0)


def _check_contract(spec: ModelSpec, path: Path, mdir: Path, ro) -> None:
    """The new file must fit the model's existing config (same tensors and dims)."""
    from .configs import parse_pbtxt
    try:
        cfg = parse_pbtxt((mdir / "config.pbtxt").read_text())
    except FusionError:
        return  # no tritonclient: the stage_io checks against the spec still ran
    ins, outs, _ = stage_io(spec, path, ro.det_size)
    have = {t.name: tuple(t.dims) for t in list(cfg.input) + list(cfg.output)}
    for t in ins + outs:
        if have.get(t.name) != t.dims:
            raise ModelError(f"tensor '{t.name}' | dims {t.dims} in the new file; the "
                             f"repository's config has {have.get(t.name)}")


def _undo(mdir: Path, new: int, old_config: str, scratch: Path, servers, previous: int) -> None:
    """Take version ``new`` out again and bring the servers back to ``previous``."""
    os.rename(mdir / str(new), scratch / f"failed-{new}")
    write_text(mdir / "config.pbtxt", old_config)
    for s in servers:
        try:
            s.load(mdir.name, previous)
        except FusionError as e:  # the server still serves previous if it never switched
            log.warning("rollback: %s did not reload version %d: %s", s.url, previous, e)


__all__ = ["Built", "ReleaseOptions", "ReleaseResult", "bench_row", "gated_artifact",
           "parse_servers", "release"]
