"""Benchmark results: JSON (the record), Markdown (the seed's table layout), PNG, and diffs.

Speedups are ratios of mean latency against rows of the same stage and batch *in the same
run*: ``baseline mean / row mean``. A missing or failed baseline row gives ``None`` ("—").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError
from ..pipeline.plan import BASELINE_ENGINES

# row key -> (engine, precision): the seed table's baselines (pipeline.plan.BASELINE_ENGINES) at
# FP32; the keys are the schema's ``speedup_vs_<engine>_fp32`` (ROW_KEYS).
BASELINES = {f"speedup_vs_{e.replace('-', '_')}_fp32": (e, "fp32") for e in BASELINE_ENGINES}
ROW_KEYS = ("stage", "model", "input_size", "engine", "precision", "batch", "device", "status",
            "reason", "synthetic", "weights_note", "timer", "runs", "warmup", "latency_ms",
            "wall_ms", "fps", "mem", "gpu_mem_mb", "load", "parity", "gate",
            "speedup_vs_torch_fp32", "speedup_vs_ort_cuda_fp32", "notes")
MACHINE_KEYS = ("gpu_name", "gpu_driver", "cuda", "cudnn", "torch", "onnxruntime", "tensorrt",
                "fusionrt", "python", "cpu", "date", "command")
STATS_KEYS = ("mean", "p50", "p95", "p99")
STATUSES = ("ok", "unavailable", "error", "skipped", "pending")
FILES = {"json": "bench.json", "md": "bench.md", "png": "bench.png",
         "table_png": "bench_table.png"}


def _mean(row: dict | None) -> float | None:
    if not row or row.get("status") != "ok" or not row.get("latency_ms"):
        return None
    return row["latency_ms"]["mean"]


def compute_speedups(rows: list[dict]) -> list[dict]:
    """Fill ``speedup_vs_*`` on every row (in place) and return ``rows``."""
    index = {(r["stage"], r["batch"], r["engine"], r["precision"]): r for r in rows}
    for r in rows:
        mine = _mean(r)
        for key, (engine, prec) in BASELINES.items():
            base = _mean(index.get((r["stage"], r["batch"], engine, prec)))
            r[key] = base / mine if base is not None and mine else None
    return rows


def mark_best(rows: list[dict]) -> list[dict]:
    """``best`` on the fastest row (FPS) of each model stage and batch among the rows whose
    parity passed and whose graph the quality gate did not refuse — fusionrt's best engine."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        r["best"] = False
        if r["status"] != "ok" or not r.get("fps") or r.get("latency_ms") is None:
            continue
        if (r.get("parity") or {}).get("passed") is False:
            continue
        if (r.get("gate") or {}).get("passed") is False:
            continue
        groups.setdefault((r["stage"], r["batch"]), []).append(r)
    for group in groups.values():
        max(group, key=lambda r: r["fps"])["best"] = True
    return rows


def summarize_doc(doc: dict) -> dict:
    """The run in one object: preset, wall seconds, GPU, and one row per measured cell."""
    rows = []
    for r in doc["rows"]:
        if r["status"] != "ok":
            continue
        lat = r.get("latency_ms") or {}
        rows.append({"model": r["model"], "engine": r["engine"], "precision": r["precision"],
                     "batch": r["batch"], "p50_ms": lat.get("p50"), "fps": r.get("fps"),
                     "mem_mb": r.get("gpu_mem_mb"),
                     "tuning": (r.get("engine_config") or {}).get("tuning"),
                     "best": bool(r.get("best"))})
    m = doc["machine"]
    return {"preset": doc["config"].get("preset"), "wall_s": doc.get("elapsed_s"),
            "gpu": m.get("gpu_name"), "synthetic": doc.get("synthetic"), "rows": rows}


def validate(doc: Any) -> list[str]:
    """Problems that make ``doc`` not a bench result (empty list = valid)."""
    if not isinstance(doc, dict):
        return ["document | expected a JSON object"]
    errors = [f"document | missing key '{k}'" for k in ("schema", "machine", "config", "rows")
              if k not in doc]
    if errors:
        return errors
    if not str(doc["schema"]).startswith("fusionrt.bench/"):
        errors.append(f"schema | got {doc['schema']!r}; expected 'fusionrt.bench/N'")
    errors += [f"machine | missing key '{k}'" for k in MACHINE_KEYS if k not in doc["machine"]]
    for i, r in enumerate(doc["rows"]):
        errors += [f"row {i} | missing key '{k}'" for k in ROW_KEYS if k not in r]
        if r.get("status") not in STATUSES:
            errors.append(f"row {i} | status {r.get('status')!r}; expected one of {STATUSES}")
        elif r["status"] == "ok":
            for k in ("latency_ms", "wall_ms"):
                if not isinstance(r.get(k), dict) or any(s not in r[k] for s in STATS_KEYS):
                    errors.append(f"row {i} | '{k}' lacks {STATS_KEYS}")
            if not isinstance(r.get("fps"), (int, float)):
                errors.append(f"row {i} | ok row without 'fps'")
        elif not r.get("reason"):
            errors.append(f"row {i} | status {r['status']} without a reason")
    return errors


def load(path: str | Path) -> dict:
    """Read and validate a result file; ``InputError`` names what is wrong."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"bench result '{path}' | not found") from None
    except (OSError, ValueError) as e:
        raise InputError(f"bench result '{path}' | not readable JSON: {e}") from None
    errors = validate(doc)
    if errors:
        raise InputError(f"bench result '{path}' | not a fusionrt bench file: {errors[0]}")
    return doc


def _clean(x: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def to_json(doc: dict) -> str:
    return json.dumps(_clean(doc), indent=1, sort_keys=False, allow_nan=False)


def write_all(doc: dict, out_dir: str | Path, png: bool = True) -> dict[str, Path]:
    """Write JSON + Markdown (+ PNG) atomically into ``out_dir``; returns the paths."""
    from .._fs import atomic_write_bytes
    from .markdown import to_markdown
    out = Path(out_dir)
    paths = {k: out / v for k, v in FILES.items()}
    atomic_write_bytes(paths["json"], to_json(doc).encode())
    atomic_write_bytes(paths["md"], to_markdown(doc).encode())
    if png:
        write_png(doc, paths["png"])
        write_table_png(doc, paths["table_png"])
    else:
        paths.pop("png"), paths.pop("table_png")
    return paths


def table_rows(doc: dict) -> list[list[str]]:
    """The seed's columns for every measured row (model stages, then the video rows)."""
    def n(x, fmt="{:.2f}"):
        return "—" if x is None else fmt.format(x)
    out, seen = [], set()
    for r in doc["rows"]:
        if r["status"] != "ok":  # one line per cell that did not run, with its reason
            key = (r["model"], r["engine"], r["precision"])
            if key not in seen:
                seen.add(key)
                why = (r.get("reason") or "").replace("not available on this machine: ", "")
                out.append([r["model"], label(r), "all", "—", "—", "—", "—", r["status"],
                            "—", why[:60] + ("…" if len(why) > 60 else "")])
            continue
        lat = r.get("latency_ms") or {}
        sp = r.get("speedup_vs_torch_fp32")
        verdict = (r.get("parity") or {}).get("passed")
        gate = (r.get("gate") or {}).get("passed")
        q = "—" if verdict is None else ("pass" if verdict else "FAIL")
        if gate is not None:
            q += f", gate {'pass' if gate else 'REFUSED'}"
        out.append([r["model"], label(r) + (" ★" if r.get("best") else ""), str(r["batch"]),
                    n(lat.get("mean")), n(lat.get("p50")), n(lat.get("p99")),
                    n(r.get("gpu_mem_mb"), "{:.0f}"), n(r.get("fps"), "{:.1f}"),
                    "—" if sp is None else f"{sp:.2f}×", q])
    return out


TABLE_COLUMNS = ("model", "engine / precision", "batch", "mean ms", "p50 ms", "p99 ms",
                 "GPU MB", "FPS", "vs PyTorch FP32", "quality")


def write_table_png(doc: dict, path: str | Path) -> Path:
    """The seed's table as a picture: one line per measured row, ★ = fusionrt's best."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .._fs import atomic_write_bytes
    rows = table_rows(doc) or [["(no row ran)"] + [""] * (len(TABLE_COLUMNS) - 1)]
    fig, ax = plt.subplots(figsize=(13, 0.32 * len(rows) + 1.4))
    ax.axis("off")
    t = ax.table(cellText=rows, colLabels=TABLE_COLUMNS, loc="center", cellLoc="right",
                 colLoc="right")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.auto_set_column_width(list(range(len(TABLE_COLUMNS))))
    for (i, j), cell in t.get_celld().items():
        if i == 0:
            cell.set_text_props(weight="bold")
        if j < 2:
            cell.set_text_props(ha="left")
    m = doc["machine"]
    title = (f"fusionrt bench{' --preset ' + doc['config']['preset'] if doc['config'].get('preset') else ''}"
             f" — {m.get('gpu_name') or m.get('cpu') or '?'} — {str(m.get('date', ''))[:10]}")
    if doc.get("synthetic"):
        title += " — synthetic random weights: speed only"
    ax.set_title(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def label(r: dict) -> str:
    plain = (r.get("engine_config") or {}).get("tuning") == "plain"
    return f"{r['engine']} / {r['precision']}" + (" (plain)" if plain else "")


def write_png(doc: dict, path: str | Path) -> Path:
    """Grouped bars of FPS per stage (x: batch size, bars: engine / precision, one colour per
    engine / precision across the figure), log scale, one shared legend."""
    import io

    import matplotlib
    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt
    from .._fs import atomic_write_bytes
    ok = [r for r in doc["rows"] if r["status"] == "ok" and r.get("fps")]
    stages = list(dict.fromkeys(r["stage"] for r in doc["rows"])) or ["(no rows)"]
    labels = list(dict.fromkeys(label(r) for r in ok))
    cmap = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
    colour = {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}
    fig, axes = plt.subplots(len(stages), 1, figsize=(10, 2.8 * len(stages) + 1.2),
                             squeeze=False)
    for ax, stage in zip(axes[:, 0], stages):
        rows = [r for r in ok if r["stage"] == stage]
        here = [lab for lab in labels if any(label(r) == lab for r in rows)]
        batches = sorted({r["batch"] for r in rows})
        width = 0.8 / max(1, len(here))
        for j, lab in enumerate(here):
            pts = [(i + (j - (len(here) - 1) / 2) * width, r["fps"])
                   for i, b in enumerate(batches) for r in rows
                   if label(r) == lab and r["batch"] == b]
            ax.bar([x for x, _ in pts], [y for _, y in pts], width, color=colour[lab])
        ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        ax.set_ylabel("FPS")
        if rows:
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no rows ran", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(stage, fontsize=10)
    if labels:
        handles = [plt.Rectangle((0, 0), 1, 1, color=colour[lab]) for lab in labels]
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    m = doc["machine"]
    where = m.get("gpu_name") or m.get("cpu") or "?"
    title = f"fusionrt bench — {where} — {str(m.get('date', ''))[:10]}"
    if doc.get("synthetic"):
        title += "\nsynthetic random weights: speed only"
    fig.suptitle(title, fontsize=11)
    rows_of_legend = -(-len(labels) // 4)
    fig.tight_layout(rect=(0, 0.02 + 0.1 * rows_of_legend / len(stages), 1, 0.97))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _key(r: dict) -> tuple:
    return (r["stage"], r["engine"], r["precision"], r["batch"])


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def compare(a: dict, b: dict, names: tuple[str, str] = ("A", "B")) -> str:
    """A per-row diff of two result documents (text table): mean latency, FPS, status."""
    na, nb = names
    lines = [f"{na}: {a['machine'].get('gpu_name') or a['machine'].get('cpu')}  "
             f"{a['machine'].get('date')}  fusionrt {a['machine'].get('fusionrt')}",
             f"{nb}: {b['machine'].get('gpu_name') or b['machine'].get('cpu')}  "
             f"{b['machine'].get('date')}  fusionrt {b['machine'].get('fusionrt')}"]
    for k in ("torch", "onnxruntime", "tensorrt", "cuda", "gpu_driver"):
        va, vb = a["machine"].get(k), b["machine"].get(k)
        if va != vb:
            lines.append(f"  {k}: {va} -> {vb}")
    head = (f"{'stage':<9} {'engine / precision':<22} {'batch':>5} {na + ' ms':>10} "
            f"{nb + ' ms':>10} {'delta ms':>9} {'delta %':>8} {na + ' FPS':>10} "
            f"{nb + ' FPS':>10} {'FPS x':>6}")
    lines += ["", head, "-" * len(head)]
    ia, ib = {_key(r): r for r in a["rows"]}, {_key(r): r for r in b["rows"]}
    for k in list(ia) + [k for k in ib if k not in ia]:
        ra, rb = ia.get(k), ib.get(k)
        ma, mb = _mean(ra), _mean(rb)
        lab = f"{k[1]} / {k[2]}"
        if ma is not None and mb is not None:
            fa, fb = ra["fps"], rb["fps"]
            lines.append(f"{k[0]:<9} {lab:<22} {k[3]:>5} {ma:>10.2f} {mb:>10.2f} "
                         f"{mb - ma:>+9.2f} {100 * (mb - ma) / ma:>+7.1f}% {_f(fa, '{:.1f}'):>10} "
                         f"{_f(fb, '{:.1f}'):>10} {_f(fb / fa if fa and fb else None):>6}")
        else:
            sa = "absent" if ra is None else (f"{ma:.2f} ms" if ma is not None else ra["status"])
            sb = "absent" if rb is None else (f"{mb:.2f} ms" if mb is not None else rb["status"])
            lines.append(f"{k[0]:<9} {lab:<22} {k[3]:>5} {na}: {sa}; {nb}: {sb}")
    return "\n".join(lines)


def rows_by_stage(rows: Iterable[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["stage"], []).append(r)
    return out
