"""The HTTP service: ``create_app(settings)`` builds a FastAPI app around the swap pipeline.

Routes: /v1/identities, /v1/swap, /v1/jobs[/{id}[/result]], /healthz, /readyz, /metrics,
/admin/reload, and the web page at /. Errors are ``{"error": "...", "request_id": "..."}``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route signatures at run
# time, and UploadFile is imported inside create_app (fastapi is optional).
import asyncio
import hmac
import json
import logging
import sys
import tempfile
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from ..errors import EngineError, FusionError, InputError, NoFaceError
from ..pipeline.image_io import encode_image
from ..runtime.home import fusionrt_home
from .batcher import QueueFull
from .guards import CSP, CSP_EXEMPT, BodyGuard, clean, cross_origin, reasons
from .jobs import JobManager, JobsFull
from .logs import new_request_id, request_id
from .metrics import Metrics
from .runtime import IdentityStore, NotReady, ReloadBusy, Runtime, reload_changes
from .settings import ServeSettings
from .uploads import (Admission, ApiError, decode_image, read_limited, remove_tree,
                      save_limited)

log = logging.getLogger(__name__)
access = logging.getLogger("fusionrt.serve.access")

STATIC = Path(__file__).resolve().parent / "static"
FORMATS = {"png": (".png", "image/png"), "jpeg": (".jpg", "image/jpeg"),
           "jpg": (".jpg", "image/jpeg")}
# Image routes: counted against ``queue`` from the first body byte (a stalled upload holds a
# place), so slow clients cannot pile up unbounded.
ADMITTED = ("/v1/swap", "/v1/identities")
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
CANCEL_WAIT_S = 10.0  # DELETE of a running job waits this long for it to stop (else 202)


def create_app(settings: ServeSettings | None = None):
    """A ready-to-serve FastAPI app; models load in the background at startup (``/readyz``)."""
    try:
        from fastapi import FastAPI, File, Form, Request, UploadFile
        from fastapi.exceptions import RequestValidationError
        from fastapi.middleware.cors import CORSMiddleware
        from fastapi.responses import FileResponse, JSONResponse, Response
        from fastapi.staticfiles import StaticFiles
        from starlette.exceptions import HTTPException  # the base: the router raises these
    except ImportError:
        raise EngineError("serve | needs FastAPI: pip install 'fusionrt[serve]'") from None

    s = settings or ServeSettings()
    if s.pipeline.select == "reference":
        raise InputError("serve | selection 'reference' needs a per-request reference; "
                         "expected 'largest' or 'all'")
    metrics = Metrics()
    runtime = Runtime(s, metrics)
    identities = IdentityStore(s.max_identities, s.max_identity_bytes)
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

    # server paths in messages are cut to their file name (and Python reprs removed): an
    # error tells the client what was wrong with its request, not where this server keeps files
    roots = [str(p) for p in (s.jobs_dir, fusionrt_home(), Path.home(), tempfile.gettempdir(),
                              STATIC.parents[2], sys.prefix) if p]

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        """Every error answer: ``{"error": "subject | problem; expected ...", "request_id"}``."""
        return JSONResponse({"error": clean(message, roots), "request_id": request_id.get()},
                            status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error(e.status, e.message, e.headers)

    @app.exception_handler(HTTPException)  # FastAPI's and Starlette's own: 404, 405, ...
    async def _http_error(request: Request, e: HTTPException):
        route = f"route '{request.url.path[:100]}'"
        message = {404: f"{route} | not found; the API's routes are listed at /docs",
                   405: f"{route} | method {request.method} not allowed; expected "
                        f"{(e.headers or {}).get('Allow', 'another method')}"
                   }.get(e.status_code, f"request | {e.detail}")
        return error(e.status_code, message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return error(422, "request | " + reasons(e.errors()))

    def body_limit(path: str) -> int:
        """Most body bytes a route reads (+64 KB for the multipart framing and form fields)."""
        files = {"/v1/jobs": s.max_video_bytes, "/v1/swap": 2 * s.max_upload_bytes,
                 "/v1/identities": s.max_upload_bytes}
        return files.get(path, 0) + 65536  # other routes: /admin/reload's JSON at most

    # inside `observe`: its request id, headers and access line cover the guard's 408/413
    app.add_middleware(BodyGuard, limit_of=body_limit, idle_s=s.body_timeout_s,
                       total_s=s.body_total_s, metrics=metrics)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        rid = new_request_id(request.headers.get("x-request-id"))
        token = request_id.set(rid)
        t0 = time.perf_counter()
        try:
            refused = cross_origin(request.method, request.headers, request.url.scheme,
                                   s.allow_origins)
            if refused:
                metrics.rejected.labels("cross_origin").inc()
                response = error(403, refused)
            elif request.method == "POST" and request.url.path in ADMITTED:
                with admission.admit():  # before the body is read: 429 costs no upload
                    response = await call_next(request)
            else:
                response = await call_next(request)
        except ApiError as e:  # admission's 429
            response = error(e.status, e.message, e.headers)
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
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if not request.url.path.startswith(CSP_EXEMPT):
            response.headers.setdefault("Content-Security-Policy", CSP)
        access.info("request", extra={"request_id": rid, "method": request.method,
                                      "route": path, "status": response.status_code,
                                      "ms": round(seconds * 1000, 2)})
        return response

    if s.allow_origins:  # outermost: pages of those origins may also read the answers
        app.add_middleware(CORSMiddleware, allow_origins=list(s.allow_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "X-Request-ID"],
                           expose_headers=["Server-Timing", "X-Model-Version",
                                           "X-Faces-Swapped", "X-Request-ID", "Retry-After"])

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
                                 "error": runtime.error and clean(runtime.error, roots)}, 503)
        return {"status": "ready", "version": v.version, "stages": v.stages}

    @app.get("/metrics", tags=["ops"])
    async def prometheus_metrics():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/v1/identities", status_code=201, tags=["swap"])
    async def create_identity(image: UploadFile = File(..., description="photo with one face")):
        """Detect the largest face (and embed it for neural swappers); keep it server-side
        (its embedding and a small crop of the face, not the photo)."""
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
        headers = {"X-Model-Version": out.version, "X-Faces-Swapped": str(out.faces),
                   "Server-Timing": timing}
        if s.debug_headers:  # how full the generator batch was: other clients' traffic
            headers["X-Batch-Size"] = str(out.batch)
        return Response(data, media_type=media, headers=headers)

    @app.post("/v1/jobs", status_code=202, tags=["jobs"])
    async def create_job(video: UploadFile = File(..., description="video to process"),
                         identity_id: str = Form(..., description="from /v1/identities"),
                         crf: int = Form(18, description="H.264 quality, 0 (lossless) to 51; "
                                                         "lower is better and larger")):
        """Queue a video job; it runs even if the client goes away. Poll /v1/jobs/{id};
        DELETE it to cancel. Refused (422) over the per-job pixel budget."""
        from ..pipeline.video.io import probe
        if not 0 <= crf <= 51:
            raise ApiError(422, f"field 'crf' | {crf}; expected 0 to 51")
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
            pixels = info.width * info.height * info.frames
            if pixels > s.max_job_pixels:
                raise ApiError(422, f"video | {info.width}x{info.height} x {info.frames} frames "
                                    f"= {pixels:,} pixels; expected at most "
                                    f"{s.max_job_pixels:,} per job (width x height x frames): "
                                    "send a shorter or smaller video")
            job = await asyncio.to_thread(jobs.submit, job_id, folder, path.name, rec,
                                          info.frames, info.width, info.height, crf)
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
        d = job_or_404(job_id).to_dict()
        if d.get("error"):  # a job's error text is shown to the client: no server paths
            d["error"] = clean(d["error"], roots)
        return d

    @app.get("/v1/jobs/{job_id}/result", tags=["jobs"],
             responses={200: {"content": {"video/mp4": {}}}})
    async def job_result(job_id: str):
        job = job_or_404(job_id)
        if job.state != "succeeded":
            why = f": {job.error}" if job.error else ""
            raise ApiError(409, f"job '{job_id}' | state {job.state}{why}; expected succeeded")
        return FileResponse(job.result, media_type="video/mp4", filename=f"{job_id}.mp4")

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"],
                responses={202: {"description": "running; stops at its next batch"},
                           204: {"description": "finished job and its files deleted"}})
    async def delete_job(job_id: str):
        """Cancel a queued or running job (its partial output is removed; state "cancelled"),
        or delete a finished one and its files."""
        jobs: JobManager = app.state.jobs
        got = await asyncio.to_thread(jobs.delete, job_id)  # may remove a large result
        if got is None:
            raise ApiError(404, f"job '{job_id}' | unknown")
        action, job = got
        if action == "deleted":
            return Response(status_code=204)
        if action == "cancelling":  # stops at the next batch: wait a little for it
            await asyncio.to_thread(job.ended.wait, CANCEL_WAIT_S)
        return JSONResponse(job.to_dict(), 200 if job.state != "running" else 202)

    @app.post("/admin/reload", tags=["admin"])
    async def reload(request: Request):
        """Build, warm and gate a new model version, then swap it in (API key required).

        Body (optional JSON): PipelineConfig fields to change, e.g. ``{"swapper": "classic"}``;
        their types and ranges are checked first (422 with every reason).
        """
        if not s.api_key:
            raise ApiError(403, "admin | disabled; start the server with --api-key")
        auth = request.headers.get("authorization", "")
        given = request.headers.get("x-api-key") or (auth[7:] if auth.startswith("Bearer ") else "")
        if not hmac.compare_digest(given.encode(), s.api_key.encode()):
            raise ApiError(401, "admin | missing or wrong API key; send 'Authorization: Bearer KEY'")
        body = await request.body()
        try:
            raw = json.loads(body) if body.strip() else {}
        except ValueError:
            raise ApiError(400, "reload | body is not JSON; expected an object") from None
        try:  # in a thread: checking a CUDA device may import torch
            changes = await asyncio.to_thread(reload_changes, raw)
        except InputError as e:
            raise ApiError(422, str(e)) from None
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
