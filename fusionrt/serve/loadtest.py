"""Loopback load test: measure capacity, drive the service at a multiple of it, and report.

Phases (each bounded in requests and seconds):
  1. capacity: one client, requests back to back → requests/s a single stream gets.
  2. overload: open-loop arrivals at ``factor`` × capacity (new requests do not wait for old
     ones, as real clients don't), with video jobs submitted meanwhile by a client that then
     disconnects; reports throughput, p50/p99 of answered requests, 429 rate, 5xx and lost.
  3. reload under load: a few closed-loop clients (below the queue limit, so nothing is
     refused) while ``/admin/reload`` swaps the model; every request must succeed.
"Lost" = an accepted request that got no answer (transport error or client timeout), or an
accepted job that did not finish. Only loopback addresses are allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import statistics
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_S = 120.0


def check_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"url '{url}' | host {host!r} is not loopback; the load test only "
                         "targets 127.0.0.1/::1/localhost")


@dataclass
class PhaseResult:
    phase: str
    offered_rps: float | None
    sent: int
    ok: int
    rejected_429: int
    client_4xx: int
    server_5xx: int
    lost: int
    seconds: float
    throughput_rps: float
    p50_ms: float | None
    p99_ms: float | None
    rate_429: float
    versions: dict[str, int] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarize(phase: str, rows: list[tuple[int | None, float, str | None]], seconds: float,
              offered: float | None = None) -> PhaseResult:
    """rows: (HTTP status or None when no answer, latency s, model version)."""
    ok = [lat for st, lat, _ in rows if st == 200]
    versions: dict[str, int] = {}
    for st, _, v in rows:
        if st == 200 and v:
            versions[v] = versions.get(v, 0) + 1
    n = len(rows)
    r429 = sum(st == 429 for st, _, _ in rows)
    return PhaseResult(
        phase=phase, offered_rps=offered, sent=n, ok=len(ok), rejected_429=r429,
        client_4xx=sum(st is not None and 400 <= st < 500 and st != 429 for st, _, _ in rows),
        server_5xx=sum(st is not None and st >= 500 for st, _, _ in rows),
        lost=sum(st is None for st, _, _ in rows), seconds=round(seconds, 3),
        throughput_rps=round(len(ok) / seconds, 3) if seconds else 0.0,
        p50_ms=None if not ok else round(_pct(ok, 50) * 1000, 1),
        p99_ms=None if not ok else round(_pct(ok, 99) * 1000, 1),
        rate_429=round(r429 / n, 4) if n else 0.0, versions=versions)


class LoadTester:
    """Drives one service at ``base_url`` with the target image and a stored identity."""

    def __init__(self, base_url: str, target: Path, source: Path, api_key: str | None = None):
        check_loopback(base_url)
        self.base = base_url.rstrip("/")
        self.target_bytes = Path(target).read_bytes()
        self.source_bytes = Path(source).read_bytes()
        self.api_key = api_key
        self.identity: str | None = None

    def _client(self):
        import httpx
        return httpx.AsyncClient(base_url=self.base, timeout=CLIENT_TIMEOUT_S,
                                 limits=httpx.Limits(max_connections=512,
                                                     max_keepalive_connections=64))

    async def setup(self) -> str:
        async with self._client() as c:
            r = await c.post("/v1/identities", files={"image": ("source.png", self.source_bytes)})
            r.raise_for_status()
            self.identity = r.json()["id"]
        return self.identity

    async def _swap(self, c) -> tuple[int | None, float, str | None]:
        t0 = time.perf_counter()
        try:
            r = await c.post("/v1/swap", files={"target": ("t.jpg", self.target_bytes)},
                             data={"identity_id": self.identity, "format": "jpeg"})
        except Exception as e:  # noqa: BLE001 - no answer: counted as lost
            log.warning("request got no answer: %r", e)
            return None, time.perf_counter() - t0, None
        return r.status_code, time.perf_counter() - t0, r.headers.get("x-model-version")

    async def capacity(self, requests: int = 10, max_s: float = 20.0) -> PhaseResult:
        """Single-stream throughput (requests/s), after one warm-up request."""
        rows = []
        async with self._client() as c:
            await self._swap(c)
            t0 = time.perf_counter()
            while len(rows) < requests and time.perf_counter() - t0 < max_s:
                rows.append(await self._swap(c))
            return summarize("capacity", rows, time.perf_counter() - t0)

    async def overload(self, rate: float, seconds: float, max_requests: int,
                       video: Path | None = None, jobs: int = 0) -> PhaseResult:
        """Open-loop arrivals at ``rate``/s for ``seconds`` (at most ``max_requests``)."""
        n = max(1, min(max_requests, int(rate * seconds)))
        job_task = asyncio.create_task(self._jobs(video, jobs)) if video and jobs else None
        async with self._client() as c:
            t0 = time.perf_counter()
            tasks = []
            for i in range(n):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self._swap(c)))
            rows = await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - t0
        res = summarize("overload", list(rows), elapsed, offered=rate)
        if job_task is not None:
            res.extra["jobs"] = await job_task
        return res

    async def _jobs(self, video: Path, count: int) -> dict:
        """Submit ``count`` jobs, drop the connection, then poll from a new client."""
        data, accepted = video.read_bytes(), []
        async with self._client() as c:  # closed right after submitting: the "disconnect"
            for _ in range(count):
                r = await c.post("/v1/jobs", files={"video": ("clip.mp4", data)},
                                 data={"identity_id": self.identity})
                if r.status_code == 202:
                    accepted.append(r.json()["id"])
        states: dict[str, str] = {}
        async with self._client() as c:
            deadline = time.perf_counter() + CLIENT_TIMEOUT_S
            pending = set(accepted)
            while pending and time.perf_counter() < deadline:
                for jid in list(pending):
                    j = (await c.get(f"/v1/jobs/{jid}")).json()
                    if j["state"] in ("succeeded", "failed"):
                        states[jid] = j["state"]
                        pending.discard(jid)
                await asyncio.sleep(0.25)
            ok = 0
            for jid, st in states.items():
                if st == "succeeded":
                    r = await c.get(f"/v1/jobs/{jid}/result")
                    ok += r.status_code == 200 and len(r.content) > 0
        return {"submitted": count, "accepted": len(accepted), "succeeded": ok,
                "failed": sum(s == "failed" for s in states.values()),
                "lost": len(accepted) - ok}

    async def reload_under_load(self, clients: int = 3, seconds: float = 8.0,
                                max_requests: int = 200, changes: dict | None = None
                                ) -> PhaseResult:
        """Closed-loop clients while ``/admin/reload`` runs; returns every answer's status."""
        rows: list = []
        stop = asyncio.Event()

        async def worker(c):
            while not stop.is_set() and len(rows) < max_requests:
                rows.append(await self._swap(c))

        async with self._client() as c:
            t0 = time.perf_counter()
            workers = [asyncio.create_task(worker(c)) for _ in range(clients)]
            await asyncio.sleep(min(1.0, seconds / 4))
            r = await c.post("/admin/reload", json=changes or {},
                             headers={"Authorization": f"Bearer {self.api_key}"})
            reload = {"status": r.status_code, **r.json()}
            await asyncio.sleep(max(0.0, seconds - (time.perf_counter() - t0)))
            stop.set()
            await asyncio.gather(*workers)
            elapsed = time.perf_counter() - t0
        res = summarize("reload_under_load", rows, elapsed)
        res.extra["reload"] = reload
        return res


async def run_all(base_url: str, target: Path, source: Path, api_key: str | None,
                  factor: float = 2.0, seconds: float = 12.0, max_requests: int = 300,
                  video: Path | None = None, jobs: int = 2, reload_s: float = 6.0) -> dict:
    """The three phases; returns a JSON-able summary."""
    lt = LoadTester(base_url, target, source, api_key)
    await lt.setup()
    cap = await lt.capacity()
    rate = max(cap.throughput_rps * factor, 0.5)
    over = await lt.overload(rate, seconds, max_requests, video, jobs)
    phases = [cap, over]
    if api_key:
        phases.append(await lt.reload_under_load(seconds=reload_s))
    return {"capacity_rps": cap.throughput_rps, "factor": factor,
            "phases": [asdict(p) for p in phases]}


def to_markdown(summary: dict) -> str:
    head = ("| phase | offered req/s | sent | 200 | 429 | other 4xx | 5xx | lost | s | "
            "throughput req/s | p50 ms | p99 ms | 429 rate |\n|" + "---|" * 13)
    lines = [head]
    for p in summary["phases"]:
        off = f"{p['offered_rps']:.2f}" if p["offered_rps"] else "-"
        lines.append(f"| {p['phase']} | {off} | {p['sent']} | {p['ok']} | {p['rejected_429']} | "
                     f"{p['client_4xx']} | {p['server_5xx']} | {p['lost']} | {p['seconds']} | "
                     f"{p['throughput_rps']} | {p['p50_ms']} | {p['p99_ms']} | {p['rate_429']} |")
    for p in summary["phases"]:
        if p["extra"]:
            lines.append(f"\n{p['phase']}: {p['extra']}; versions answering: {p['versions']}")
    return "\n".join(lines)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m fusionrt.cli serve`` on 127.0.0.1 in a child process (its own GIL, as in
    production); JSON logs go to ``log_path``. A context manager; stops the child on exit."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None,
                 ready_timeout: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args, self.log_path, self.env, self.ready_timeout = args, log_path, env, ready_timeout
        self.proc = None

    def __enter__(self) -> "ServerProcess":
        import subprocess
        import sys
        import httpx
        cmd = [sys.executable, "-m", "fusionrt.cli", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), *self.args]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env)
        deadline = time.perf_counter() + self.ready_timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: "
                                   f"{self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"server not ready after {self.ready_timeout:.0f} s")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # uvicorn drains in-flight requests on SIGTERM
            try:
                self.proc.wait(30)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
