"""What the service refuses before a route runs, and what it strips from every answer.

- ``BodyGuard`` (pure ASGI middleware) counts and times request bodies as they arrive: a
  chunked upload is stopped at its limit (413) instead of being spooled to disk first, and a
  body that stalls (``body_timeout_s`` without a byte) or drags on (``body_total_s``) gets 408.
  Both answers close the connection. Starlette >= 1.0 has a ``RequestBodyLimitMiddleware``,
  but no body timeouts and it is newer than the FastAPI this package supports (>= 0.110).
- ``cross_origin`` refuses state-changing requests a browser sends for another site's page.
- ``clean`` takes Python reprs and server paths out of error messages; ``reasons`` says what
  pydantic found wrong, one ``field: problem`` each.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterable

from .metrics import Metrics
from .uploads import ApiError, mb

# Strict for everything the service serves: the page loads only its own script and stylesheet
# (nothing inline), shows results from blob: URLs, talks only to this server and may not be
# framed by another site.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; "
       "img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# FastAPI's /docs and /redoc pages load Swagger/ReDoc from a CDN with inline scripts.
CSP_EXEMPT = ("/docs", "/redoc")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLOSE = {"Connection": "close"}  # the rest of a refused body is not read: end the connection


def _header(scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


class BodyGuard:
    """Request-body limits and timeouts, enforced on each chunk as it is received.

    Args:
        app: the ASGI app inside.
        limit_of: path → most body bytes accepted there.
        idle_s: longest wait for the next body chunk.
        total_s: longest time from the first wait to the end of the body.
        metrics: counts refusals (``too_large``, ``body_timeout``).
    """

    def __init__(self, app, limit_of: Callable[[str], int], idle_s: float, total_s: float,
                 metrics: Metrics):
        self.app, self.limit_of, self.metrics = app, limit_of, metrics
        self.idle_s, self.total_s = idle_s, total_s

    def _refuse(self, reason: str, status: int, message: str) -> ApiError:
        self.metrics.rejected.labels(reason).inc()
        return ApiError(status, message, CLOSE)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_of(scope["path"])
        length = _header(scope, b"content-length")
        declared = int(length) if length and length.isdigit() else None
        loop = asyncio.get_running_loop()
        deadline = None
        got, done = 0, False

        async def guarded():
            nonlocal got, done, deadline
            if done:  # body complete: later receives wait for a disconnect, untimed
                return await receive()
            if declared is not None and declared > limit:
                raise self._refuse("too_large", 413, f"request | body {mb(declared)}; expected "
                                                     f"at most {mb(limit)}")
            deadline = deadline or loop.time() + self.total_s
            wait = min(self.idle_s, deadline - loop.time())
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    message = await receive()
            except TimeoutError:
                if wait < self.idle_s:
                    raise self._refuse("body_timeout", 408, f"request | body not complete "
                                       f"after {self.total_s:g} s; expected it within "
                                       f"{self.total_s:g} s") from None
                raise self._refuse("body_timeout", 408, f"request | no body bytes for "
                                   f"{self.idle_s:g} s; expected the upload to keep "
                                   "arriving") from None
            if message["type"] == "http.request":
                got += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if got > limit:
                    raise self._refuse("too_large", 413, f"request | body over "
                                       f"{mb(limit)} (stopped there); expected at most "
                                       f"{mb(limit)}")
            else:
                done = True
            return message

        await self.app(scope, guarded, send)


def _origin(url: str) -> str:
    return url.strip().rstrip("/").lower()


def cross_origin(method: str, headers, scheme: str, allowed: Iterable[str]) -> str | None:
    """Why a request is refused as cross-site (403), or None.

    A browser sends ``Origin`` with every POST, same-origin ones included; a page of another
    site (``http://evil.example``) must not drive this server, which listens on a user's
    loopback. The server's own origin is the one its ``Host`` header names.
    """
    if method not in STATE_CHANGING:
        return None
    origin = headers.get("origin")
    if origin is None:
        if headers.get("sec-fetch-site") == "cross-site":
            return "request | cross-site (Sec-Fetch-Site); expected a same-origin request"
        return None  # not a browser (curl, SDKs), or a browser that sends no Origin
    own = _origin(f"{scheme}://{headers.get('host', '')}")
    if _origin(origin) == own or _origin(origin) in {_origin(a) for a in allowed}:
        return None
    return (f"origin '{origin[:100]}' | cross-origin {method}; expected {own} or an origin "
            "given to --allow-origin")


_LOCATIONS = ("body", "query", "path", "header", "cookie")  # FastAPI's first ``loc`` item


def reasons(errors: Iterable[dict]) -> str:
    """``"target: Field required; det_size: Input should be a valid integer"`` from pydantic's
    ``errors()`` (FastAPI's request validation or a model's)."""
    out = []
    for d in errors:
        loc = list(d["loc"])
        if loc and loc[0] in _LOCATIONS:
            loc = loc[1:]
        msg = ("unknown field" if d["type"] == "extra_forbidden" else
               re.sub(r" or instance of \w+$", "", d["msg"].removeprefix("Value error, ")))
        out.append(f"{'.'.join(str(x) for x in loc) or 'body'}: {msg}")
    return "; ".join(out)


_OBJECT = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")  # <_io.BytesIO object at 0x7f…>
_CLASS = re.compile(r"<class '(?:\w+\.)*(\w+)'>")       # <class 'str'> -> str


def clean(message: str, roots: Iterable[str]) -> str:
    """``message`` without Python reprs (``<_io.BytesIO object at 0x…>``) and with server paths
    under ``roots`` (home, temp, FUSIONRT_HOME, …) shortened to their file name."""
    message = _CLASS.sub(r"\1", _OBJECT.sub("the upload", message))
    for root in sorted({r.rstrip("/") for r in roots if len(r.rstrip("/")) > 1}, key=len,
                       reverse=True):
        message = re.sub(re.escape(root) + r"(/[^\s'\"]*)?(?![\w.-])",
                         lambda m: os.path.basename(m.group(0)) or "…", message)
    return message
