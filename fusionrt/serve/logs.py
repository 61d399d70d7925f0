"""JSON log lines carrying the request id, so one request's lines can be found in a log store."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# A client-sent X-Request-ID is kept only if it is short and plain (it goes into every log line).
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# LogRecord attributes that are not user "extra" fields.
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def new_request_id(incoming: str | None = None) -> str:
    return incoming if incoming and _SAFE_ID.match(incoming) else uuid.uuid4().hex[:16]


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` from the context (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_json_logging(level: int = logging.INFO) -> None:
    """Route every logger (fusionrt's and uvicorn's) through one JSON handler on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
