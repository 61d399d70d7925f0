"""``fusionrt serve``: run the HTTP service with uvicorn."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import EngineError
from ..pipeline.plan import engine_help
from ..pipeline.options import add_post_args, post_settings
from ..pipeline.settings import SWAPPER_CHOICES, PipelineConfig

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="run the HTTP service (API, metrics, web page)",
        description="Serve face swaps over HTTP: POST /v1/identities, /v1/swap, /v1/jobs; "
                    "GET /healthz, /readyz, /metrics; POST /admin/reload; web page at /. "
                    "OpenAPI at /docs.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="work items per engine call")
    p.add_argument("--max-delay-ms", type=float, default=5.0,
                   help="longest wait for a batch to fill")
    p.add_argument("--queue", type=int, default=64,
                   help="requests accepted and unanswered; beyond it 429 + Retry-After")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="key for /admin/*; visible to other users in `ps`: "
                                       "prefer $FUSIONRT_API_KEY or --api-key-file. Without "
                                       "a key /admin/* is disabled (403)")
    key.add_argument("--api-key-file", type=Path, metavar="PATH",
                     help="read the /admin/* key from this file (whitespace stripped)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                   help="408 when an upload sends no bytes for S seconds (default 30)")
    p.add_argument("--body-total-timeout", type=float, default=300.0, metavar="S",
                   help="408 when an upload is not complete after S seconds (default 300)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                   help="let web pages of this origin (e.g. http://localhost:3000) POST and "
                        "DELETE here; repeatable. Other cross-origin browser requests get 403")
    p.add_argument("--debug-headers", action="store_true",
                   help="send X-Batch-Size with swaps (it shows other clients' traffic)")
    p.add_argument("--max-identities", type=int, default=1024,
                   help="identities kept; the least recently used are forgotten beyond this "
                        "(default 1024)")
    p.add_argument("--max-identity-mb", type=float, default=256.0,
                   help="... or beyond this many MB in all (default 256; ~0.45 MB each)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="per image upload")
    p.add_argument("--max-video-mb", type=float, default=200.0, help="per video upload")
    p.add_argument("--max-image-side", type=int, default=4096, help="pixels, images and videos")
    p.add_argument("--jobs-dir", type=Path, help="video job files (default $FUSIONRT_HOME/serve/jobs)")
    p.add_argument("--max-job-pixels", type=float, default=8e9,
                   help="per video job, width x height x frames (default 8e9: 1080p x 2 min "
                        "at 30 fps is 7.5e9); over it 422 at submission")
    p.add_argument("--job-time-limit-s", type=float, default=3600.0,
                   help="wall time per video job from its start (default 3600); over it the "
                        "job fails and its partial output is removed")
    p.add_argument("--swapper", default="auto", choices=SWAPPER_CHOICES)
    p.add_argument("--engine", default="default", help=engine_help())
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--select", default="largest", choices=("largest", "all"))
    p.add_argument("--allow-synthetic", action="store_true",
                   help="allow random-weight synthetic models (tests and speed work only)")
    p.add_argument("--log-format", default="json", choices=("json", "text"))
    add_post_args(p)
    p.set_defaults(func=run_serve)


def settings_from_args(args: argparse.Namespace):
    from .settings import ServeSettings
    return ServeSettings(
        host=args.host, port=args.port, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
        queue=args.queue, api_key=args.api_key, request_timeout_s=args.timeout,
        api_key_file=args.api_key_file, allow_origins=tuple(args.allow_origin),
        debug_headers=args.debug_headers, body_timeout_s=args.body_timeout,
        body_total_s=args.body_total_timeout, max_identities=args.max_identities,
        max_identity_bytes=int(args.max_identity_mb * 1e6),
        max_upload_bytes=int(args.max_upload_mb * 1e6),
        max_video_bytes=int(args.max_video_mb * 1e6), max_image_side=args.max_image_side,
        jobs_dir=args.jobs_dir, max_job_pixels=int(args.max_job_pixels),
        job_time_limit_s=args.job_time_limit_s,
        pipeline=PipelineConfig(swapper=args.swapper, engine=args.engine, device=args.device,
                                select=args.select, allow_synthetic=args.allow_synthetic,
                                **post_settings(args)))


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise EngineError("serve | needs uvicorn: pip install 'fusionrt[serve]'") from None
    from .app import create_app
    from .logs import configure_json_logging

    settings = settings_from_args(args)
    from ..runtime.home import fusionrt_home, writable_folder
    # jobs are written under here: an unusable FUSIONRT_HOME is one line, not a startup crash
    writable_folder(Path(settings.jobs_dir) if settings.jobs_dir
                    else fusionrt_home() / "serve" / "jobs")
    if args.log_format == "json":
        configure_json_logging(logging.DEBUG if args.verbose else logging.INFO)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        log.warning("serving on %s without --api-key: /admin/reload is disabled", settings.host)
    app = create_app(settings)
    # our middleware writes one JSON access line per request; uvicorn's own would double it
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_config=None,
                timeout_graceful_shutdown=30)
    return 0
