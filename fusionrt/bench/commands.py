"""``fusionrt bench``: run the benchmark matrix, or ``--compare A.json B.json``."""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import re
import time
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)


def _csv(kind):
    def parse(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            return tuple(kind(t) for t in items)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got '{text}'; expected a comma-separated list") \
                from None
    return parse


def register(subparsers) -> None:
    from ..engines.registry import engine_names
    from .config import CPU_DEFAULTS, PRESETS
    from .stages import DEFAULT_FRAME, DEFAULT_SOURCE, STAGES
    p = subparsers.add_parser(
        "bench", help="benchmark engines x precisions x batch sizes x stages",
        description="Time every stage on every engine and precision; write JSON, Markdown and "
                    "a PNG chart. Defaults depend on --device: cpu = "
                    f"{','.join(CPU_DEFAULTS['engines'])} / fp32 / "
                    "batch 1 / 5 runs, rows capped at ~3 s, no row started after 90 s (about a "
                    "minute); cuda = every engine and precision, batches 1,4,16,32, 50 runs "
                    "capped at ~5 s per row, no budget.")
    p.add_argument("--preset", choices=tuple(PRESETS),
                   help="seed: the seed's table for SimSwap-256 and inswapper-128 (PyTorch FP32, "
                        "ONNX Runtime GPU FP32, TensorRT FP32/FP16/INT8, fusionrt's engines) at "
                        "batch 1 and 16, plus the end-to-end 1080p video rows against the "
                        "FaceFusion-style loop — about 5 minutes on an H200; full: the whole "
                        "matrix for --device, resumable (a rerun with the same --out skips "
                        "finished rows); swappers: every FaceFusion swapper at batch 1 and 16 "
                        "on ORT CUDA FP32 (FaceFusion's path) and fusionrt's engines, plus "
                        "1080p end to end with hyperswap_1a_256; enhance: 1080p end to end with "
                        "inswapper_128 + gfpgan_1.4 + occlusion mask, GPU path (FP16) against the "
                        "FaceFusion-style loop")
    p.add_argument("--engines", type=_csv(str), help=f"e.g. {','.join(engine_names())}")
    p.add_argument("--precisions", type=_csv(str), help="fp32,fp16,int8")
    p.add_argument("--batch", type=_csv(int), dest="batches", help="e.g. 1,4,16,32")
    p.add_argument("--stages", type=_csv(str), help=",".join(STAGES))
    p.add_argument("--runs", type=int, help="timed runs per row")
    p.add_argument("--warmup", type=int, help="untimed runs per row before timing (>= 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--out", type=Path, help="output folder (default bench-results/<date>-<device>)")
    p.add_argument("--allow-synthetic", action="store_true",
                   help="use synthetic random-weight models where real ones are not installed")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="print per-row deltas between two result files and exit")
    p.add_argument("--budget-s", type=float, help="start no row after this many seconds; the "
                                                  "rest are listed as skipped (inf = no budget)")
    p.add_argument("--max-row-s", type=float, help="cap each row's timed runs at about this many "
                                                   "seconds, at least 3 runs (inf = no cap)")
    p.add_argument("--parity-items", type=int, default=2,
                   help="batch items compared with the FP32 reference (default 2)")
    p.add_argument("--det-size", type=int, default=640, help="detector input side")
    # the old spelling, kept working: one name across swap, batch, triton and bench
    p.add_argument("--detect-size", type=int, dest="det_size", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.add_argument("--pipeline-swapper", default=None,
                   help="generator of the whole-pipeline and video rows (default "
                        "inswapper_128; hyperswap_1a_256 with --preset swappers)")
    p.add_argument("--frame", type=Path, default=DEFAULT_FRAME, help="pipeline target frame")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="pipeline source face")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)


def default_out(device: str) -> Path:
    """``bench-results/<date>-<gpu-or-cpu>``."""
    tag = "cpu"
    if device.startswith("cuda"):
        try:
            import torch
            name = torch.cuda.get_device_name(int(device.split(":")[1]) if ":" in device else 0)
            tag = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cuda"
        except Exception:
            tag = "cuda"
    return Path("bench-results") / f"{_dt.date.today().isoformat()}-{tag}"


class _Writer:
    """Rewrites JSON + Markdown after every row, the PNG at most every ``png_every_s``."""

    def __init__(self, out: Path, png_every_s: float = 30.0):
        self.out, self.every, self.last_png = out, png_every_s, time.monotonic()

    def __call__(self, doc: dict) -> None:
        from .report import write_all
        png = time.monotonic() - self.last_png > self.every
        write_all(doc, self.out, png=png)
        if png:
            self.last_png = time.monotonic()


def _clip_dir() -> Path | None:
    """Generated video-row clips are kept under $FUSIONRT_HOME/bench/clips (a rerun reuses
    them); None (a temporary folder) when the home is not writable."""
    from ..runtime.home import fusionrt_home
    try:
        path = fusionrt_home() / "bench" / "clips"
        path.mkdir(parents=True, exist_ok=True)
        return path
    except (OSError, InputError):
        return None


def _earlier_run(out: Path, config) -> dict | None:
    """The result document already in ``out`` when it is the same matrix (``--preset full``
    resumes it), else None. A corrupt or foreign file is not trusted: the run starts afresh."""
    from .report import FILES, load
    path = out / FILES["json"]
    if not path.is_file():
        return None
    try:
        doc = load(path)
    except InputError as e:
        log.warning("%s; starting afresh", e)
        return None
    same = all(doc["config"].get(k) == list(getattr(config, k)) for k in
               ("engines", "precisions", "batches", "stages")) and \
        doc["config"].get("device") == config.device
    if not same:
        log.warning("%s holds another matrix (engines, precisions, batches, stages or device "
                    "differ); starting afresh", path)
        return None
    return doc


def cmd_bench(args: argparse.Namespace) -> int:
    from .report import compare, load, write_all
    if args.compare:
        a, b = args.compare
        print(compare(load(a), load(b), names=(Path(a).stem, Path(b).stem)
                      if Path(a).stem != Path(b).stem else ("A", "B")))
        return 0
    from .config import BenchConfig, with_defaults
    from .runner import BenchRunner
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        raise InputError(f"--device | got '{args.device}'; expected cpu, cuda or cuda:N")
    config = with_defaults(
        BenchConfig(allow_synthetic=args.allow_synthetic, parity_items=args.parity_items,
                    detect_size=args.det_size, frame=args.frame, source=args.source),
        preset=args.preset, pipeline_swapper=args.pipeline_swapper,
        device=args.device, engines=args.engines, precisions=args.precisions,
        batches=args.batches, stages=args.stages, runs=args.runs, warmup=args.warmup,
        budget_s=args.budget_s, max_row_s=args.max_row_s)
    out = args.out or default_out(args.device)
    out.mkdir(parents=True, exist_ok=True)
    resume = _earlier_run(out, config) if config.preset == "full" else None
    runner = BenchRunner(config, on_row=_Writer(out), progress=not args.no_progress,
                         resume=resume, clip_dir=_clip_dir())
    todo = sum(r["status"] == "pending" for g in runner.groups for r in g.rows)
    print(f"{todo} rows to run" + (f" ({runner.resumed} kept from {out / 'bench.json'})"
                                   if runner.resumed else "")
          + f", estimated ~{max(1, round(runner.estimate_s() / 60))} min; results in {out}",
          flush=True)
    doc = runner.run()
    paths = write_all(doc, out)
    counts: dict[str, int] = {}
    for r in doc["rows"]:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + f" rows in {doc['elapsed_s']} s")
    for p in paths.values():
        print(p)
    return 0
