"""What a batch job does: find the inputs, decide each one's output, skip finished ones, split
long videos into segment work items, and write the final report.

Resumability rests on one rule: an output file exists only once it is complete (every writer
goes through a temp file + rename). So a rerun skips inputs whose output exists, and segments
whose part file exists, and redoes the rest. No Ray here: planning runs in the driver only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import FusionError, InputError, OutputError
from ..pipeline.image_io import IMAGE_EXTS
from ..pipeline.video.io import CONTAINERS, probe
from .segments import Segment, plan_segments, scan_keyframes

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
PARTS_DIR = ".fusionrt-parts"  # finished segments of unfinished videos, kept for resuming


@dataclass(frozen=True)
class WorkItem:
    """One unit of work for a worker: a whole image/video, one video segment, or a stitch."""

    id: str           # "sub/clip.mp4", "sub/clip.mp4#0003", "sub/clip.mp4#stitch"
    kind: str         # "image" | "video" | "segment" | "stitch"
    input_id: str
    src: str
    dst: str
    frames: int = 1   # expected frames, for the progress bar
    segment: Segment | None = None
    parts: tuple[str, ...] = ()  # stitch: the segment files, in order


@dataclass
class InputPlan:
    """One input file and the work it needs; ``status`` is "todo", "skipped" or "failed"."""

    id: str
    src: str
    dst: str
    kind: str         # "image" | "video"
    frames: int = 1
    status: str = "todo"
    error: str | None = None
    items: list[WorkItem] = field(default_factory=list)
    stitch: WorkItem | None = None
    segments_skipped: int = 0


def scan_inputs(inputs: str | os.PathLike,
                exclude: str | os.PathLike | None = None) -> tuple[Path, list[Path]]:
    """A folder (searched recursively for images and videos, skipping hidden names and the
    ``exclude`` folder, e.g. an output folder inside it) or a manifest (one path a line, ``#``
    comments, relative paths from the manifest's folder). Returns (root, files)."""
    p = Path(inputs)
    if p.is_dir():
        exts = IMAGE_EXTS + VIDEO_EXTS
        skip = Path(exclude).resolve() if exclude is not None else None
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts
                       and not any(part.startswith(".") for part in f.relative_to(p).parts)
                       and (skip is None or skip not in f.resolve().parents))
        if not files:
            raise InputError(f"inputs '{p}' | no images or videos found; expected files ending "
                             f"in {', '.join(exts)}")
        return p, files
    if not p.is_file():
        raise InputError(f"inputs '{p}' | not found; expected a folder or a manifest file")
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"inputs '{p}' | unreadable manifest ({e}); expected a text file with "
                         "one path a line") from None
    files = [(p.parent / s).resolve() if not Path(s).is_absolute() else Path(s)
             for s in (line.strip() for line in lines) if s and not s.startswith("#")]
    if not files:
        raise InputError(f"inputs '{p}' | manifest lists no files; expected one path a line")
    return p.parent, files


def _relative(f: Path, root: Path) -> Path:
    try:
        return f.resolve().relative_to(root.resolve())
    except ValueError:
        return Path(f.name)  # manifest entry outside its folder: keep the name only


def output_path(f: Path, root: Path, out_dir: Path) -> Path:
    """Same relative path under ``out_dir``; videos in other containers go to .mkv (takes any codec)."""
    rel = _relative(f, root)
    if f.suffix.lower() in VIDEO_EXTS and f.suffix.lower() not in CONTAINERS:
        rel = rel.with_suffix(".mkv")
    return out_dir / rel


def plan_job(inputs: str | os.PathLike, out_dir: str | os.PathLike,
             segment_seconds: float = 0.0) -> list[InputPlan]:
    """Plan every input. Unreadable videos are planned as failed (reported, not fatal).

    Raises:
        InputError: no inputs; OutputError: two inputs map to one output, or the output folder
            is the input folder.
    """
    out_dir = Path(out_dir).resolve()  # workers may run elsewhere: hand them absolute paths
    if out_dir == Path(inputs).resolve():
        raise OutputError(f"output folder '{out_dir}' | is the input folder; expected another folder")
    root, files = scan_inputs(inputs, exclude=out_dir)
    root, files = root.resolve(), [f.resolve() for f in files]
    plans: list[InputPlan] = []
    seen: dict[Path, Path] = {}
    for f in files:
        dst = output_path(f, root, out_dir)
        if dst == f:
            raise OutputError(f"output '{dst}' | is the input file itself; expected another --out")
        if dst in seen:
            raise OutputError(f"output '{dst}' | both '{seen[dst]}' and '{f}' would write it; "
                              "expected distinct names")
        seen[dst] = f
        kind = "video" if f.suffix.lower() in VIDEO_EXTS else "image"
        plan = InputPlan(_relative(f, root).as_posix(), str(f), str(dst), kind)
        plans.append(plan)
        if dst.is_file():
            plan.status = "skipped"
            continue
        if not f.is_file():
            plan.status, plan.error = "failed", f"input '{f}' | file not found"
            continue
        if kind == "image":
            plan.items = [WorkItem(plan.id, "image", plan.id, plan.src, plan.dst)]
            continue
        try:
            _plan_video(plan, out_dir, segment_seconds)
        except FusionError as e:
            plan.status, plan.error = "failed", str(e)
    return plans


def _plan_video(plan: InputPlan, out_dir: Path, segment_seconds: float) -> None:
    info = probe(plan.src)
    plan.frames = info.frames
    whole = [WorkItem(plan.id, "video", plan.id, plan.src, plan.dst, info.frames)]
    if segment_seconds <= 0 or info.duration <= segment_seconds:
        plan.items = whole
        return
    keys = scan_keyframes(plan.src)
    segs = plan_segments(keys, segment_seconds)
    if len(segs) < 2:
        plan.items = whole
        return
    plan.frames = keys.packets
    parts = parts_dir(plan, out_dir, segs)
    ext = Path(plan.dst).suffix
    files = tuple(str(parts / f"seg{s.index:04d}{ext}") for s in segs)
    for s, part in zip(segs, files):
        if Path(part).is_file():
            plan.segments_skipped += 1
            continue
        plan.items.append(WorkItem(f"{plan.id}#{s.index:04d}", "segment", plan.id, plan.src, part,
                                   s.frames, segment=s))
    plan.stitch = WorkItem(f"{plan.id}#stitch", "stitch", plan.id, plan.src, plan.dst,
                           frames=keys.packets, parts=files)


def parts_dir(plan: InputPlan, out_dir: Path, segs: list[Segment]) -> Path:
    """A folder named by the source file's identity and the cut points, so a changed source or
    a different ``--segment-seconds`` never reuses stale parts."""
    st = Path(plan.src).stat()
    key = f"{Path(plan.src).resolve()}|{st.st_size}|{st.st_mtime_ns}|{[s.start for s in segs]}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return out_dir / PARTS_DIR / f"{Path(plan.id).name}.{digest}"


def clean_partials(dst: str | os.PathLike) -> int:
    """Remove temp files a killed writer left next to ``dst`` (``process_video``'s
    ``.stem.*.partEXT`` and ``write_image``'s ``.name.*.tmp``). Returns how many."""
    d = Path(dst)
    n = 0
    if d.parent.is_dir():
        for pat in (f".{d.stem}.*.part{d.suffix}", f".{d.name}.*.tmp"):
            for f in d.parent.glob(pat):
                f.unlink(missing_ok=True)
                n += 1
    return n


@dataclass
class ItemReport:
    """The outcome of one input (its segments folded in); frames/seconds count this run's
    work only (segments finished by an earlier run are not counted again)."""

    id: str
    src: str
    dst: str
    kind: str
    status: str                  # done | skipped | failed
    frames: int = 0
    faces: int | None = None
    seconds: float = 0.0         # worker busy time summed over its work items
    attempts: int = 0            # most attempts any of its work items needed
    workers: list[str] = field(default_factory=list)
    segments: int = 0
    error: str | None = None


@dataclass
class WorkerReport:
    name: str
    host: str = ""
    items: int = 0
    frames: int = 0
    busy_s: float = 0.0
    cpu_s: float = 0.0           # CPU time of the worker process (all its threads) while busy
    died: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.busy_s if self.busy_s else 0.0

    @property
    def cores(self) -> float:
        """CPU cores the worker kept busy on average while working."""
        return self.cpu_s / self.busy_s if self.busy_s else 0.0


@dataclass
class JobReport:
    """Everything the job did; ``write`` saves JSON and a Markdown twin."""

    items: list[ItemReport]
    workers: list[WorkerReport]
    wall_s: float
    restarts: int
    settings: dict

    @property
    def frames(self) -> int:
        return sum(i.frames for i in self.items if i.status == "done")

    def count(self, status: str) -> int:
        return sum(i.status == status for i in self.items)

    def to_dict(self) -> dict:
        return {"summary": {"inputs": len(self.items), "done": self.count("done"),
                            "skipped": self.count("skipped"), "failed": self.count("failed"),
                            "frames": self.frames, "wall_s": round(self.wall_s, 3),
                            "fps": round(self.frames / self.wall_s, 2) if self.wall_s else 0.0,
                            "worker_restarts": self.restarts},
                "settings": self.settings,
                "workers": [{**asdict(w), "fps": round(w.fps, 2), "cores": round(w.cores, 2)}
                            for w in self.workers],
                "items": [asdict(i) for i in self.items]}

    def to_markdown(self) -> str:
        s = self.to_dict()["summary"]
        lines = ["# fusionrt batch report", "",
                 f"{s['inputs']} inputs: {s['done']} done, {s['skipped']} skipped (already "
                 f"finished), {s['failed']} failed; {s['frames']} frames in {s['wall_s']} s "
                 f"({s['fps']} frames/s overall); {s['worker_restarts']} worker restart(s).", "",
                 "| worker | host | items | frames | busy s | FPS | CPU cores used | died |",
                 "|---|---|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {w.name} | {w.host} | {w.items} | {w.frames} | {w.busy_s:.1f} | "
                  f"{w.fps:.1f} | {w.cores:.2f} | {'yes' if w.died else ''} |" for w in self.workers]
        failed = [i for i in self.items if i.status == "failed"]
        if failed:
            lines += ["", "## Failures", "", "| input | attempts | reason |", "|---|---:|---|"]
            lines += [f"| {i.id} | {i.attempts} | {(i.error or '').replace('|', '/')} |"
                      for i in failed]
        lines += ["", "## Items", "", "| input | status | frames | segments | attempts | workers |",
                  "|---|---|---:|---:|---:|---|"]
        lines += [f"| {i.id} | {i.status} | {i.frames} | {i.segments} | {i.attempts} | "
                  f"{', '.join(i.workers)} |" for i in self.items]
        return "\n".join(lines) + "\n"

    def write(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``path`` (JSON) and the same name with ``.md``, each atomically."""
        p = Path(path)
        md = p.with_suffix(".md") if p.suffix.lower() != ".md" else p
        js = p if p.suffix.lower() != ".md" else p.with_suffix(".json")
        for target, text in ((js, json.dumps(self.to_dict(), indent=2) + "\n"),
                             (md, self.to_markdown())):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_text(text)
                os.replace(tmp, target)
            except OSError as e:
                raise OutputError(f"report '{target}' | cannot write: {e.strerror or e}") from None
        return js, md
