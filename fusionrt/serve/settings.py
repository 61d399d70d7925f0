"""Service settings: one dataclass, filled by ``fusionrt serve`` flags or by tests."""

from __future__ import annotations

import os
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
    ``max_video_bytes`` (jobs) get 413, images with a side over ``max_image_side`` get 422,
    and more than ``queue`` requests accepted and unanswered get 429 with ``Retry-After``.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    pipeline: PipelineConfig = field(default_factory=lambda: PipelineConfig(swapper="auto"))
    max_batch: int = 8             # work items per engine call (generator and detector)
    max_delay_ms: float = 5.0      # how long a worker waits to fill a batch
    queue: int = 64                # requests accepted and not yet answered; more get 429
    request_timeout_s: float = 30.0
    retry_after_s: int = 1
    api_key: str | None = None     # /admin/*; None disables them (403)
    max_upload_bytes: int = 10 * 1024 * 1024
    max_video_bytes: int = 200 * 1024 * 1024
    max_image_side: int = 4096
    max_video_frames: int = 20_000
    max_identities: int = 1024     # least recently used identities are forgotten beyond this
    max_jobs_queued: int = 8       # video jobs waiting or running; more get 429
    max_jobs_kept: int = 100       # finished jobs (and their files) kept for download
    jobs_dir: Path | None = None   # default: $FUSIONRT_HOME/serve/jobs
    warmup_source: Path = EXAMPLES / "astronaut.png"
    warmup_target: Path = EXAMPLES / "grace_hopper.jpg"

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        for name in ("max_batch", "queue", "max_upload_bytes", "max_video_bytes",
                     "max_image_side", "max_identities", "max_jobs_queued", "max_jobs_kept"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"setting '{name}' | got {getattr(self, name)}; expected >= 1")
        if self.max_delay_ms < 0 or self.request_timeout_s <= 0:
            raise InputError(f"settings | max_delay_ms {self.max_delay_ms}, request_timeout_s "
                             f"{self.request_timeout_s}; expected >= 0 and > 0")
