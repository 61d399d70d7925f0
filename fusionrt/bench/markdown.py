"""The Markdown report: one table per stage in the seed's layout, rows that did not run with their
reasons, load/build times, and the seed's published table as the reference layout."""

from __future__ import annotations

from pathlib import Path

from .report import BASELINES, label, rows_by_stage
from .stages import STAGES, SYNTHETIC_NOTE

COLUMNS = ("engine / precision", "batch", "latency mean (ms)", "p50", "p95", "p99",
           "GPU mem (MB)", "FPS", "speedup vs PyTorch FP32 eager", "speedup vs ORT CUDA FP32")
ALIGN = ("---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:")

# The seed's table as users know it: RTX 3090, 100-run average, SimSwap-style 256² generator,
# batch 1. (label, latency ms, GPU MB, FPS or None, speedup vs PyTorch or None) as published.
SEED_ROWS = (("PyTorch FP32", 98.5, 4120, 10.15, None),
             ("ONNX Runtime GPU", 67.3, 3200, None, None),
             ("TensorRT FP32", 42.1, 2800, None, None),
             ("TensorRT FP16", 26.8, 2100, 37.31, 3.67),
             ("TensorRT INT8", 21.5, 1950, 46.51, None))


def _n(x, fmt="{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def _x(x) -> str:
    return "—" if x is None else f"{x:.2f}×"


def _parity(p: dict | None, gate: dict | None = None) -> str:
    if not p:
        text = "—"
    elif p.get("passed") is None:
        text = "n/a"
    else:
        v = "identical" if p.get("identical") else f"{p['metric']} {p['value']:.4g}"
        text = f"{v} {'pass' if p['passed'] else 'FAIL'}"
    if gate and gate.get("passed") is not None:
        text += f"; gate {'pass' if gate['passed'] else 'REFUSED'}"
    return text


def _table(rows: list[dict]) -> list[str]:
    out = ["| " + " | ".join(COLUMNS + ("parity vs FP32 ref",)) + " |",
           "|" + "|".join(ALIGN + ("---",)) + "|"]
    for r in rows:
        lat = r["latency_ms"]
        mark = " †" if r.get("synthetic") else ""
        out.append("| " + " | ".join((
            label(r) + mark + (" ★" if r.get("best") else ""), str(r["batch"]), _n(lat["mean"]), _n(lat["p50"]), _n(lat["p95"]),
            _n(lat["p99"]), _n(r.get("gpu_mem_mb"), "{:.0f}"), _n(r.get("fps"), "{:.1f}"),
            _x(r.get("speedup_vs_torch_fp32")), _x(r.get("speedup_vs_ort_cuda_fp32")),
            _parity(r.get("parity"), r.get("gate")))) + " |")
    return out


def _video(rows: list[dict]) -> list[str]:
    out = ["| path | clip | frames | seconds | FPS end to end | faces | encoders | "
           "× the FaceFusion-style loop |", "|---|---|---:|---:|---:|---:|---|---:|"]
    loop = next((r["fps"] for r in rows if r["engine"] == "facefusion-loop" and r.get("fps")),
                None)
    for r in rows:
        v = r.get("video") or {}
        mark = " †" if r.get("synthetic") else ""
        out.append(f"| {r['engine']}{mark} | {v.get('clip', '—')} | {v.get('frames', '—')} | "
                   f"{_n(v.get('seconds'))} | {_n(r.get('fps'), '{:.1f}')} | "
                   f"{v.get('faces', '—')} | {v.get('encoders', '—')} | "
                   f"{_x(r['fps'] / loop if loop and r.get('fps') else None)} |")
    return out


def _best(rows: list[dict]) -> list[str]:
    best = [r for r in rows if r.get("best")]
    if not best:
        return []
    out = ["## fusionrt's best per model and batch (★)", "",
           "| model | batch | engine / precision | p50 ms | FPS | × PyTorch FP32 |",
           "|---|---:|---|---:|---:|---:|"]
    for r in best:
        out.append(f"| {r['model']} | {r['batch']} | {label(r)} | "
                   f"{_n(r['latency_ms']['p50'], '{:.3f}')} | {_n(r.get('fps'), '{:.0f}')} | "
                   f"{_x(r.get('speedup_vs_torch_fp32'))} |")
    return out + ["", "★ = the fastest row of its model and batch whose parity with the FP32 "
                      "reference passed (and whose graph the quality gate did not refuse).", ""]


def _not_run(rows: list[dict]) -> list[str]:
    groups: dict[tuple, list[int]] = {}
    for r in rows:
        groups.setdefault((label(r), r["status"], r.get("reason") or ""), []).append(r["batch"])
    return [f"- {lab} (batch {', '.join(map(str, b))}): **{st}** — {why}"
            for (lab, st, why), b in groups.items()]


def _machine(m: dict) -> list[str]:
    gpu = m.get("gpu_name") or "none"
    if m.get("gpu_name"):
        gpu += (f" (driver {m.get('gpu_driver') or '?'}, CUDA {m.get('cuda') or '?'}, "
                f"cuDNN {m.get('cudnn') or '?'})")
    versions = ", ".join(f"{k} {m.get(k) or '—'}" for k in ("torch", "onnxruntime", "tensorrt",
                                                              "fusionrt", "python"))
    return ["| | |", "|---|---|", f"| GPU | {gpu} |",
            f"| CPU | {m.get('cpu')} ({m.get('cpu_count')} logical cores) |",
            f"| versions | {versions} |", f"| date | {m.get('date')} |",
            f"| command | `{m.get('command')}` |"]


def _method(doc: dict) -> str:
    c = doc["config"]
    cap = (f", capped at about {c['max_row_s']:g} s of timed runs per row (at least "
           f"{min(c.get('min_runs', 3), c['runs'])} runs)") if c.get("max_row_s") else ""
    baselines = " and ".join(f"{e}/{p}" for e, p in BASELINES.values())
    return (f"Method: per row {c['warmup']} warm-up run(s), then {c['runs']} timed runs{cap}, "
            "each synchronised; latency from CUDA events on GPU rows and perf_counter on CPU "
            "rows (host wall clock kept in the JSON); FPS = batch × runs / total wall time; GPU "
            "mem = NVML used-memory delta from before the engine loaded (torch's allocator peak "
            f"where NVML is missing); speedups = mean-latency ratios against the {baselines} "
            "rows of the same stage and batch in this run (— when that row is "
            f"missing). Parity: {c.get('reference_note', '')} (detector: the worst cosine of "
            "its raw heads over all anchors, stricter than the quality gate's box IoU; "
            "embedder: cosine; generators and pipeline: PSNR); 'gate' is the quality gate's "
            "verdict on a converted FP16/INT8 graph. Engine settings: each row runs the "
            "settings `fusionrt swap` uses for its stage and batch (CUDA graphs, channels-last, "
            "batch profile; `engine_config` in the JSON); rows marked (plain) run the engine "
            "with no tuning, as the seed's PyTorch and ONNX Runtime baselines did.")


def _loads(rows: list[dict]) -> list[str]:
    out = ["| stage | engine / precision | artifact build | cold load | cold first run | "
           "warm load | warm first run | note |", "|---|---|---:|---:|---:|---:|---:|---|"]
    seen = set()
    for r in rows:
        ld = r.get("load")
        if not ld or (r["stage"], label(r)) in seen:
            continue
        seen.add((r["stage"], label(r)))
        out.append(f"| {r['stage']} | {label(r)} | {_n(ld.get('artifact_build_ms'), '{:.0f}')} | "
                   f"{_n(ld.get('cold_load_ms'), '{:.0f}')} | "
                   f"{_n(ld.get('cold_first_run_ms'), '{:.0f}')} | "
                   f"{_n(ld.get('warm_load_ms'), '{:.0f}')} | "
                   f"{_n(ld.get('warm_first_run_ms'), '{:.0f}')} | {ld.get('note') or ''} |")
    return out


def _seed() -> list[str]:
    out = ["## Reference layout: the seed's published figures (not measured by fusionrt)", "",
           "RTX 3090, 100-run average, SimSwap-style 256² generator, batch 1 — as published "
           "with the seed project, copied here only to show the layout; our rows above are "
           "measured. Values marked * are derived here from the published latencies "
           "(FPS = 1000 / latency, speedup = baseline latency / latency).", "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "|".join(ALIGN) + "|"]
    torch_ms, ort_ms = SEED_ROWS[0][1], SEED_ROWS[1][1]
    for name, ms, mb, fps, sp in SEED_ROWS:
        fps_s = f"{fps:.2f}" if fps else f"{1000 / ms:.2f}*"
        sp_s = f"{sp:.2f}×" if sp else f"{torch_ms / ms:.2f}×*"
        out.append(f"| {name} | 1 | {ms:.1f} | — | — | — | {mb} | {fps_s} | {sp_s} | "
                   f"{ort_ms / ms:.2f}×* |")
    return out


def to_markdown(doc: dict) -> str:
    m = doc["machine"]
    where = m.get("gpu_name") or m.get("cpu") or "?"
    lines = [f"# fusionrt bench — {where} — {str(m.get('date', ''))[:10]}", ""]
    if doc.get("synthetic"):
        lines += [f"> **{SYNTHETIC_NOTE}.** Rows marked † ran on synthetic weights.", ""]
    lines += _machine(m) + ["", _method(doc), ""]
    if doc["config"].get("preset"):
        wall = doc.get("elapsed_s")
        lines += [f"Preset **{doc['config']['preset']}**"
                  + (f": the whole run took **{wall:.0f} s**, compiles and builds included."
                     if wall is not None else " (partial results)."), ""]
    lines += [f"- {n}" for n in doc.get("notes") or []] + ([""] if doc.get("notes") else [])
    lines += _best(doc["rows"])
    by_stage = rows_by_stage(doc["rows"])
    for stage, rows in by_stage.items():
        title = STAGES[stage].title if stage in STAGES else stage
        if rows[0].get("input_size"):
            title += f" — input {rows[0]['input_size']}×{rows[0]['input_size']}"
        elif stage == "pipeline":
            title += f" — frame {Path(doc['config'].get('frame', '?')).name}"
        ok = [r for r in rows if r["status"] == "ok"]
        rest = [r for r in rows if r["status"] != "ok"]
        lines += [f"## {title}", ""]
        table = _video if stage == "video" else _table
        lines += (table(ok) if ok else ["No row of this stage ran."]) + [""]
        if rest:
            lines += ["Not run:", ""] + _not_run(rest) + [""]
        notes = {}
        for r in rows:
            for n in r.get("notes") or []:
                notes.setdefault(n, []).append(label(r))
        if notes:
            lines += ["Notes:", ""] + [f"- {', '.join(dict.fromkeys(who))}: {n}"
                                       for n, who in notes.items()] + [""]
    loads = _loads(doc["rows"])
    if len(loads) > 2:  # video-only presets have no load figures: no empty table
        lines += ["## Load and build times (ms)", ""] + loads + [""]
    lines += _seed() + [""]
    if doc.get("elapsed_s") is not None:
        lines.append(f"Run took {doc['elapsed_s']} s.")
    else:
        lines.append("Partial results: the run was still going (or was stopped) when this was "
                     "written.")
    return "\n".join(lines) + "\n"
