"""The HTTP service: ``create_app(settings)`` builds a FastAPI app around the swap pipeline.

Routes: /v1/identities, /v1/swap, /v1/jobs[/{id}[/result]], /healthz, /readyz, /metrics,
/admin/reload, and the web page at /. Errors are ``{"error": "...", "request_id": "..."}``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route signatures at run
# time, and UploadFile is imported inside create_app (fastapi is optional).
import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from ..errors import EngineError, FusionError, InputError, NoFaceError
from ..pipeline.image_io import encode_image
from .batcher import QueueFull
from .jobs import JobManager, JobsFull
from .logs import new_request_id, request_id
from .metrics import Metrics
from .runtime import IdentityStore, NotReady, ReloadBusy, Runtime
from .settings import ServeSettings
from .uploads import (Admission, ApiError, decode_image, read_limited, remove_tree,
                      save_limited)

log = logging.getLogger(__name__)
access = logging.getLogger("fusionrt.serve.access")

STATIC = Path(__file__).resolve().parent / "static"
FORMATS = {"png": (".png", "image/png"), "jpeg": (".jpg", "image/jpeg"),
           "jpg": (".jpg", "image/jpeg")}
# PipelineConfig fields a reload may change (the rest is fixed for the process).
RELOADABLE = {"swapper", "engine", "device", "allow_synthetic", "det_size", "score_threshold",
              "nms_threshold", "feather", "color_transfer", "poisson", "select"}
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def create_app(settings: ServeSettings | None = None):
    """A ready-to-serve FastAPI app; models load in the background at startup (``/readyz``)."""
    try:
        from fastapi import FastAPI, File, Form, Request, UploadFile
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import FileResponse, JSONResponse, Response
        from fastapi.staticfiles import StaticFiles
    except ImportError:
        raise EngineError("serve | needs FastAPI: pip install 'fusionrt[serve]'") from None

    s = settings or ServeSettings()
    if s.pipeline.select == "reference":
        raise InputError("serve | selection 'reference' needs a per-request reference; "
                         "expected 'largest' or 'all'")
    metrics = Metrics()
    runtime = Runtime(s, metrics)
    identities = IdentityStore(s.max_identities)
    admission = Admission(s.queue, metrics, s.retry_after_s)

    @asynccontextmanager
    async def lifespan(app):
        runtime.start()
        app.state.jobs = JobManager(s, runtime, identities, metrics)
        yield
        app.state.jobs.close()
        await asyncio.to_thread(runtime.close)

    app = FastAPI(title="fusionrt", version="1", lifespan=lifespan,
                  description="Face swap service: identities, image swaps, video jobs.")
    app.state.settings, app.state.runtime, app.state.metrics = s, runtime, metrics
    app.state.identities, app.state.admission = identities, admission
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "request_id": request_id.get()}, status,
                            headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error(e.status, e.message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in d['loc'][1:]) or d['loc'][0]}: {d['msg']}"
                 for d in e.errors()]
        return error(422, "request | " + "; ".join(parts))

    @app.middleware("http")
    async def observe(request: Request, call_next):
        rid = new_request_id(request.headers.get("x-request-id"))
        token = request_id.set(rid)
        t0 = time.perf_counter()
        try:
            limit = s.max_video_bytes if request.url.path == "/v1/jobs" else 2 * s.max_upload_bytes
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > limit + 65536:
                metrics.rejected.labels("too_large").inc()
                response = error(413, f"request | body {int(length) / 1e6:.1f} MB; expected at "
                                      f"most {limit / 1e6:.1f} MB")
            else:
                response = await call_next(request)
        except Exception:
            log.exception("unhandled error")
            response = error(500, "server | internal error; see the server log for this "
                                  "request id")
        finally:
            request_id.reset(token)
        route = request.scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        seconds = time.perf_counter() - t0
        metrics.latency.labels(path, request.method, str(response.status_code)).observe(seconds)
        response.headers["X-Request-ID"] = rid
        access.info("request", extra={"request_id": rid, "method": request.method,
                                      "route": path, "status": response.status_code,
                                      "ms": round(seconds * 1000, 2)})
        return response

    # -- helpers ------------------------------------------------------------------------
    def acquire():
        try:
            return runtime.acquire()
        except NotReady as e:
            raise ApiError(503, f"models | not ready ({e}); retry later",
                           {"Retry-After": str(s.retry_after_s)}) from None

    async def image_of(upload, field: str):
        data = await read_limited(upload, field, s.max_upload_bytes)
        return await asyncio.to_thread(decode_image, data, field, s.max_image_side)

    @contextmanager
    def work_errors():
        """Map what the pipeline raises to HTTP statuses."""
        try:
            yield
        except asyncio.TimeoutError:
            metrics.rejected.labels("timeout").inc()
            raise ApiError(504, f"request | not finished within {s.request_timeout_s:.0f} s; "
                                "the server is overloaded, retry later") from None
        except QueueFull as e:
            metrics.rejected.labels("queue_full").inc()
            raise ApiError(429, f"{e}; retry later", {"Retry-After": str(s.retry_after_s)}) from None
        except NoFaceError as e:
            raise ApiError(422, str(e)) from None
        except InputError as e:
            raise ApiError(400, str(e)) from None

    # -- routes ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", tags=["ops"])
    async def healthz():
        """The process is up (models may still be loading)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz():
        """200 once a model version is loaded, warmed and gated; 503 before (or on failure)."""
        v = runtime.current
        if v is None:
            return JSONResponse({"status": "failed" if runtime.error else "loading",
                                 "error": runtime.error}, 503)
        return {"status": "ready", "version": v.version, "stages": v.stages}

    @app.get("/metrics", tags=["ops"])
    async def prometheus_metrics():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/v1/identities", status_code=201, tags=["swap"])
    async def create_identity(image: UploadFile = File(..., description="photo with one face")):
        """Detect the largest face (and embed it for neural swappers); keep it server-side."""
        with admission.admit():
            img = await image_of(image, "image")
            v = acquire()
            try:
                with work_errors():
                    prepared = await v.prepare(img, s.request_timeout_s, "identity")
            finally:
                v.release()
            rec = identities.add(img, v.version, prepared)
        f = prepared.face
        return {"id": rec.id, "version": v.version,
                "face": {"box": [round(float(x), 1) for x in f.box], "score": round(f.score, 4)}}

    @app.post("/v1/swap", tags=["swap"],
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
    async def swap(target: UploadFile = File(..., description="image to put the face into"),
                   source: UploadFile | None = File(None, description="image with the face"),
                   identity_id: str | None = Form(None, description="from /v1/identities"),
                   format: str = Form("png", description="png or jpeg")):
        """Swap the source face (an image or a stored identity) into ``target``."""
        if format.lower() not in FORMATS:
            raise ApiError(422, f"field 'format' | {format!r}; expected png or jpeg")
        if (source is None) == (not identity_id):
            raise ApiError(422, "request | give exactly one of 'source' (image) or 'identity_id'")
        rec = identities.get(identity_id) if identity_id else None
        if identity_id and rec is None:
            raise ApiError(404, f"identity '{identity_id}' | unknown (never created, or "
                                "forgotten after a restart); create one with POST /v1/identities")
        with admission.admit():
            t0 = time.perf_counter()
            img = await image_of(target, "target")
            src_img = None if rec else await image_of(source, "source")
            decode_ms = (time.perf_counter() - t0) * 1000.0
            v = acquire()
            try:
                with work_errors():
                    if rec is not None:
                        prepared = rec.prepared.get(v.version)
                        if prepared is None:  # made under an older version: redo it once
                            prepared = await v.prepare(rec.image, s.request_timeout_s, "identity")
                            identities.remember(rec, v.version, prepared)
                    else:
                        prepared = await v.prepare(src_img, s.request_timeout_s, "source")
                    out = await v.swap(img, prepared, s.request_timeout_s)
            finally:
                v.release()
            t1 = time.perf_counter()
            ext, media = FORMATS[format.lower()]
            data = await asyncio.to_thread(encode_image, out.image, ext)
            ms = {"decode": decode_ms, **out.stages_ms,
                  "encode": (time.perf_counter() - t1) * 1000.0}
        timing = ", ".join(f"{k};dur={v:.1f}" for k, v in ms.items())
        return Response(data, media_type=media, headers={
            "X-Model-Version": out.version, "X-Faces-Swapped": str(out.faces),
            "X-Batch-Size": str(out.batch), "Server-Timing": timing})

    @app.post("/v1/jobs", status_code=202, tags=["jobs"])
    async def create_job(video: UploadFile = File(..., description="video to process"),
                         identity_id: str = Form(..., description="from /v1/identities")):
        """Queue a video job; it runs even if the client goes away. Poll /v1/jobs/{id}."""
        from ..pipeline.video.io import probe
        rec = identities.get(identity_id)
        if rec is None:
            raise ApiError(404, f"identity '{identity_id}' | unknown; create one with "
                                "POST /v1/identities")
        jobs: JobManager = app.state.jobs
        if jobs.active() >= s.max_jobs_queued:
            metrics.rejected.labels("jobs_full").inc()
            raise ApiError(429, f"jobs | {s.max_jobs_queued} queued or running; retry later",
                           {"Retry-After": str(10 * s.retry_after_s)})
        ext = Path(video.filename or "").suffix.lower()
        ext = ext if ext in VIDEO_EXTS else ".mp4"  # FFmpeg probes the content, not the name
        job_id, folder = jobs.new_folder()
        try:
            path = folder / f"input{ext}"
            await save_limited(video, "video", path, s.max_video_bytes)
            try:
                info = await asyncio.to_thread(probe, path)
            except FusionError as e:
                raise ApiError(400, str(e).replace(f"video '{path}'", "upload 'video'")) from None
            if max(info.width, info.height) > s.max_image_side or info.frames > s.max_video_frames:
                raise ApiError(422, f"video | {info.width}x{info.height}, {info.frames} frames; "
                                    f"expected at most {s.max_image_side} pixels per side and "
                                    f"{s.max_video_frames} frames")
            job = jobs.submit(job_id, folder, path.name, rec, info.frames)
        except JobsFull as e:
            remove_tree(folder)
            raise ApiError(429, f"{e}; retry later", {"Retry-After": str(10 * s.retry_after_s)})
        except BaseException:
            remove_tree(folder)
            raise
        return JSONResponse(job.to_dict(), 202, headers={"Location": f"/v1/jobs/{job.id}"})

    def job_or_404(job_id: str):
        job = app.state.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"job '{job_id}' | unknown")
        return job

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    async def get_job(job_id: str):
        return job_or_404(job_id).to_dict()

    @app.get("/v1/jobs/{job_id}/result", tags=["jobs"],
             responses={200: {"content": {"video/mp4": {}}}})
    async def job_result(job_id: str):
        job = job_or_404(job_id)
        if job.state != "succeeded":
            why = f": {job.error}" if job.error else ""
            raise ApiError(409, f"job '{job_id}' | state {job.state}{why}; expected succeeded")
        return FileResponse(job.result, media_type="video/mp4", filename=f"{job_id}.mp4")

    @app.post("/admin/reload", tags=["admin"])
    async def reload(request: Request):
        """Build, warm and gate a new model version, then swap it in (API key required).

        Body (optional JSON): PipelineConfig fields to change, e.g. ``{"swapper": "classic"}``.
        """
        if not s.api_key:
            raise ApiError(403, "admin | disabled; start the server with --api-key")
        auth = request.headers.get("authorization", "")
        given = request.headers.get("x-api-key") or (auth[7:] if auth.startswith("Bearer ") else "")
        if not hmac.compare_digest(given.encode(), s.api_key.encode()):
            raise ApiError(401, "admin | missing or wrong API key; send 'Authorization: Bearer KEY'")
        body = await request.body()
        try:
            changes = (await request.json()) if body.strip() else {}
        except ValueError:
            raise ApiError(400, "reload | body is not JSON; expected an object") from None
        if not isinstance(changes, dict) or set(changes) - RELOADABLE:
            bad = sorted(set(changes) - RELOADABLE) if isinstance(changes, dict) else changes
            raise ApiError(422, f"reload | unknown fields {bad}; expected some of "
                                f"{sorted(RELOADABLE)}")
        if changes.get("select") == "reference":
            raise ApiError(422, "reload | selection 'reference'; expected 'largest' or 'all'")
        t0 = time.perf_counter()
        try:
            new, old = await asyncio.to_thread(runtime.reload, changes)
        except ReloadBusy as e:
            raise ApiError(409, str(e)) from None
        except FusionError as e:
            raise ApiError(422, f"reload refused, version "
                                f"{runtime.current.version if runtime.current else None} "
                                f"keeps serving | {e}") from None
        return {"version": new.version, "previous": old, "stages": new.stages,
                "seconds": round(time.perf_counter() - t0, 3)}

    return app
