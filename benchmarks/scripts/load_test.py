#!/usr/bin/env python3
"""Loopback load test of ``fusionrt serve``: capacity, 2x overload (with video jobs whose
client disconnects), and a model reload under load. Bounded in requests and seconds.

Starts its own server on 127.0.0.1 (a child process, throw-away FUSIONRT_HOME) unless --url
names a running one (loopback only). Prints a Markdown table and writes JSON + Markdown:

    python benchmarks/scripts/load_test.py --out benchmarks/results/2026-11-25-cpu --queue 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fusionrt.serve.loadtest import ServerProcess, run_all, to_markdown  # noqa: E402

API_KEY = "load-test-key"


def _machine() -> dict:
    import onnxruntime
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
            "gpu": None, "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def _clip(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from videos import make_test_video  # tests/videos.py
    return make_test_video(folder / "clip.mp4", 0.8, 10, (320, 240), audio=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", help="a running server (loopback); default: start one")
    p.add_argument("--api-key", default=API_KEY, help="for the reload phase (--url servers)")
    p.add_argument("--factor", type=float, default=2.0, help="offered load / capacity")
    p.add_argument("--seconds", type=float, default=12.0, help="overload phase length (<= 30)")
    p.add_argument("--max-requests", type=int, default=300, help="overload phase cap (<= 400)")
    p.add_argument("--jobs", type=int, default=2, help="video jobs submitted during overload")
    p.add_argument("--queue", type=int, default=16, help="server --queue")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    p.add_argument("--swapper", default="classic")
    p.add_argument("--out", type=Path, help="folder for serve_load.json / serve_load.md")
    a = p.parse_args(argv)
    seconds, max_requests = min(a.seconds, 30.0), min(a.max_requests, 400)
    target, source = ROOT / "examples" / "grace_hopper.jpg", ROOT / "examples" / "astronaut.png"
    server_args = ["--queue", str(a.queue), "--max-batch", str(a.max_batch),
                   "--max-delay-ms", str(a.max_delay_ms), "--swapper", a.swapper,
                   "--api-key", API_KEY]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = _clip(tmp) if a.jobs else None
        t0 = time.time()
        if a.url:
            summary = asyncio.run(run_all(a.url, target, source, a.api_key, a.factor, seconds,
                                          max_requests, video, a.jobs))
        else:
            env = {**os.environ, "FUSIONRT_HOME": str(tmp / "home")}
            with ServerProcess(server_args, tmp / "server.log", env) as srv:
                summary = asyncio.run(run_all(srv.url, target, source, API_KEY, a.factor,
                                              seconds, max_requests, video, a.jobs))
    summary.update(machine=_machine(), date=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0)),
                   server_args=None if a.url else server_args,
                   command="python benchmarks/scripts/load_test.py " + " ".join(argv or sys.argv[1:]))
    md = (f"# fusionrt serve load test ({summary['date']})\n\n"
          f"Machine: {summary['machine']}\n\nCommand: `{summary['command']}`; server args: "
          f"`{summary['server_args']}`\n\nCapacity (single stream): "
          f"{summary['capacity_rps']:.2f} req/s; offered {a.factor}x.\n\n{to_markdown(summary)}\n")
    print(md)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "serve_load.json").write_text(json.dumps(summary, indent=1))
        (a.out / "serve_load.md").write_text(md)
    over = next(ph for ph in summary["phases"] if ph["phase"] == "overload")
    bad = sum(ph["server_5xx"] + ph["lost"] for ph in summary["phases"])
    bad += over["extra"].get("jobs", {}).get("lost", 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
