"""``fusionrt triton repo|serve|versions|rollback`` and ``fusionrt release``."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

from ..errors import EngineError, InputError
from .server import add_delay_arg, add_server_args, delay_us

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
VENV_ENV = "FUSIONRT_TRITON_VENV"


def register(subparsers) -> None:
    t = subparsers.add_parser("triton", help="Triton model repository, server and versions")
    sub = t.add_subparsers(dest="triton_command", metavar="COMMAND")
    t.set_defaults(func=lambda a: (t.print_help(), 2)[1])

    p = sub.add_parser("repo", help="write a Triton model repository")
    p.add_argument("out", type=Path)
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    p.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime")
    p.add_argument("--swapper", default="inswapper_128")
    p.add_argument("--max-batch", type=int, default=8)
    add_delay_arg(p, "--max-queue-delay-us")
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--kind", choices=("gpu", "cpu"), default="gpu", help="instance group kind")
    p.add_argument("--det-size", type=int, default=640)
    p.add_argument("--cc", default="8.0,8.6,8.9,9.0",
                   help="compute capabilities to name plans for (tensorrt backend)")
    p.add_argument("--calibration", type=Path, help="INT8: images folder, video or .npz")
    p.add_argument("--allow-synthetic", action="store_true")
    p.set_defaults(func=cmd_repo)

    p = sub.add_parser("serve", help="serve the pipeline in a real Triton server (PyTriton)")
    add_server_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("versions", help="list a model's versions in a repository")
    p.add_argument("repo", type=Path)
    p.add_argument("model", help="Triton model, stage (swap) or zoo name")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser("rollback", help="serve an older version (config only; folders stay)")
    p.add_argument("repo", type=Path)
    p.add_argument("model")
    p.add_argument("--to", type=int, help="version (default: the one below the serving one)")
    _notify_args(p)
    p.set_defaults(func=cmd_rollback)

    p = subparsers.add_parser("release", help="export, build, gate, bench and ship a new "
                              "model version into a Triton repository")
    p.add_argument("model", help="zoo name (or Triton model name) of a stage in the repository")
    p.add_argument("--to", dest="repo", type=Path, required=True, help="repository")
    p.add_argument("--precisions", default="fp32,fp16,int8", help="built and gated")
    p.add_argument("--precision", help="served by the new version (default: the repository's)")
    p.add_argument("--calibration", type=Path, help="INT8: images folder, video or .npz")
    p.add_argument("--gate", action="append", default=[], metavar="PREC:METRIC=VALUE",
                   help="override a gate threshold, e.g. fp16:psnr=45")
    p.add_argument("--bench-runs", type=int, default=5)
    p.add_argument("--allow-synthetic", action="store_true")
    _notify_args(p)
    p.set_defaults(func=cmd_release)


def _notify_args(p) -> None:
    p.add_argument("--notify-triton", action="append", metavar="URL",
                   help="Triton (explicit model control) or fusionrt PyTriton server to reload")
    p.add_argument("--notify-fusionrt", action="append", metavar="URL",
                   help="fusionrt FastAPI server to POST /admin/reload")
    p.add_argument("--api-key", default=os.environ.get("FUSIONRT_API_KEY"),
                   help="key for --notify-fusionrt (or $FUSIONRT_API_KEY)")


def cmd_repo(args: argparse.Namespace) -> int:
    from .repository import RepoOptions, write_repository
    o = RepoOptions(args.precision, args.backend, args.swapper, args.allow_synthetic,
                    args.max_batch, delay_us(args.max_delay_ms), args.instances,
                    "KIND_GPU" if args.kind == "gpu" else "KIND_CPU", args.det_size,
                    tuple(c.strip() for c in args.cc.split(",") if c.strip()), args.calibration)
    r = write_repository(args.out, o)
    for m, z in r.models.items():
        print(f"{r.root / m}  {z}")
    for name, summary in r.gates.items():
        print(f"gate {name} {o.precision}: {summary}")
    if r.synthetic:
        print(f"note: synthetic random weights for {', '.join(r.synthetic)}")
    if o.backend == "tensorrt":
        print(f"TensorRT plans NOT built ({len(r.plans_missing)} missing: TensorRT is needed); "
              f"build them per compute capability with: sh {r.root / 'build_plans.sh'}")
    return 0


def triton_python() -> str:
    """The Python that has PyTriton: this one, else the isolated venv."""
    if importlib.util.find_spec("pytriton") is not None:
        return sys.executable
    venv = Path(os.environ.get(VENV_ENV) or ROOT / ".venv-triton")
    py = venv / "bin" / "python"
    if not py.is_file():
        raise EngineError(f"triton serve | PyTriton not found in {venv}; create it with: "
                          "scripts/triton_venv.sh (PyTriton pins numpy < 2, so it lives in "
                          "its own venv)")
    return str(py)


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.repo.is_dir():
        raise InputError(f"repository '{args.repo}' | not found; write one with: fusionrt "
                         "triton repo OUT")
    cmd = [triton_python(), "-m", "fusionrt.triton.server", "--repo", str(args.repo.resolve()),
           "--http-port", str(args.http_port), "--grpc-port", str(args.grpc_port),
           "--metrics-port", str(args.metrics_port), "--max-batch", str(args.max_batch),
           "--max-delay-ms", str(args.max_delay_ms)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    print(f"Triton (PyTriton) on 127.0.0.1: http {args.http_port}, grpc {args.grpc_port}, "
          f"metrics {args.metrics_port}", flush=True)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130


def cmd_versions(args: argparse.Namespace) -> int:
    from .versions import list_versions
    for v in list_versions(args.repo, args.model):
        rel = v.release or {}
        what = (f"{rel.get('precision')} released {rel.get('released')} gates "
                f"{rel.get('gates')}" if rel else "written by 'triton repo'")
        print(f"{'*' if v.serving else ' '} {v.version}  {what}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from .notify import parse_servers
    from .versions import model_dir, rollback
    servers = parse_servers(args.notify_triton, args.notify_fusionrt, args.api_key)
    old, new = rollback(args.repo, args.model, args.to)
    name = model_dir(args.repo, args.model).name
    print(f"{name}: version {old} -> {new}")
    for s in servers:
        print(s.load(name, new))
    return 0


def _thresholds(items: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for item in items:
        try:
            prec, rest = item.split(":", 1)
            metric, value = rest.split("=", 1)
            out.setdefault(prec, {})[metric] = float(value)
        except ValueError:
            raise InputError(f"--gate '{item}' | expected PRECISION:METRIC=VALUE, e.g. "
                             "fp16:psnr=45") from None
    return out


def cmd_release(args: argparse.Namespace) -> int:
    from .notify import parse_servers
    from .release import ReleaseOptions, release
    opts = ReleaseOptions(
        precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
        precision=args.precision, calibration=args.calibration,
        allow_synthetic=args.allow_synthetic, thresholds=_thresholds(args.gate),
        servers=parse_servers(args.notify_triton, args.notify_fusionrt, args.api_key),
        bench_runs=args.bench_runs)
    r = release(args.model, args.repo, opts)
    print(f"{r.triton_model}: version {r.previous} -> {r.version} ({r.precision}) in "
          f"{r.seconds:.1f} s")
    for p, g in r.gates.items():
        print(f"  gate {p}: {g}")
    for row in r.bench:
        lat = row["latency_ms"] or {}
        print(f"  bench {row['precision']}: p50 {lat.get('p50', float('nan')):.2f} ms "
              f"({row['engine']}, batch {row['batch']}, {row['runs']} runs)")
    for line in r.notified:
        print(f"  {line}")
    return 0
