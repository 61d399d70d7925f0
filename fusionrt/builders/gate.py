"""The quality gate: a reduced-precision artifact is used only if it stays close to FP32.

Figures per task, on held-out inputs (never the crops INT8 was calibrated on):
  * swap: PSNR and SSIM of the swapped crop (RGB in [0, 1]) and the identity cosine between
    ArcFace embeddings of the FP32 and the candidate outputs (the FP32 ArcFace judges both);
  * embed: cosine between FP32 and candidate embeddings;
  * detect: IoU of matched boxes and landmark error (fraction of the box width);
  * enhance: PSNR and SSIM of the restored face (the [-1, 1] output mapped to [0, 1]);
  * occlude: PSNR of the occlusion mask (clipped to [0, 1], as FaceFusion clips it);
  * parse: the share of pixels whose face-parsing class (argmax) agrees with FP32.
Thresholds: PSNR and ID-cosine are the project's (issue 5); the others are fusionrt's choice,
set so that an FP16/INT8 build of a working model passes with margin. All are configurable.

The gate takes what it needs from the pipeline as callables (``fusionrt.pipeline.artifacts.
gate_inputs`` makes them): an FP32 ArcFace ``id_embed`` and the re-alignment ``id_crops`` for the
identity cosine, the detector heads' ``decode`` for box IoU and landmark error.

Without an FP32 ArcFace the identity cosine is *not measured* (never a ``-inf`` figure): the
report says so and why (which model to pull), and the artifact is judged on what was measured
(PSNR, SSIM) -- unless the identity figure was asked for (``require_id``; ``fusionrt build
--require-id``), in which case it is refused with that message.

FP16 on the CPU: ONNX Runtime's CPU provider computes FP16 nodes in FP32 (it inserts Casts), so
``ort-cpu`` would not exercise FP16 arithmetic at all. For FP16 on a CPU engine the gate runs the
ONNX reference evaluator (numpy, real FP16 rounding and overflow) when the model is small enough,
else ``ort-cpu`` with a note in the report saying that the figures reflect weight rounding only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..engines.registry import REFERENCE_ENGINE, engine_names, get_engine
from ..errors import EngineError, ModelError
from ..models.spec import ModelSpec
from .parity import Parity, box_iou, check, cosine, psnr, ssim

log = logging.getLogger(__name__)

#: The FP32 embedder the identity cosine needs, and how a user gets it.
ID_EMBEDDER = "arcface_w600k_r50"
ID_NOT_MEASURED = (f"no FP32 ArcFace ({ID_EMBEDDER}) installed; install it with: fusionrt "
                   f"models pull {ID_EMBEDDER}")

REFERENCE_MAX_BYTES = 40 << 20  # above this the numpy reference evaluator takes minutes/sample


@dataclass(frozen=True)
class Thresholds:
    """Lowest acceptable figure per metric (``landmark_err``: highest)."""

    psnr: float
    ssim: float
    id_cosine: float
    embed_cosine: float
    box_iou: float
    landmark_err: float
    label_agree: float = 0.99  # face parser: pixels with the FP32 class


PRESETS: dict[str, Thresholds] = {
    "fp16": Thresholds(psnr=40.0, ssim=0.98, id_cosine=0.99, embed_cosine=0.999, box_iou=0.95,
                       landmark_err=0.02),
    "int8": Thresholds(psnr=30.0, ssim=0.90, id_cosine=0.95, embed_cosine=0.98, box_iou=0.90,
                       landmark_err=0.05, label_agree=0.95),
}


def thresholds_for(precision: str, **overrides: float) -> Thresholds:
    if precision not in PRESETS:
        raise ModelError(f"quality gate | precision '{precision}' has no thresholds; expected "
                         f"one of {sorted(PRESETS)}")
    return replace(PRESETS[precision], **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class GateReport:
    """The figures, whether they pass, and everything needed to judge them."""

    model: str
    precision: str
    engine: str
    candidate: str
    reference: str
    samples: int
    figures: list[Parity]
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # conversion facts (keep-list, Q/DQ counts)
    #: metric -> why it was not measured (e.g. the identity cosine without an ArcFace)
    not_measured: dict[str, str] = field(default_factory=dict)
    #: metrics that must be measured for the artifact to pass (``--require-id``: id_cosine)
    required: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.figures) and all(f.passed for f in self.figures) and \
            not any(m in self.not_measured for m in self.required)

    def summary(self) -> str:
        parts = [str(f) for f in self.figures]
        parts += [f"{m} not measured ({'REQUIRED: ' if m in self.required else ''}{why})"
                  for m, why in self.not_measured.items()]
        return ", ".join(parts) or "no figures"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def to_markdown(self) -> str:
        lines = [f"# Quality gate: {self.model} {self.precision}",
                 "", f"**{'PASSED' if self.passed else 'REFUSED'}** on {self.samples} held-out "
                 f"sample(s), engine `{self.engine}`.", "",
                 f"- candidate: `{self.candidate}`", f"- reference (FP32): `{self.reference}`"]
        if self.synthetic:
            lines.append("- **random-weight (synthetic) models: these figures say nothing about "
                         "real-model quality**")
        lines += ["", "| metric | value | threshold | result |", "|---|---|---|---|"]
        for f in self.figures:
            op = "<=" if f.metric in ("max_abs", "landmark_err") else ">="
            lines.append(f"| {f.metric} | {f.value:.6g} | {op} {f.threshold:g} | "
                         f"{'pass' if f.passed else 'FAIL'} |")
        for m, why in self.not_measured.items():
            verdict = "FAIL (required)" if m in self.required else "not judged"
            lines.append(f"| {m} | not measured: {why} | | {verdict} |")
        lines += [""] + [f"- {n}" for n in self.notes]
        if self.details:
            lines += ["", "## Artifact", ""]
            lines += [f"- {k}: `{json.dumps(v, default=str)}`" for k, v in self.details.items()]
        return "\n".join(lines) + "\n"

    def write(self, stem: Path | str) -> tuple[Path, Path]:
        """``<stem>.gate.json`` and ``<stem>.gate.md``."""
        from .._fs import atomic_write_bytes
        stem = Path(stem)
        js, md = Path(f"{stem}.gate.json"), Path(f"{stem}.gate.md")
        atomic_write_bytes(js, json.dumps(self.to_dict(), indent=2, default=str).encode())
        atomic_write_bytes(md, self.to_markdown().encode())
        return js, md


Runner = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]
#: 112px BGR ArcFace crops (float 0..255) -> embeddings (N, 512): an FP32 ArcFace.
IdEmbed = Callable[[Sequence[np.ndarray]], np.ndarray]
#: (generator spec, outputs (N, 3, S, S) RGB [0, 1]) -> those crops, re-aligned for ArcFace.
IdCrops = Callable[[ModelSpec, np.ndarray], list[np.ndarray]]
#: One image's raw detector heads (loc (A, 4), landmarks (A, 10)) and the anchors to decode
#: (indices, K) -> (boxes (K, 4), landmarks (K, 5, 2)), normalised to the input.
Decode = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def make_runner(path: Path, spec: ModelSpec, engine: str = REFERENCE_ENGINE) -> Runner:
    """feeds -> outputs (spec order) for the ONNX file at ``path`` on ``engine``
    (an engine name or ``"reference"`` for ONNX's numpy reference evaluator)."""
    names = [t.name for t in spec.outputs]
    if engine == "reference":
        import onnx
        from onnx.reference import ReferenceEvaluator
        ev = ReferenceEvaluator(onnx.load(str(path)))
        return lambda feeds: [np.asarray(o, np.float32) for o in ev.run(names, dict(feeds))]
    from ..models.spec import Artifact
    from .open import open_engine
    eng = open_engine(engine, Artifact(spec, Path(path)))
    return lambda feeds: [np.asarray(eng.run(feeds)[n], np.float32) for n in names]


def gate_engine(precision: str, engine: str, path: Path) -> tuple[str, str | None]:
    """(engine the gate runs the candidate on, note for the report)."""
    if precision != "fp16" or not _cpu_graph_engine(engine):
        return engine, None
    if Path(path).stat().st_size <= REFERENCE_MAX_BYTES:
        return "reference", ("FP16 checked with the ONNX reference evaluator (real FP16 "
                             "arithmetic); ORT CPU would compute these nodes in FP32")
    gpu = [n for n in engine_names() if _graph_engine(n, "cuda")]
    return engine, (f"FP16 on {engine}: ORT computes FP16 nodes in FP32 on the CPU, so these "
                    f"figures reflect weight rounding only; re-run the gate on a CUDA engine"
                    f"{' (' + ', '.join(gpu) + ')' if gpu else ''}")


def _graph_engine(name: str, device: str) -> bool:
    """``name`` runs the ONNX graph as converted (no precision of its own) on ``device``."""
    try:
        cls = get_engine(name)
    except EngineError:
        return False
    return cls.runs_on(device) and tuple(cls.precisions) == ("fp32",)


def _cpu_graph_engine(name: str) -> bool:
    """An engine that runs the graph on the CPU only (ONNX Runtime CPU): FP16 nodes there are
    computed in FP32, so it cannot judge FP16 arithmetic."""
    return name != "reference" and _graph_engine(name, "cpu") and \
        tuple(get_engine(name).devices) == ("cpu",)


GATED_TASKS = ("swap", "embed", "detect", "enhance", "occlude", "parse")


def check_gated(spec: ModelSpec) -> None:
    """Refuse, before anything is converted, a model the gate has no figures for: a
    reduced-precision artifact is never used ungated."""
    decoder = spec.extra.get("decoder", "retinaface_priors")
    if spec.task not in GATED_TASKS or (spec.task == "detect" and decoder != "retinaface_priors"):
        what = f"{spec.task}, {decoder} outputs" if spec.task == "detect" else spec.task
        raise ModelError(f"quality gate | no figures for '{spec.name}' ({what}) yet, so no "
                         "FP16/INT8 artifact of it is made; use --precision fp32 (gated: "
                         f"tasks {', '.join(GATED_TASKS)}; detectors with RetinaFace heads)")


def evaluate(spec: ModelSpec, reference: Path, candidate: Path, precision: str,
             feeds: Sequence[Mapping[str, np.ndarray]], *, engine: str = REFERENCE_ENGINE,
             thresholds: Thresholds | None = None, id_embed: IdEmbed | None = None,
             id_crops: IdCrops | None = None, decode: Decode | None = None,
             synthetic: bool = False, reference_runner: Runner | None = None,
             candidate_runner: Runner | None = None, require_id: bool = False) -> GateReport:
    """Run ``feeds`` through the FP32 ``reference`` and the ``candidate`` and compare.

    Args:
        id_embed / id_crops: an FP32 ArcFace and the re-alignment of generator outputs to its
            crops, for the swap models' identity cosine; without ``id_embed`` the ID figure
            is "not measured" (reported with the reason) and the gate decides on the rest.
        require_id: the identity cosine must be measured (a swap model without ``id_embed``
            is refused, saying which embedder to install).
        decode: the detector heads' decoder (needed for detectors).
        reference_runner / candidate_runner: override how outputs are computed (torch FP16).
    """
    th = thresholds or thresholds_for(precision)
    notes: list[str] = []
    cand_engine = engine
    if candidate_runner is None:
        cand_engine, note = gate_engine(precision, engine, candidate)
        if note:
            notes.append(note)
        candidate_runner = make_runner(candidate, spec, cand_engine)
    reference_runner = reference_runner or make_runner(
        reference, spec, "reference" if cand_engine == "reference" else REFERENCE_ENGINE)
    ref = [reference_runner(f) for f in feeds]
    got = [candidate_runner(f) for f in feeds]
    ref_out = [np.concatenate([r[i] for r in ref]) for i in range(len(spec.outputs))]
    got_out = [np.concatenate([g[i] for g in got]) for i in range(len(spec.outputs))]
    if not all(np.isfinite(g).all() for g in got_out):
        notes.append("candidate produced NaN/Inf values")
    not_measured: dict[str, str] = {}
    if spec.task == "swap":
        figs = _swap_figures(spec, ref_out[0], got_out[0], th, id_embed, id_crops, notes)
        if id_embed is None:
            not_measured["id_cosine"] = ID_NOT_MEASURED
    elif spec.task == "embed":
        figs = [check("embed_cosine", _safe(cosine, ref_out[0], got_out[0]), th.embed_cosine)]
    elif spec.task == "detect":
        figs = _detect_figures(spec, ref_out, got_out, th, decode, notes)
    elif spec.task in ("enhance", "occlude"):
        # an enhancer's image in [-1, 1] → [0, 1]; a mask is clipped to [0, 1] as FaceFusion does
        unit = (lambda y: (np.clip(y, -1, 1) + 1) / 2) if spec.task == "enhance" else \
            (lambda y: np.clip(y, 0, 1))
        a, b = unit(ref_out[0]), unit(np.nan_to_num(got_out[0], nan=-1.0))
        figs = [check("psnr", _safe(psnr, a, b), th.psnr)]
        if spec.task == "enhance":
            figs.append(check("ssim", _safe(ssim, a, b), th.ssim))
    elif spec.task == "parse":
        agree = float(np.mean(ref_out[0].argmax(1) == got_out[0].argmax(1))) \
            if np.isfinite(got_out[0]).all() else float("-inf")
        figs = [check("label_agree", agree, th.label_agree)]
    else:
        raise ModelError(f"quality gate | task '{spec.task}' has no figures")
    if synthetic:
        notes.append("models have random (synthetic) weights: the figures are for random "
                     "weights, not for the real model")
    return GateReport(spec.name, precision, cand_engine, str(candidate), str(reference),
                      len(feeds), figs, synthetic, notes, not_measured=not_measured,
                      required=["id_cosine"] if require_id and spec.task == "swap" else [])


def _safe(fn, *a) -> float:
    """A metric of non-finite outputs is a failure, not a crash or a NaN that compares False."""
    if not all(np.isfinite(x).all() for x in a):
        return float("-inf")
    v = fn(*a)
    return v if np.isfinite(v) or v == float("inf") else float("-inf")


def _swap_figures(spec, ref, got, th: Thresholds, id_embed, id_crops, notes) -> list[Parity]:
    ref, got = np.clip(ref, 0, 1), np.clip(np.nan_to_num(got, nan=-1.0), -1, 2)
    figs = [check("psnr", _safe(psnr, ref, np.clip(got, 0, 1)), th.psnr)]
    figs.append(check("ssim", _safe(ssim, ref, np.clip(got, 0, 1)), th.ssim))
    if id_embed is None:
        notes.append(f"identity cosine not measured: {ID_NOT_MEASURED} (or pass "
                     "--allow-synthetic for a random-weight one); judged on PSNR and SSIM only "
                     "(--require-id refuses instead)")
        return figs
    if id_crops is None:
        raise ModelError("quality gate | id_embed given without id_crops (the re-alignment of "
                         "generator outputs to ArcFace crops: fusionrt.pipeline.artifacts)")
    a, b = id_crops(spec, ref), id_crops(spec, np.clip(got, 0, 1))
    ea, eb = id_embed(a), id_embed(b)
    figs.append(check("id_cosine", _safe(cosine, ea, eb), th.id_cosine))
    return figs


def _detect_figures(spec, ref, got, th: Thresholds, decode, notes) -> list[Parity]:
    if decode is None:
        raise ModelError(f"quality gate | model '{spec.name}' is a detector: its figures need "
                         "the heads' decode (fusionrt.pipeline.artifacts.gate_inputs)")
    names = [t.name for t in spec.outputs]
    r, g = dict(zip(names, ref)), dict(zip(names, got))
    ious, errs = [], []
    for i in range(len(r["loc"])):
        keep = np.flatnonzero(r["conf"][i][:, 1] > 0.5)
        if keep.size == 0:
            continue
        rb, rl = decode(r["loc"][i], r["landmarks"][i], keep)
        gb, gl = decode(g["loc"][i], g["landmarks"][i], keep)
        ious.extend(np.diag(box_iou(rb, gb)))
        width = np.maximum(rb[:, 2] - rb[:, 0], 1e-6)
        errs.extend(np.linalg.norm(rl - gl, axis=2).mean(1) / width)
    if not ious:
        notes.append("no face above 0.5 in the reference outputs: nothing to compare")
        return [check("box_iou", float("-inf"), th.box_iou)]
    err = float(np.mean(errs)) if np.isfinite(errs).all() else float("inf")
    return [check("box_iou", float(np.mean(ious)), th.box_iou),
            check("landmark_err", err, th.landmark_err)]


def refusal(report: GateReport, passed: Sequence[str] = ()) -> ModelError:
    """The error for a refused artifact: its figures and which precision did pass."""
    hint = (f"{', '.join(passed)} passed: use --precision {passed[0]}" if passed
            else "fp32 (the reference) always passes: use --precision fp32")
    return ModelError(f"artifact '{report.candidate}' | {report.precision} refused by the quality "
                      f"gate: {report.summary()}; {hint}")
