"""Write a Triton model repository: one model per stage plus the pipeline model.

Layout (``fusionrt.json`` says which zoo model and precision each stage holds)::

    OUT/fusionrt_detect/config.pbtxt, 1/model.onnx      RetinaFace (tensor stage)
    OUT/fusionrt_embed/...                               ArcFace
    OUT/fusionrt_swap/...                                the generator (inswapper/simswap)
    OUT/fusionrt_pipeline/config.pbtxt, 1/model.py       Python (BLS) model calling the stages
    OUT/fusionrt.json, OUT/README.md

Why a Python/BLS pipeline model and not an ensemble: the number of faces per frame is known
only after detection post-processing (prior decode + NMS, numpy/OpenCV), and alignment and
paste-back are affine warps of data-dependent crops. An ensemble only wires fixed tensor graphs,
so the pipeline model runs fusionrt's own pre/post code and calls the stage models through BLS;
the stages keep their own dynamic batching and instance groups.

``tensorrt`` backend: plans are built per compute capability with TensorRT, which is not
installed where this was written; the repository then holds the ONNX build input, the exact
``trtexec`` commands (``build_plans.sh``) and a config naming one plan per capability. No plan
file is ever written unless TensorRT built it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError, ModelError
from ..models.spec import ModelSpec
from .configs import IO, StageModel, TrtOptions, model_config_dict, to_pbtxt

log = logging.getLogger(__name__)

FORMAT = "fusionrt.triton-repo/1"
MANIFEST = "fusionrt.json"
STAGES = {"detect": "fusionrt_detect", "embed": "fusionrt_embed", "swap": "fusionrt_swap"}
PIPELINE = "fusionrt_pipeline"
DETECTOR, EMBEDDER = "retinaface_mnet025", "arcface_w600k_r50"
DEFAULT_CCS = ("8.0", "8.6", "8.9", "9.0")  # A100, A10/RTX 30, L4/RTX 40, H100
PIPELINE_MODEL_PY = Path(__file__).with_name("pipeline_model.py")


@dataclass(frozen=True)
class RepoOptions:
    """What ``fusionrt triton repo`` writes."""

    precision: str = "fp32"
    backend: str = "onnxruntime"
    swapper: str = "inswapper_128"
    allow_synthetic: bool = False
    max_batch: int = 8
    max_queue_delay_us: int = 2000
    instances: int = 1
    kind: str = "KIND_GPU"
    det_size: int = 640
    compute_capabilities: tuple[str, ...] = DEFAULT_CCS
    calibration: Path | None = None
    trt_cache: str = "/opt/fusionrt/trt_cache"

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise InputError(f"precision '{self.precision}' | unknown; expected fp32, fp16, int8")
        if self.backend not in ("onnxruntime", "tensorrt"):
            raise InputError(f"backend '{self.backend}' | unknown; expected onnxruntime or "
                             "tensorrt")
        if self.det_size % 32:
            raise InputError(f"det_size {self.det_size} | expected a multiple of 32")


@dataclass
class RepoReport:
    """What was written, and what still has to be done by hand (TensorRT plans)."""

    root: Path
    models: dict[str, str] = field(default_factory=dict)  # triton model -> zoo model
    plans_built: list[str] = field(default_factory=list)
    plans_missing: list[str] = field(default_factory=list)
    trtexec: list[tuple[str, str]] = field(default_factory=list)  # (compute capability, cmd)
    gates: dict[str, str] = field(default_factory=dict)
    synthetic: list[str] = field(default_factory=list)


# -- stage contracts -------------------------------------------------------------------------

def onnx_io(path: Path) -> dict[str, list]:
    """{tensor name: dims as in the ONNX graph (str for symbolic axes)}."""
    import onnx
    g = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in g.initializer}
    return {v.name: [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                     for d in v.type.tensor_type.shape.dim]
            for v in list(g.input) + list(g.output) if v.name not in init}


def stage_io(spec: ModelSpec, onnx_path: Path, det_size: int) -> tuple[tuple[IO, ...],
                                                                       tuple[IO, ...], bool]:
    """(inputs, outputs, batches) with every dim concrete: ``H``/``W`` are the detector's square
    letterbox side, ``A`` its anchor count; a fixed ONNX batch axis means no batching."""
    from ..pipeline.host.detect import priors
    graph = onnx_io(onnx_path)
    values = {"H": det_size, "W": det_size, "A": len(priors(det_size))}
    batches = True

    def convert(t) -> IO:
        nonlocal batches
        if t.name not in graph:
            raise ModelError(f"model file '{onnx_path}' | has no tensor '{t.name}'; the "
                             f"'{spec.name}' contract expects it")
        got = graph[t.name]
        if len(got) != len(t.shape):
            raise ModelError(f"tensor '{t.name}' | rank {len(got)} in {onnx_path}; expected "
                             f"{t.shape_str()}")
        dims = []
        for i, (want, have) in enumerate(zip(t.shape, got)):
            if isinstance(want, str):
                want = values.get(want, have if isinstance(have, int) else None) if i else None
            if isinstance(have, int) and isinstance(want, int) and have != want:
                raise ModelError(f"tensor '{t.name}' | axis {i} is {have} in {onnx_path}; "
                                 f"expected {want}")
            if i == 0 and isinstance(have, int):
                batches = False
            dims.append(want if want is not None else have)
        return IO(t.name, t.dtype, tuple(dims))

    ins = [convert(t) for t in spec.inputs]
    outs = [convert(t) for t in spec.outputs]
    if batches:
        return tuple(IO(i.name, i.dtype, i.dims[1:]) for i in ins), \
            tuple(IO(o.name, o.dtype, o.dims[1:]) for o in outs), True
    return tuple(ins), tuple(outs), False


def profile_arg(inputs: tuple[IO, ...], n: int) -> str:
    return ",".join(f"{i.name}:" + "x".join(str(d) for d in (n, *i.dims)) for i in inputs)


def stage_model(stage: str, spec: ModelSpec, onnx_path: Path, o: RepoOptions,
                versions: tuple[int, ...] | None = None) -> StageModel:
    """The Triton model for one stage's ONNX file under options ``o``."""
    ins, outs, batches = stage_io(spec, onnx_path, o.det_size)
    mb = o.max_batch if batches else 0
    trt = None
    if o.backend == "onnxruntime" and o.kind == "KIND_GPU":
        n = max(mb, 1)
        trt = TrtOptions(o.precision, cache_path=o.trt_cache,
                         profile_min=profile_arg(ins, 1) if batches else "",
                         profile_opt=profile_arg(ins, n) if batches else "",
                         profile_max=profile_arg(ins, n) if batches else "")
    plans = {cc: plan_name(cc) for cc in o.compute_capabilities} if o.backend == "tensorrt" \
        else {}
    return StageModel(STAGES[stage], o.backend, ins, outs, mb, o.max_queue_delay_us,
                      o.instances, o.kind, trt, plans, {"fusionrt.model": spec.name,
                                                        "fusionrt.precision": o.precision},
                      versions)


def plan_name(cc: str) -> str:
    return f"model.sm{cc.replace('.', '')}.plan"


def pipeline_model(o: RepoOptions, swapper: str) -> StageModel:
    """The Python (BLS) model: BGR uint8 frames in and out, any size, one request at a time."""
    img = (-1, -1, 3)
    return StageModel(PIPELINE, "python",
                      (IO("TARGET", "uint8", img), IO("SOURCE", "uint8", img)),
                      (IO("IMAGE", "uint8", img), IO("FACES", "int32", (1,))),
                      max_batch_size=0, instances=o.instances, kind="KIND_CPU",
                      parameters={"swapper": swapper, "det_size": str(o.det_size),
                                  **{f"stage.{k}": v for k, v in STAGES.items()}})


# -- writing -----------------------------------------------------------------------------------

def write_text(path: Path, text: str) -> None:
    from .._fs import atomic_write_bytes
    atomic_write_bytes(path, text.encode())


def write_config(model_dir: Path, m: StageModel) -> None:
    write_text(model_dir / "config.pbtxt", to_pbtxt(model_config_dict(m)))


def place_stage(root: Path, stage: str, spec: ModelSpec, onnx_path: Path, o: RepoOptions,
                version: int, report: RepoReport) -> Path:
    """Copy ``onnx_path`` into ``root/<stage model>/<version>/`` and (tensorrt) list its plans."""
    from ..builders.trt_builder import TrtBuildConfig, trtexec_command
    from ..engines.base import BatchProfile
    vdir = root / STAGES[stage] / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, vdir / "model.onnx")
    if o.backend == "tensorrt":
        dims = {"H": o.det_size, "W": o.det_size} if spec.task == "detect" else {}
        _, _, batches = stage_io(spec, onnx_path, o.det_size)
        batch = BatchProfile(1, o.max_batch, o.max_batch) if batches else BatchProfile()
        cfg = TrtBuildConfig(Path("model.onnx"), batch=batch, dims=dims,
                             timing_cache=Path("/opt/fusionrt/trt_cache/timing.cache"))
        for cc in o.compute_capabilities:
            rel = f"{STAGES[stage]}/{version}"
            report.trtexec.append(
                (cc, f"(cd {rel} && {trtexec_command(cfg, spec, Path(plan_name(cc)))})"))
            report.plans_missing.append(f"{rel}/{plan_name(cc)}")
    return vdir


def write_repository(out: Path | str, o: RepoOptions | None = None, store=None) -> RepoReport:
    """Write a complete repository at ``out`` (which must not exist or be empty), atomically:
    everything is written to a sibling scratch folder that is renamed into place at the end.

    Raises:
        InputError: ``out`` is a non-empty folder.
        ModelError: a model is missing, breaks its contract, or fails the quality gate.
    """
    from ..models.store import ModelStore
    from ..models.zoo import get_spec
    from .release import gated_artifact
    o = o or RepoOptions()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"repository '{out}' | exists and is not empty; expected a new folder "
                         "(use 'fusionrt release' to add versions to an existing one)")
    store = store or ModelStore()
    swap_spec = get_spec(o.swapper)
    if swap_spec.task != "swap":
        raise InputError(f"swapper '{o.swapper}' | task {swap_spec.task}; expected a swap model")
    if swap_spec.extra.get("converter"):  # no 'convert' stage model in the repository yet
        raise InputError(f"swapper '{o.swapper}' | needs the identity converter "
                         f"'{swap_spec.extra['converter']}', which a Triton repository does not "
                         "carry yet; expected a swapper without one (e.g. inswapper_128)")
    embedder = swap_spec.extra.get("embedder", EMBEDDER)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage_dir = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.scratch-"))
    report = RepoReport(out)
    manifest = {"format": FORMAT, "precision": o.precision, "backend": o.backend,
                "options": {k: (str(v) if isinstance(v, Path) else v)
                            for k, v in asdict(o).items()}, "stages": {}}
    try:
        for stage, name in (("detect", DETECTOR), ("embed", embedder), ("swap", o.swapper)):
            spec = get_spec(name)
            art = store.resolve(name, allow_synthetic=o.allow_synthetic)
            built = gated_artifact(spec, Path(art.onnx_path), o.precision, stage_dir / "work",
                                   calibration=o.calibration, synthetic=art.synthetic,
                                   allow_synthetic=o.allow_synthetic, det_size=o.det_size)
            if built.report is not None:
                report.gates[name] = built.report.summary()
            place_stage(stage_dir, stage, spec, built.path, o, 1, report)
            write_config(stage_dir / STAGES[stage], stage_model(stage, spec, built.path, o))
            report.models[STAGES[stage]] = name
            if art.synthetic:
                report.synthetic.append(name)
            manifest["stages"][stage] = {"model": STAGES[stage], "zoo": name,
                                         "synthetic": art.synthetic}
        shutil.rmtree(stage_dir / "work", ignore_errors=True)
        pdir = stage_dir / PIPELINE
        (pdir / "1").mkdir(parents=True)
        shutil.copyfile(PIPELINE_MODEL_PY, pdir / "1" / "model.py")
        write_config(pdir, pipeline_model(o, o.swapper))
        report.models[PIPELINE] = "fusionrt pipeline (Python/BLS)"
        manifest["pipeline"] = PIPELINE
        write_text(stage_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        if report.trtexec:
            write_text(stage_dir / "build_plans.sh", build_script(report.trtexec))
        write_text(stage_dir / "README.md", readme(o, report))
        if out.exists():
            out.rmdir()
        os.replace(stage_dir, out)
    except BaseException:
        shutil.rmtree(stage_dir, ignore_errors=True)
        raise
    return report


def build_script(commands: list[tuple[str, str]]) -> str:
    """``build_plans.sh [CC]``: builds only the plans of this GPU's compute capability (a plan
    built on one capability must never be saved under another's name)."""
    out = ["#!/bin/sh", "# Build the TensorRT plans for THIS GPU's compute capability.", "set -e",
           'cd "$(dirname "$0")"',
           'CC="${1:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1)}"',
           'case "$CC" in']
    for cc in dict.fromkeys(c for c, _ in commands):
        out.append(f"  {cc})")
        out += [f"    {cmd}" for c, cmd in commands if c == cc]
        out.append("    ;;")
    out += ['  *) echo "no plans configured for compute capability $CC" >&2; exit 2 ;;', "esac"]
    return "\n".join(out) + "\n"


def readme(o: RepoOptions, r: RepoReport) -> str:
    lines = ["# fusionrt Triton model repository", "",
             f"Backend `{o.backend}`, precision `{o.precision}`, written by `fusionrt triton "
             "repo`. Models:", ""]
    lines += [f"- `{m}`: {z}" for m, z in r.models.items()]
    if r.synthetic:
        lines += ["", f"**Synthetic (random) weights: {', '.join(r.synthetic)}.** Outputs are "
                      "meaningless; for tests and speed work only."]
    if o.backend == "tensorrt":
        state = ("built: " + ", ".join(r.plans_built)) if r.plans_built else "NOT built"
        lines += ["", "## TensorRT plans", "",
                  f"Plans are {state}. TensorRT was not available when this repository was "
                  "written, so no `.plan` file exists yet and Triton will refuse to load the "
                  "stage models until they are built. Build one plan per compute capability on "
                  "a GPU of that capability (`sh build_plans.sh`, or the commands below), "
                  "then load the models.", "", "```sh"]
        lines += [f"# on a GPU of compute capability {cc}\n{cmd}" for cc, cmd in r.trtexec]
        lines += ["```"]
    lines += ["", "## Serve", "", "```sh",
              "tritonserver --model-repository=$PWD --model-control-mode=explicit "
              "--load-model='*'", "```", "",
              "The pipeline model (`fusionrt_pipeline`, Python backend) imports fusionrt: the "
              "Triton container needs `pip install fusionrt` (see deploy/Dockerfile).", ""]
    return "\n".join(lines)
