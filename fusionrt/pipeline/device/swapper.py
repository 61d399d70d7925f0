"""One batch of device frames through every stage: detect → (embed) → select → crop → generate
→ paste, in place, on one CUDA stream.

The only host round trip per batch is the detections (a few hundred bytes; their number per
frame decides what runs next). ArcFace runs once per source identity, and on the target faces
only for ``select="reference"``. The generator gets the crops of all frames of the batch
together, in chunks of ``gen_batch`` padded to that size so a captured CUDA graph replays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ...engines.base import Engine, EngineOwner
from ...errors import EngineError, InputError, NoFaceError
from ...models.store import ModelStore
from ..host.embed import l2norm
from ..hybrid import parse_engine_spec
from ..pipeline import DETECTOR, EMBEDDER, SwapSettings
from ..select import MODES, select_faces
from ..host.swap import NeuralSwapper
from ..types import Face
from . import require_torch
from .detect import GpuDetector
from .engines_gpu import load_engine, max_batch, swapper_name
from .frames import (Device, bgr_to_yuv420, const, hwc_to_nchw, merge_yuv420, nchw_to_hwc,
                     to_device, yuv420_to_bgr)
from .paste import feather_mask_tensor, paste_faces
from .timing import StageTimer
from .track import LandmarkTracker
from .warp import crop_faces, similarity_batch, template_points

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


@dataclass
class GpuConfig(SwapSettings):
    """Settings of the GPU path; the ``SwapSettings`` ones mean what they mean in
    ``PipelineConfig`` (on CUDA, stages left on CPU engines move to ``GPU_DEFAULTS``)."""

    device: str = "cuda"
    precision: str = "fp32"        # generator on torch engines: fp32, tf32, fp16, bf16
    cuda_graphs: bool = True
    detect_every: int = 1          # 1: detect on every frame (default)
    smoothing: float = 0.5         # landmark EMA weight at each detection when detect_every > 1
    gen_batch: int = 32            # crops per generator call
    timing: bool = True            # per-stage CUDA-event times

    @classmethod
    def from_pipeline(cls, config: SwapSettings, **changes: Any) -> "GpuConfig":
        """The GPU path's settings for a CPU-path ``PipelineConfig``: its ``SwapSettings``."""
        shared = {f.name: getattr(config, f.name) for f in fields(SwapSettings)}
        return cls(**{**shared, **changes})

    def check(self) -> None:
        if self.select not in MODES:
            raise InputError(f"selection '{self.select}' | unknown; expected one of: "
                             f"{', '.join(MODES)}")
        if self.precision not in PRECISIONS:
            raise EngineError(f"precision '{self.precision}' | unknown; expected one of: "
                              f"{', '.join(PRECISIONS)}")
        if self.detect_every < 1 or self.gen_batch < 1:
            raise InputError(f"detect_every {self.detect_every}, gen_batch {self.gen_batch} | "
                             "expected both >= 1")


class GpuSwapper(EngineOwner):
    """Loads the engines once; ``process`` swaps faces in batches of device frames."""

    def __init__(self, config: GpuConfig | None = None, store: ModelStore | None = None):
        torch = require_torch()
        self.torch = torch
        self.config = c = config or GpuConfig()
        c.check()
        self.store = store or ModelStore()
        self.dev = Device(c.device)
        if self.dev.cuda and not torch.cuda.is_available():
            raise EngineError(f"device '{c.device}' | torch sees no CUDA GPU; use --device cpu")
        self.compute = self.dev.stream()
        self.timer = StageTimer(self.dev, c.timing)
        self.spec_map = parse_engine_spec(c.engine)
        self._engines: list[Engine] = []
        self.stages: dict[str, str] = {}
        self.synthetic = False
        try:
            self._load_stages(c)
        except BaseException:
            self.close()  # engines loaded before the failure
            raise
        self.gen_chunk = min(c.gen_batch, max_batch(self.neural.engine) or c.gen_batch)
        graphs = lambda e: bool(self.dev.cuda and e.config.options.get("cuda_graph"))  # noqa: E731
        self.pad_static = graphs(self.neural.engine)
        self.det_pad = graphs(self.detector.engine)
        self.det_batch = 0
        self._warm: set[tuple[int, int, int]] = set()
        self.latent = None
        self.reference: np.ndarray | None = None
        self.tracker = LandmarkTracker(c.smoothing) if c.detect_every > 1 else None
        self.frame_no = 0

    def _load_stages(self, c: GpuConfig) -> None:
        with self.dev.use(self.compute):
            self.detector = GpuDetector(self._engine(DETECTOR, "detect"), self.dev,
                                        c.score_threshold, c.nms_threshold, c.det_size)
            self.neural = NeuralSwapper(self._engine(swapper_name(c.swapper, self.store), "swap"))
            self.embed_engine = self._engine(self.neural.spec.extra.get("embedder", EMBEDDER),
                                             "embed")
            espec = self.embed_engine.spec
            self.embed_size = espec.preprocess.size[0] if espec.preprocess.size else 112
            self.tpl_embed = template_points(espec.template or "arcface_112", self.embed_size,
                                             self.dev.device)
            self.tpl_swap = template_points(self.neural.template, self.neural.size,
                                            self.dev.device)
            self.mask = feather_mask_tensor(self.neural.size, c.feather, self.dev.device)

    def _engine(self, model: str, stage: str) -> Engine:
        engine, what, synthetic = load_engine(self.store, model, stage, self.config, self.dev,
                                              self.compute, self.spec_map)
        self._engines.append(engine)
        self.stages[stage] = what
        self.synthetic |= synthetic
        return engine

    # -- identities -----------------------------------------------------------------------------
    def _upload_hwc(self, image: np.ndarray):
        """A BGR uint8 image → a new (1, H, W, 3) uint8 tensor on the device (a copy even on
        CPU, so swapping in place never touches the caller's array); anything else refused."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"image | got {image.dtype} {image.shape}; "
                             "expected uint8 (H, W, 3) BGR")
        return self.torch.from_numpy(np.array(image))[None].to(self.dev.device)

    def _upload_image(self, image: np.ndarray):
        return hwc_to_nchw(self._upload_hwc(image))

    def _identity(self, image: np.ndarray, role: str, path: str | None) -> np.ndarray:
        with self.dev.use(self.compute):
            frames = self._upload_image(image)
            faces = self.detector.detect(frames).faces(1)[0]
            if not faces:
                raise NoFaceError(f"no face in the {role} image '{path or '<array>'}'")
            face = max(faces, key=lambda f: f.area)
            return self._embed(frames, [[face]])[0][0].embedding

    def set_source(self, image: np.ndarray, path: str | None = None) -> None:
        """ArcFace once on the largest face of ``image``; the generator's latent from it."""
        emb = self._identity(image, "source", path)
        self.latent = self.torch.as_tensor(self.neural.latent(emb), device=self.dev.device)

    def set_reference(self, image: np.ndarray, path: str | None = None) -> None:
        """Selection ``reference``: swap only faces that look like the largest face here."""
        self.reference = self._identity(image, "reference", path)

    # -- stages -----------------------------------------------------------------------------
    def _prep(self, crops, spec):
        """(K, 3, s, s) BGR float crops → the model's input per its preprocess contract."""
        p = spec.preprocess
        x = crops.flip(1) if p.channel_order == "RGB" else crops
        mean, std = const(tuple(p.mean), x), const(tuple(p.std), x)
        return ((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).contiguous()

    def _embed(self, frames, faces: list[list[Face]]) -> list[list[Face]]:
        flat = [(i, f) for i, fl in enumerate(faces) for f in fl]
        if not flat:
            return faces
        with self.timer.stage("embed"):
            lm = to_device(np.stack([f.landmarks for _, f in flat]), self.dev.device)
            crops = crop_faces(frames, [i for i, _ in flat],
                               similarity_batch(lm, self.tpl_embed), self.embed_size)
            e = self.embed_engine
            out = e.run({e.inputs[0].name: self._prep(crops, e.spec)})[e.outputs[0].name]
            emb = l2norm(np.asarray(self.torch.as_tensor(out).float().cpu().numpy())
                         .reshape(len(flat), -1))
        it = iter(emb)
        return [[Face(f.box, f.score, f.landmarks, next(it)) for f in fl] for fl in faces]

    def _generate(self, crops):
        torch, n = self.torch, self.neural
        x = self._prep(crops, n.spec)
        outs = []
        for s in range(0, x.shape[0], self.gen_chunk):
            xb = x[s:s + self.gen_chunk]
            k = xb.shape[0]
            if self.pad_static and k < self.gen_chunk:  # one static shape: the graph replays
                xb = torch.cat([xb, xb.new_zeros((self.gen_chunk - k,) + tuple(xb.shape[1:]))])
            src = self.latent.expand(xb.shape[0], -1).contiguous()
            y = n.engine.run({"target": xb.contiguous(), "source": src})[n.output_name]
            outs.append(torch.as_tensor(y).to(self.dev.device)[:k].float())
        y = torch.cat(outs)
        if n.output_range == "tanh":
            y = (y + 1.0) / 2.0
        y = (y.clamp(0.0, 1.0) * 255.0).round()
        return y.flip(1) if n.spec.preprocess.channel_order == "RGB" else y

    def _select(self, frames, n: int) -> list[list[Face]]:
        """Faces to swap per frame: detection (every frame or every N-th), tracking, selection."""
        c, t = self.config, self.timer
        rows = [i for i in range(n) if (self.frame_no + i) % c.detect_every == 0]
        found: dict[int, list[Face]] = {}
        if rows:
            sub = frames if len(rows) == n else frames[to_device(rows, self.dev.device)]
            with t.stage("detect_prep"):
                x, scale = self.detector.letterbox(sub)
            with t.stage("detect_net"):
                m = x.shape[0]
                if self.det_pad and m < self.det_batch:  # the captured graph's batch
                    x = self.torch.cat([x, x.new_zeros((self.det_batch - m,) + tuple(x.shape[1:]))])
                loc, conf, lmk = (o[:m] for o in self.detector.run_net(x))
            with t.stage("detect_post"):
                dets = self.detector.postprocess(loc, conf, lmk, scale, *frames.shape[2:])
                per_row = dets.faces(len(rows))
            if c.select == "reference":
                per_row = self._embed(sub, per_row)
            found = dict(zip(rows, per_row))
        out = []
        for i in range(n):
            faces = found.get(i, [])
            if self.tracker is not None:
                faces = self.tracker.update(faces) if i in found else self.tracker.current()
            out.append(select_faces(faces, c.select, self.reference, c.similarity_threshold))
        return out

    # -- the batch ----------------------------------------------------------------------------
    def warmup(self, batch: int, height: int, width: int) -> None:
        """Run each static shape once before the loop's threads start: CUDA graphs are captured
        and cuDNN/ORT autotune here (a graph capture fails while another thread allocates or
        synchronises, and autotuning mid-video would stall the loop)."""
        key = (batch, height, width)
        if key in self._warm:
            return
        torch = self.torch
        with self.dev.use(self.compute), torch.inference_mode():
            self.det_batch = max(self.det_batch, batch)
            x, _ = self.detector.letterbox(
                torch.zeros((self.det_batch, 3, height, width), device=self.dev.device))
            self.detector.run_net(x)
            if self.latent is not None:
                s = self.neural.size
                self._generate(torch.zeros((self.gen_chunk, 3, s, s), device=self.dev.device))
        if self.dev.cuda:
            torch.cuda.synchronize(self.dev.device)
        self._warm.add(key)

    def process(self, batch, fmt: str, height: int, width: int) -> list[int]:
        """Swap faces in a device batch, in place: (N, H * 3 / 2, W) yuv420p or (N, H, W, 3)
        BGR uint8. Returns the number of faces swapped per frame. Runs on the compute stream;
        the caller records an event after it before reading ``batch``."""
        if self.latent is None:
            raise InputError("pipeline | no source identity; call set_source first")
        if self.compute is None:
            return self._process(batch, fmt, height, width)
        caller = self.torch.cuda.current_stream(self.dev.device)
        self.compute.wait_stream(caller)  # the batch may have been written on the caller's stream
        try:
            return self._process(batch, fmt, height, width)
        finally:
            caller.wait_stream(self.compute)  # and is read there after (GPU-side waits only)

    def _process(self, batch, fmt: str, height: int, width: int) -> list[int]:
        torch, t = self.torch, self.timer
        n = batch.shape[0]
        with self.dev.use(self.compute), torch.inference_mode():
            with t.stage("convert_in"):
                frames = (yuv420_to_bgr(batch, height, width) if fmt == "yuv420p"
                          else hwc_to_nchw(batch))
            chosen = self._select(frames, n)
            self.frame_no += n
            idx = [i for i, fl in enumerate(chosen) for _ in fl]
            if not idx:
                return [0] * n  # frames without faces pass through untouched
            with t.stage("align_crop"):
                lm = to_device(np.stack([f.landmarks for fl in chosen for f in fl]),
                               self.dev.device)
                mats = similarity_batch(lm, self.tpl_swap)
                crops = crop_faces(frames, idx, mats, self.neural.size)
            with t.stage("generator"):
                faces = self._generate(crops)
            with t.stage("paste"):
                union = paste_faces(frames, faces, mats, idx, self.mask,
                                    color=self.config.color_transfer)
            with t.stage("convert_out"):
                hit = to_device(sorted(set(idx)), self.dev.device)
                if fmt == "yuv420p":
                    block = batch[hit]
                    merge_yuv420(bgr_to_yuv420(frames[hit]), block, union[hit], height, width)
                    batch[hit] = block
                else:
                    batch[hit] = nchw_to_hwc(frames[hit])
        return [len(fl) for fl in chosen]

    def swap_image(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """One BGR uint8 image through the GPU path → (swapped copy, faces swapped)."""
        frames = self._upload_hwc(image)
        counts = self.process(frames, "bgr", image.shape[0], image.shape[1])
        return frames[0].cpu().numpy(), counts[0]

    def describe(self) -> dict[str, str]:
        return dict(self.stages)
