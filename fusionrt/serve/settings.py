"""Service settings: one dataclass, filled by ``fusionrt serve`` flags or by tests."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..pipeline.settings import PipelineConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
API_KEY_ENV = "FUSIONRT_API_KEY"


@dataclass
class ServeSettings:
    """How the service runs.

    Limits are enforced per request: bodies over ``max_upload_bytes`` (images) or
    ``max_video_bytes`` (jobs) get 413 as soon as the limit is passed (counted as the bytes
    arrive), a body with no bytes for ``body_timeout_s`` or still arriving after
    ``body_total_s`` gets 408, images with a side over ``max_image_side`` get 422, and more
    than ``queue`` image requests accepted and unanswered (uploads still arriving included) get
    429 with ``Retry-After``. State-changing requests from a browser page of another origin
    than the server's own and ``allow_origins`` get 403.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    pipeline: PipelineConfig = field(default_factory=lambda: PipelineConfig(swapper="auto"))
    max_batch: int = 8             # work items per engine call (generator and detector)
    max_delay_ms: float = 5.0      # how long a worker waits to fill a batch
    queue: int = 64                # requests accepted and not yet answered; more get 429
    request_timeout_s: float = 30.0
    retry_after_s: int = 1
    api_key: str | None = None     # /admin/*; None: api_key_file, else $FUSIONRT_API_KEY, else 403
    api_key_file: Path | None = None  # a file holding the key (not visible in `ps`)
    allow_origins: tuple[str, ...] = ()  # other origins whose pages may POST/DELETE here
    debug_headers: bool = False    # X-Batch-Size on swaps (reveals other clients' traffic)
    body_timeout_s: float = 30.0   # longest wait for the next bytes of a request body
    body_total_s: float = 300.0    # longest time for a whole body (200 MB at ~0.7 MB/s)
    max_upload_bytes: int = 10 * 1024 * 1024
    max_video_bytes: int = 200 * 1024 * 1024
    max_image_side: int = 4096
    max_video_frames: int = 20_000
    max_identities: int = 1024     # least recently used identities are forgotten beyond this
    max_identity_bytes: int = 256 * 1024 * 1024  # ... or beyond this many bytes (~450 KB each)
    max_jobs_queued: int = 8       # video jobs waiting or running; more get 429
    max_jobs_kept: int = 100       # finished jobs (and their files) kept for download
    # per video job: width x height x frames (8e9 passes 1080p x 2 min at 30 fps, 7.5e9; a
    # 4096² clip at max_video_frames is 3.4e11) and wall time from its start (a job over it
    # fails and its partial output is removed; a reload waits this long for running jobs)
    max_job_pixels: int = 8_000_000_000
    job_time_limit_s: float = 3600.0
    jobs_dir: Path | None = None   # default: $FUSIONRT_HOME/serve/jobs
    warmup_source: Path = EXAMPLES / "astronaut.png"
    warmup_target: Path = EXAMPLES / "grace_hopper.jpg"

    def __post_init__(self) -> None:
        if self.api_key is None and self.api_key_file is not None:
            self.api_key = read_key_file(Path(self.api_key_file))
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        self.allow_origins = tuple(check_origin(o) for o in self.allow_origins)
        for name in ("max_batch", "queue", "max_upload_bytes", "max_video_bytes",
                     "max_image_side", "max_identities", "max_identity_bytes",
                     "max_jobs_queued", "max_jobs_kept", "max_job_pixels"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"setting '{name}' | got {getattr(self, name)}; expected >= 1")
        if not self.job_time_limit_s > 0:
            raise InputError(f"setting 'job_time_limit_s' | got {self.job_time_limit_s}; "
                             "expected > 0 seconds")
        if not (self.body_timeout_s > 0 and self.body_total_s > 0):
            raise InputError(f"settings | body_timeout_s {self.body_timeout_s}, body_total_s "
                             f"{self.body_total_s}; expected both > 0 seconds")
        if self.max_delay_ms < 0 or self.request_timeout_s <= 0:
            raise InputError(f"settings | max_delay_ms {self.max_delay_ms}, request_timeout_s "
                             f"{self.request_timeout_s}; expected >= 0 and > 0")


def read_key_file(path: Path) -> str:
    """The API key in ``path`` (surrounding whitespace and newline stripped)."""
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"api key file '{path}' | cannot read: "
                         f"{getattr(e, 'strerror', None) or e}") from None
    if not key:
        raise InputError(f"api key file '{path}' | empty; expected the key on one line")
    return key


def check_origin(origin: str) -> str:
    """``http://host[:port]`` as a browser sends it in ``Origin`` (no path, no slash)."""
    o = origin.strip().rstrip("/").lower()
    if not re.fullmatch(r"https?://[^/\s?#]+", o):
        raise InputError(f"origin '{origin}' | not an origin; expected scheme://host[:port], "
                         "e.g. http://localhost:3000")
    return o
