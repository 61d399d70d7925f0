"""Telling running servers to load a released version (plain HTTP, no client library needed).

* Triton (``tritonserver --model-control-mode=explicit``): ``POST v2/repository/models/{m}/load``
  re-reads the model's folder and config, loads the newly selected version before unloading
  the old one, then ``GET v2/models/{m}/versions/{v}/ready`` confirms it.
* fusionrt's PyTriton server (``fusionrt triton serve``): its models are Python callables, so
  Triton's repository API cannot swap them. It binds a small ``fusionrt_control`` model instead;
  an inference on it with ``{"action": "load"}`` makes the server build, warm and swap in the
  pipeline from the repository's served versions, and answers only when that is done.
* fusionrt's FastAPI server: ``POST /admin/reload`` (API key), which rebuilds from its model
  store the same way.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass

from ..errors import EngineError, InputError

log = logging.getLogger(__name__)

CONTROL_MODEL = "fusionrt_control"


def _http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
          timeout: float = 300.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise EngineError(f"server '{url}' | unreachable: {getattr(e, 'reason', e)}") from None


def control(url: str, command: dict, timeout: float = 300.0) -> dict:
    """Send one command to a fusionrt PyTriton server's control model; returns its reply."""
    payload = {"inputs": [{"name": "COMMAND", "shape": [1], "datatype": "BYTES",
                           "data": [json.dumps(command)]}]}
    status, raw = _http("POST", f"{url.rstrip('/')}/v2/models/{CONTROL_MODEL}/infer",
                        json.dumps(payload).encode(), {"Content-Type": "application/json"},
                        timeout)
    if status != 200:
        raise EngineError(f"server '{url}' | control {command.get('action')} answered "
                          f"{status}: {raw.decode(errors='replace')[:300]}")
    out = json.loads(raw)["outputs"][0]["data"][0]
    return json.loads(out)


@dataclass(frozen=True)
class Server:
    """A running server to notify: ``kind`` is ``triton`` (Triton or fusionrt's PyTriton
    server, told apart by the control model) or ``fusionrt`` (the FastAPI server)."""

    url: str
    kind: str = "triton"
    api_key: str | None = None
    timeout_s: float = 300.0

    def load(self, model: str, version: int) -> str:
        """Make the server serve ``version`` of ``model``; returns a line for the report.

        Raises:
            EngineError: unreachable, refused, or another version ready afterwards.
        """
        base = self.url.rstrip("/")
        if self.kind == "fusionrt":
            status, raw = _http("POST", f"{base}/admin/reload", b"{}",
                                {"Content-Type": "application/json",
                                 "Authorization": f"Bearer {self.api_key or ''}"},
                                self.timeout_s)
            if status != 200:
                raise EngineError(f"fusionrt server '{base}' | reload answered {status}: "
                                  f"{raw.decode(errors='replace')[:300]}")
            return f"{base}: fusionrt reloaded ({json.loads(raw).get('version')})"
        status, _ = _http("GET", f"{base}/v2/models/{CONTROL_MODEL}/ready", timeout=10)
        if status == 200:
            reply = control(base, {"action": "load"}, self.timeout_s)
            got = reply.get("versions", {}).get(model)
            if got != version:
                raise EngineError(f"server '{base}' | serves {model} version {got} after load; "
                                  f"expected {version}")
            return f"{base}: PyTriton pipeline now on {model} v{version}"
        status, raw = _http("POST", f"{base}/v2/repository/models/{model}/load", b"",
                            timeout=self.timeout_s)
        if status != 200:
            raise EngineError(f"triton '{base}' | load {model} answered {status}: "
                              f"{raw.decode(errors='replace')[:300]}")
        status, _ = _http("GET", f"{base}/v2/models/{model}/versions/{version}/ready",
                          timeout=30)
        if status != 200:
            raise EngineError(f"triton '{base}' | {model} version {version} not ready after "
                              f"load (HTTP {status})")
        return f"{base}: triton loaded {model} v{version}"


def parse_servers(triton: list[str] | None, fusionrt: list[str] | None,
                  api_key: str | None) -> tuple[Server, ...]:
    """Servers from the CLI flags; a fusionrt server needs the API key."""
    if fusionrt and not api_key:
        raise InputError("--notify-fusionrt | needs --api-key (or $FUSIONRT_API_KEY); "
                         "/admin/reload refuses requests without it")
    return tuple([Server(u) for u in triton or []] +
                 [Server(u, "fusionrt", api_key) for u in fusionrt or []])
