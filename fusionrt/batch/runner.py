"""The driver of a batch job: start or join a Ray cluster, start the warm workers, hand out work
items, retry failures, replace dead workers, and build the report.

Why Ray actors driven by ``ray.wait`` and not Ray Data: a work item here is a whole file (or a
keyframe segment) that the worker decodes, swaps and encodes itself, reading and writing the
shared folder. Ray Data would move decoded frames (≈1 MB each at 640×480) through the object
store and hides per-item outcomes behind block retries; we need the opposite: per-file retries
with reasons, exactly-once atomic outputs, skip-on-rerun, and knowing which items a dead
worker held so they can go to another worker. Actors keep the engines warm (model load and,
for TensorRT, engine deserialisation happen once per worker, not per file).

Paths must mean the same on the driver and every node (one machine, or a shared filesystem).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import errors
from ..errors import EngineError, InputError
from ..pipeline.settings import PipelineConfig
from .jobs import InputPlan, ItemReport, JobReport, WorkerReport, WorkItem, clean_partials
from .workers import import_ray, remote_worker_class

log = logging.getLogger(__name__)

EventFn = Callable[[str, WorkItem, dict], None]  # ("done"|"retry"|"failed"|"dropped", item, result)


@dataclass
class BatchConfig:
    """How to run a batch job.

    ``workers=None``: one per GPU (``gpus_per_worker`` > 0) or one per ``cpus_per_worker``
    cores in the cluster. ``retries``: extra attempts for an item whose failure a retry may fix
    (a crash, a dead worker); corrupt inputs fail at once. ``in_flight``: items queued on each
    worker, so the next one starts while the driver books the last. ``ray_init``: extra
    ``ray.init`` arguments (``num_cpus``, ``_temp_dir``, …). ``pipeline.kernels`` picks each
    worker's path (``device``: frames stay on the GPU; ``host``: numpy/OpenCV; ``auto``: device
    kernels on CUDA); ``video``: the video loop's settings (``VideoConfig``: batch, encoders,
    preset; default ``VideoConfig()``), with ``crf`` and the worker's cores put in.
    """

    source: str
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    retries: int = 2
    crf: int = 18
    in_flight: int = 2
    start_timeout_s: float = 600.0
    ray_init: dict = field(default_factory=dict)
    video: Any = None    # a VideoConfig (pipeline.video.loop); None: its defaults


@dataclass
class _Slot:
    index: int
    actor: Any
    report: WorkerReport
    refs: set = field(default_factory=set)
    alive: bool = True


def connect(config: BatchConfig) -> bool:
    """Join ``config.address`` or start a local cluster; True when this call started Ray."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs = {"log_to_driver": False, **config.ray_init}
    if config.address:  # remote nodes need fusionrt installed (or a runtime_env in ray_init)
        ray.init(address=config.address, **kwargs)
    else:
        kwargs.setdefault("runtime_env", local_runtime_env())
        ray.init(include_dashboard=False, **kwargs)
    return True


def local_runtime_env() -> dict:
    """Workers of a local cluster import fusionrt from where this driver does (a checkout that
    is not pip-installed works too)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def worker_count(config: BatchConfig, resources: dict[str, float], items: int) -> int:
    """How many workers fit the cluster (and the work); an impossible request raises."""
    if config.gpus_per_worker > 0:
        have, per, what = resources.get("GPU", 0.0), config.gpus_per_worker, "GPU"
    else:
        have, per, what = resources.get("CPU", 0.0), config.cpus_per_worker, "CPU"
    fit = int(have // per) if per > 0 else 0
    if fit < 1:
        raise EngineError(f"--{what.lower()}s-per-worker {per:g} | the Ray cluster has {have:g} "
                          f"{what}s; expected at least {per:g}")
    n = config.workers or fit
    if n > fit:
        raise InputError(f"--workers {n} | needs {n * per:g} {what}s; the Ray cluster has {have:g}")
    return max(1, min(n, items))


class _Driver:
    def __init__(self, config: BatchConfig, plans: list[InputPlan], on_event: EventFn | None):
        self.ray = import_ray()
        self.cfg, self.on_event = config, on_event or (lambda *a: None)
        self.reports = {p.id: ItemReport(p.id, p.src, p.dst, p.kind, p.status,
                                         segments=len(p.items) + p.segments_skipped
                                         if p.stitch else 0, error=p.error) for p in plans}
        self.stitches = {p.id: p.stitch for p in plans if p.status == "todo" and p.stitch}
        self.left = {p.id: sum(i.kind == "segment" for i in p.items) for p in plans}
        # longest first: the last items to finish are short ones, so workers finish together
        todo = sorted((p for p in plans if p.status == "todo"), key=lambda p: -p.frames)
        self.pending: deque[WorkItem] = deque(i for p in todo for i in p.items)
        self.pending.extend(s for k, s in self.stitches.items() if self.left[k] == 0)
        self.attempts: Counter[str] = Counter()
        self.inflight: dict[Any, tuple[WorkItem, _Slot, Any, str]] = {}
        self.workers: list[WorkerReport] = []
        self.restarts = 0
        self.plan: dict | None = None  # the first ready worker's kernels and stage plan
        env = {k: os.environ[k] for k in ("FUSIONRT_HOME",) if k in os.environ}
        self.actor_args = (config.source, config.pipeline, config.crf,
                           max(1, int(config.cpus_per_worker)), env, config.video)
        self.cls = remote_worker_class(config.cpus_per_worker, config.gpus_per_worker)
        self.tag = f"fusionrt-batch-{os.getpid()}-{int(time.time())}"
        self.slots: list[_Slot] = []

    # -- workers ---------------------------------------------------------------
    def _start(self, name: str) -> Any:
        self.workers.append(WorkerReport(name))
        return self.cls.options(name=name).remote(name, *self.actor_args)

    def start(self, n: int) -> list[_Slot]:
        for i in range(n):
            actor = self._start(f"{self.tag}-w{i}")
            self.slots.append(_Slot(i, actor, self.workers[-1]))
        refs = [s.actor.ready.remote() for s in self.slots]
        deadline = time.monotonic() + self.cfg.start_timeout_s
        for s, ref in zip(list(self.slots), refs):
            try:
                info = self.ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
            except self.ray.exceptions.GetTimeoutError:
                raise EngineError(f"batch | {n} worker(s) not started within "
                                  f"{self.cfg.start_timeout_s:g} s; expected free resources, have "
                                  f"{self.ray.available_resources()}") from None
            except self.ray.exceptions.RayError as e:  # died while starting (e.g. Ray's OOM killer)
                log.warning("worker %s died while starting: %s", s.report.name,
                            str(e).strip().splitlines()[0][:200])
                self._replace(s)  # the replacement starts in the background with its first item
                continue
            s.report.host = info["host"]
            if self.plan is None and info.get("plan") is not None:
                self.plan = {"kernels": info["kernels"], "stages": info["plan"]}
            if err := info["error"]:  # e.g. no face in the source: every worker would fail
                cls = getattr(errors, err["error_type"], None)
                if isinstance(cls, type) and issubclass(cls, errors.FusionError):
                    raise cls(err["error"])
                raise EngineError(f"worker {s.report.name} | setup failed: {err['error']}")
        log.info("%d worker(s) ready: %s", n, ", ".join(f"{s.report.name}@{s.report.host}"
                                                        for s in self.slots))
        return self.slots

    def _replace(self, slot: _Slot) -> None:
        slot.report.died = True
        limit = len(self.slots) * (self.cfg.retries + 1)
        if self.restarts >= limit:
            log.error("worker %s died; %d restarts already, not replacing", slot.report.name, limit)
            slot.alive = False
            return
        self.restarts += 1
        name = f"{self.tag}-w{slot.index}r{self.restarts}"
        log.warning("worker %s died; starting %s and requeueing its items", slot.report.name, name)
        slot.actor, slot.report = self._start(name), self.workers[-1]

    # -- scheduling ------------------------------------------------------------
    def _fill(self) -> None:
        for depth in range(self.cfg.in_flight):  # breadth first: every worker busy before queues deepen
            for slot in self.slots:
                while slot.alive and len(slot.refs) <= depth and self.pending:
                    item = self.pending.popleft()
                    if self.reports[item.input_id].status == "failed":
                        self.on_event("dropped", item, {})  # a sibling segment already failed
                        continue
                    ref = slot.actor.process.remote(item)
                    slot.refs.add(ref)
                    self.inflight[ref] = (item, slot, slot.actor, slot.report.name)

    def run(self) -> None:
        while self.pending or self.inflight:
            self._fill()
            if not self.inflight:
                break
            ready, _ = self.ray.wait(list(self.inflight), num_returns=1)
            for ref in ready:
                self._collect(ref)
        for item in self.pending:  # only left when every worker is gone
            self._fail(item, {"error": f"no workers left after {self.restarts} restarts"})

    def _collect(self, ref: Any) -> None:
        item, slot, actor, name = self.inflight.pop(ref)
        slot.refs.discard(ref)
        self.attempts[item.id] += 1
        try:
            res = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            if slot.actor is actor:  # first lost item of this actor: replace it once
                self._replace(slot)
            why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            res = {"ok": False, "retryable": True, "worker": name,
                   "error": f"worker {name} died ({type(e).__name__}: {why})"}
        except self.ray.exceptions.RayError as e:
            res = {"ok": False, "retryable": True, "worker": name,
                   "error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}"}
        self._book(item, res)

    def _book(self, item: WorkItem, res: dict) -> None:
        rep = self.reports[item.input_id]
        rep.attempts = max(rep.attempts, self.attempts[item.id])
        if not res.get("ok"):
            if res.get("retryable") and self.attempts[item.id] <= self.cfg.retries:
                log.warning("%s: attempt %d failed (%s); retrying", item.id,
                            self.attempts[item.id], res["error"])
                self.pending.append(item)
                self.on_event("retry", item, res)
            else:
                self._fail(item, res)
            return
        w = next(w for w in self.workers if w.name == res["worker"])
        w.busy_s += res["seconds"]
        w.cpu_s += res.get("cpu_s", 0.0)
        if item.kind != "stitch":  # a stitch is a remux: its frames were counted per segment
            w.items += 1
            w.frames += res["frames"]
            rep.frames += res["frames"]
            if res.get("faces") is not None:
                rep.faces = (rep.faces or 0) + res["faces"]
        rep.seconds += res["seconds"]
        if res["worker"] not in rep.workers:
            rep.workers.append(res["worker"])
        if item.kind == "segment":
            self.left[item.input_id] -= 1
            if self.left[item.input_id] == 0:
                self.pending.appendleft(self.stitches[item.input_id])  # finish this video first
        else:
            rep.status = "done"
            clean_partials(item.dst)
        self.on_event("done", item, res)

    def _fail(self, item: WorkItem, res: dict) -> None:
        rep = self.reports[item.input_id]
        rep.status = "failed"
        rep.error = rep.error or (res["error"] if item.kind in ("image", "video")
                                  else f"{item.id}: {res['error']}")
        clean_partials(item.dst)
        log.error("%s failed: %s", item.id, res["error"])
        self.on_event("failed", item, res)

    def stop(self) -> None:
        for slot in self.slots:
            try:
                self.ray.kill(slot.actor)
            except Exception:  # noqa: BLE001 - already dead
                pass


def run_batch(config: BatchConfig, plans: list[InputPlan],
              on_event: EventFn | None = None) -> JobReport:
    """Run the planned job on Ray and return the report (also when items failed).

    Raises:
        EngineError: Ray missing, or the cluster lacks the CPUs/GPUs asked for per worker.
        InputError / NoFaceError: the source image is unreadable or has no face.
    """
    for p in plans:
        clean_partials(p.dst)  # leftovers of a killed earlier run
        for i in p.items:
            clean_partials(i.dst)
    started = connect(config)
    ray = import_ray()
    t0 = time.perf_counter()
    driver = _Driver(config, plans, on_event)
    try:
        work = len(driver.pending)
        if work:
            resources = ray.cluster_resources()
            driver.start(worker_count(config, resources, work))
            driver.run()
    finally:
        driver.stop()
        if started:
            ray.shutdown()
    settings = {"source": config.source, "address": config.address or "local",
                "workers": len(driver.slots),
                "cpus_per_worker": config.cpus_per_worker, "gpus_per_worker": config.gpus_per_worker,
                "retries": config.retries, "ray": ray.__version__,
                "pipeline": {k: v for k, v in asdict(config.pipeline).items()
                             if k in ("swapper", "engine", "device", "kernels", "det_size",
                                      "select", "precision")}}
    # what the workers' plan chose (kernels "auto" and engine "default" resolved there)
    kernels = driver.plan["kernels"] if driver.plan else config.pipeline.kernels
    settings["path"] = {"device": "gpu", "host": "cpu"}.get(kernels, kernels)
    if driver.plan:
        settings["plan"] = driver.plan["stages"]
    if kernels == "device":
        settings["gpu"] = {k: v for k, v in asdict(config.pipeline).items()
                           if k in ("precision", "gen_batch", "cuda_graphs")}
    if config.video is not None:
        settings["video"] = {k: v for k, v in asdict(config.video).items()
                             if k in ("batch", "encoders", "preset")}
    return JobReport(list(driver.reports.values()), driver.workers, time.perf_counter() - t0,
                     driver.restarts, settings)
