"""The device kernel set: every stage as torch tensor ops on one CUDA stream (or CPU torch, which
is how it is tested without a GPU). Same methods as ``pipeline/host/kernels.py``; ``FaceSwapper``
drives either.

A batch is N frames of one size on the device: the raw frames as they came (yuv420p planes from
the decoder, or (N, H, W, 3) BGR uint8) plus their (N, 3, H, W) float BGR view. The only host
round trip per batch is the detections (a few hundred bytes; their number per frame decides
what runs next). The generator gets the crops of all frames together, in chunks of
``gen_batch``, padded to few shapes so captured CUDA graphs replay (``batching``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...engines.base import Engine
from ...errors import EngineError, InputError
from ..host.embed import embedding_scales, l2norm
from ..host.swap import NeuralSwapper
from ..kernels import KernelSet
from ..types import Face, Identity
from . import require_torch
from .detect import GpuDetector
from .batching import StaticBatches
from .enhance import DeviceEnhancer
from .landmark import GpuLandmarker
from ..host.masks import AREAS, REGIONS, paste_box
from .masks import DeviceFaceParser, DeviceOccluder, area_masks, combine
from .masks import to_crop as to_crop_tensor
from .frames import (Device, bgr_to_yuv420, const, hwc_to_nchw, merge_yuv420,
                     nchw_to_hwc, to_device, yuv420_to_bgr)
from .paste import fit_on_host, paste_faces
from .timing import StageTimer
from .warp import crop_faces, explode_tiles, implode_tiles, similarity_batch, template_points


@dataclass
class DeviceBatch:
    raw: Any            # (N, H*3/2, W) yuv420p or (N, H, W, 3) bgr uint8; written at the end
    fmt: str            # "yuv420p" | "bgr"
    height: int
    width: int
    frames: Any = None  # (N, 3, H, W) float BGR in [0, 255]
    union: Any = None   # (N, 1, H, W) pasted weights, once something was pasted
    hit: tuple = ()     # frames something was pasted into (host ints: no sync to find them)


@dataclass
class DeviceSwapped:
    faces: Any          # (K, 3, S, S) generated faces, float BGR in [0, 255]
    matrices: Any       # (K, 2, 3) frame→crop
    index: list[int]    # frame of each face
    masks: Any = None   # (K, S, S) paste weights per face; None: the kernels' box mask
    boxes: Any = None   # (K, 4) host ints: paste.paste_boxes of the matrices




class DeviceKernels(KernelSet):
    """torch stages over the plan's engines (engines that take tensors; numpy-only engines'
    outputs are wrapped)."""

    name = "device"

    def __init__(self) -> None:
        super().__init__()
        self.embed_engine: Engine | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def open(self, plan: Any) -> None:
        torch = require_torch()
        self.torch = torch
        s = self.settings = plan.settings
        self.dev = Device(plan.device)
        self.compute = self.dev.stream()
        self.timer = StageTimer(self.dev, s.timing)
        try:
            with self.dev.use(self.compute):
                self._open_stages(plan)
        except BaseException:
            self.close()
            raise
        self.gen_calls = StaticBatches(self.neural.engine, s.gen_batch, self.dev.device)
        self.det_pad = bool(self.dev.cuda and self.detector.engine.config.options.get("cuda_graph"))
        self.det_batch = 0
        self._warm: set[tuple[int, int, int]] = set()
        self.frame_graph = bool(plan.frame_graph)
        self._frame_graphs: dict[tuple[str, int, int], Any] = {}

    def _open_stages(self, plan: Any) -> None:
        s, d = plan.settings, self.dev.device
        eng = {name: self._open(sp) for name, sp in plan.stages.items()}
        self.detector = GpuDetector(eng["detect"], self.dev, s.score_threshold,
                                    s.nms_threshold, s.det_size, s.detector_angles)
        self.landmarker = (GpuLandmarker(eng["landmark"], self.dev) if "landmark" in eng
                           else None)
        self.neural = NeuralSwapper(eng["swap"], converter=eng.get("convert"))
        self.embed_engine = eng["embed"]
        espec = self.embed_engine.spec
        self.embed_size = espec.preprocess.size[0] if espec.preprocess.size else 112
        self.tpl_embed = template_points(espec.template or "arcface_112", self.embed_size, d)
        # --pixel-boost: faces are cropped at the boost size and swapped through tiles
        self.boost = s.pixel_boost or self.neural.size
        self.tpl_swap = template_points(self.neural.template, self.boost, d)
        self.tpl_swap_host = template_points(self.neural.template, self.boost, "cpu")
        self.mask = self.torch.from_numpy(paste_box(s, self.boost)).to(d)  # the host's box
        batch = {st: sp.batch.opt for st, sp in plan.stages.items()}
        self.occluder = (DeviceOccluder(eng["occlude"], batch["occlude"], d)
                         if "occlude" in eng else None)
        self.parser = (DeviceFaceParser(eng["parse"], s.mask_regions or tuple(REGIONS),
                                        batch["parse"], d) if "parse" in eng else None)
        self.enhancer = (DeviceEnhancer(eng["enhance"], d, s.enhancer_blend, s.enhancer_weight,
                                        s.box_blur, max_batch=batch["enhance"])
                         if "enhance" in eng else None)

    def _extra_options(self, stage_plan: Any) -> dict[str, Any]:
        # ORT's kernels go on our compute stream
        return {"stream": self.compute.cuda_stream} if stage_plan.accepts_stream else {}

    @contextlib.contextmanager
    def session(self):
        """Work on the compute stream, after (and before) the caller's stream: a batch may have
        been written there and is read there after (GPU-side waits only)."""
        torch = self.torch
        if self.compute is None:
            with torch.inference_mode():
                yield
            return
        caller = torch.cuda.current_stream(self.dev.device)
        self.compute.wait_stream(caller)
        try:
            with self.dev.use(self.compute), torch.inference_mode():
                yield
        finally:
            caller.wait_stream(self.compute)

    # -- frames in and out --------------------------------------------------------------------
    def images(self, frames: Sequence[np.ndarray]) -> DeviceBatch:
        """BGR uint8 images of one size → a batch (a copy on the device even on CPU torch, so
        pasting in place never touches the caller's arrays)."""
        for f in frames:
            if not (isinstance(f, np.ndarray) and f.ndim == 3 and f.shape[2] == 3
                    and f.dtype == np.uint8):
                got = f"{f.dtype} {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
                raise InputError(f"image | got {got}; expected uint8 (H, W, 3) BGR")
        if len({f.shape for f in frames}) != 1:
            raise InputError("images | got several sizes in one batch; expected one size")
        raw = self.torch.from_numpy(np.stack(frames))
        raw = raw.to(self.dev.device) if self.dev.cuda else raw.clone()
        h, w = frames[0].shape[:2]
        return self.tensor_batch(raw, "bgr", h, w)

    def tensor_batch(self, raw: Any, fmt: str, height: int, width: int) -> DeviceBatch:
        b = DeviceBatch(raw, fmt, height, width)
        with self.timer.stage("convert_in"):
            b.frames = (yuv420_to_bgr(raw, height, width) if fmt == "yuv420p"
                        else hwc_to_nchw(raw))
        return b

    def frames(self, batch: DeviceBatch, originals: Sequence[np.ndarray] = ()) -> list[np.ndarray]:
        self.finish(batch)
        host = batch.raw.cpu().numpy()
        return [host[i] for i in range(host.shape[0])]

    def finish(self, batch: DeviceBatch) -> None:
        """Write the pasted frames back into ``raw`` (only the frames that changed; in yuv420p
        only the pixels under a pasted face keep new bytes)."""
        if batch.union is None:
            return
        with self.timer.stage("convert_out"):
            hit = to_device(list(batch.hit), self.dev.device)
            if batch.fmt == "yuv420p":
                block = batch.raw[hit]
                merge_yuv420(bgr_to_yuv420(batch.frames[hit]), block, batch.union[hit],
                             batch.height, batch.width)
                batch.raw[hit] = block
            else:
                batch.raw[hit] = nchw_to_hwc(batch.frames[hit])
        batch.union, batch.hit = None, ()

    @staticmethod
    def one(swapped: DeviceSwapped, i: int) -> DeviceSwapped:
        """Frame ``i``'s part of ``swap``'s result, as the result of a one-frame batch."""
        keep = [n for n, j in enumerate(swapped.index) if j == i]
        masks = None if swapped.masks is None else swapped.masks[keep]
        boxes = None if swapped.boxes is None else swapped.boxes[keep]
        return DeviceSwapped(swapped.faces[keep], swapped.matrices[keep], [0] * len(keep), masks,
                             boxes)

    def warmup(self, batch: int, height: int, width: int, latent: Any = None) -> None:
        """Run each static shape once before the loop's threads start: CUDA graphs are captured
        and cuDNN/ORT autotune here (a graph capture fails while another thread allocates or
        synchronises, and autotuning mid-video would stall the loop)."""
        key = (batch, height, width)
        if self.frame_graph and batch == 1 and latent is not None:
            self._graph_for("yuv420p", height, width, latent)  # the live path's format
            return
        if key in self._warm:
            return
        torch = self.torch
        with self.dev.use(self.compute), torch.inference_mode():
            self.det_batch = max(self.det_batch, batch)
            x, _ = self.detector.letterbox(
                torch.zeros((self.det_batch, 3, height, width), device=self.dev.device))
            self.detector.run_net(x)
            zeros = lambda k, s: torch.zeros((k, 3, s, s), device=self.dev.device)  # noqa: E731
            # every padded call size of each model: the CUDA graphs they replay
            if latent is not None:
                for k in self.gen_calls.sizes():
                    self._generate(zeros(k, self.neural.size), latent.expand(k, -1))
            if self.enhancer is not None:
                for k in self.enhancer.calls.sizes():
                    self.enhancer.enhance_crops(zeros(k, self.enhancer.size))
            if self.occluder is not None:  # inputs are resized: one crop size covers all
                for k in self.occluder.calls[0].sizes():  # every xseg model: the same batch
                    self.occluder.masks(zeros(k, self.boost))
            if self.parser is not None:
                for k in self.parser.calls.sizes():
                    self.parser.masks(zeros(k, self.boost))
        if self.dev.cuda:
            torch.cuda.synchronize(self.dev.device)
        self._warm.add(key)

    def _graph_for(self, fmt: str, height: int, width: int, latent: Any) -> Any:
        """The frame graph for one frame size and format, captured on first use; the source
        latent is copied into it when it changed."""
        from .frame_graph import FrameGraph
        key = (fmt, height, width)
        g = self._frame_graphs.get(key)
        if g is None:
            g = FrameGraph(self, fmt, height, width)
            g.set_latent(latent)
            with self.dev.use(self.compute), self.torch.inference_mode():
                g.capture()
            self._frame_graphs[key] = g
        g.set_latent(latent)  # a no-op unless the source changed
        return g

    def frame_graph_captured(self) -> bool | None:
        """Every frame graph used so far was captured (False: one runs eagerly after a failed
        capture; None: none was used)."""
        graphs = list(self._frame_graphs.values())
        return all(g.graph is not None for g in graphs) if graphs else None

    def process_graphed(self, raw: Any, fmt: str, height: int, width: int, latent: Any) -> int:
        """Swap the largest face of one device frame (1, …) in place with the frame graph
        (``FaceSwapper.process`` when the plan has one) → faces swapped (0 or 1)."""
        g = self._graph_for(fmt, height, width, latent)
        with self.timer.stage("frame_graph"):
            return g.run(raw)

    # -- stages -------------------------------------------------------------------------------
    def _prep(self, crops, spec):
        """(K, 3, s, s) BGR float crops → the model's input per its preprocess contract."""
        p = spec.preprocess
        x = crops.flip(1) if p.channel_order == "RGB" else crops
        mean, std = const(tuple(p.mean), x), const(tuple(p.std), x)
        return ((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).contiguous()

    def detect(self, batch: DeviceBatch, rows: Sequence[int]) -> list[list[Face]]:
        frames, t = batch.frames, self.timer
        n = frames.shape[0]
        sub = frames if len(rows) == n else frames[to_device(list(rows), self.dev.device)]
        with t.stage("detect_prep"):
            x, scale = self.detector.letterbox(sub)
        with t.stage("detect_net"):
            m = x.shape[0]
            if self.det_pad and m < self.det_batch:  # the captured graph's batch
                x = self.torch.cat([x, x.new_zeros((self.det_batch - m,) + tuple(x.shape[1:]))])
            loc, conf, lmk = (o[:m] for o in self.detector.run_net(x))
        with t.stage("detect_post"):
            dets = self.detector.postprocess(loc, conf, lmk, scale, *frames.shape[2:])
            faces = dets.faces(len(rows))
        if self.landmarker is None:
            return faces
        with t.stage("landmark"):  # 68 points; the 5 from them when confident
            return self.landmarker.refine(frames, rows, faces)

    def embed(self, batch: DeviceBatch, faces: list[list[Face]], rows: Sequence[int]
              ) -> list[list[Face]]:
        flat = [(r, f) for r, fl in zip(rows, faces) for f in fl]
        if not flat:
            return faces
        with self.timer.stage("embed"):
            lm = to_device(np.stack([f.landmarks for _, f in flat]), self.dev.device)
            crops = crop_faces(batch.frames, [r for r, _ in flat],
                               similarity_batch(lm, self.tpl_embed), self.embed_size)
            e = self.embed_engine
            out = e.run({e.inputs[0].name: self._prep(crops, e.spec)})[e.outputs[0].name]
            raw = np.asarray(self.torch.as_tensor(out).float().cpu().numpy()).reshape(len(flat), -1)
        it, scales = iter(l2norm(raw)), iter(embedding_scales(raw))
        return [[Face(f.box, f.score, f.landmarks, next(it), next(scales), f.landmarks68)
                 for f in fl]
                for fl in faces]

    def latent(self, embedding: np.ndarray | None, scale: float | None = None):
        if embedding is None:
            raise EngineError("device kernels | the source identity has no embedding")
        return self.torch.as_tensor(self.neural.latent(embedding, scale), device=self.dev.device)

    def _generate(self, crops, latents):
        n = self.neural
        y = self.gen_calls.run({"target": self._prep(crops, n.spec), "source": latents},
                               output=n.output_name)
        if n.output_range == "tanh":
            y = (y + 1.0) / 2.0
        y = (y.clamp(0.0, 1.0) * 255.0).round()
        return y.flip(1) if n.spec.preprocess.channel_order == "RGB" else y

    def swap(self, batch: DeviceBatch, faces: list[list[Face]],
             identities: list[list[Identity]]) -> DeviceSwapped:
        idx = [i for i, fl in enumerate(faces) for _ in fl]
        with self.timer.stage("align_crop"):
            mats, boxes = fit_on_host(np.stack([f.landmarks for fl in faces for f in fl]),
                                      self.tpl_swap_host, self.boost, batch.height, batch.width,
                                      self.dev.device)
            crops = crop_faces(batch.frames, idx, mats, self.boost)
            lats = [ident.latent for il in identities for ident in il]
            same = all(lat is lats[0] for lat in lats)
            latents = (lats[0].expand(len(lats), -1) if same else
                       self.torch.cat([lat.reshape(1, -1) for lat in lats]))
        total = self.boost // self.neural.size
        with self.timer.stage("generator"):
            if total > 1:  # every tile of every face in the generator's batches
                tiles = self._generate(implode_tiles(crops, total),
                                       latents.repeat_interleave(total * total, 0))
                out = explode_tiles(tiles, total)
            else:
                out = self._generate(crops, latents)
        masks = self._masks(crops, out, mats, [f for fl in faces for f in fl])
        return DeviceSwapped(out, mats, idx, masks, boxes)

    def _masks(self, targets, swapped, mats, faces: list[Face]):
        """Per-face paste masks (K, S, S) as FaceFusion's ``swap_face`` makes them (box and
        occlusion from the target crops, area and region from the swapped ones, their
        minimum), or None when the box alone is asked for."""
        s = self.settings
        if s.masks == ("box",):
            return None
        torch = self.torch
        with self.timer.stage("masks"):
            k, size = targets.shape[0], self.boost
            parts = []
            if "box" in s.masks:
                parts.append(self.mask.expand(k, size, size))
            if self.occluder is not None:
                parts.append(self.occluder.masks(targets))
            if "area" in s.masks:  # a face without 68 points (landmarker not confident): no limit
                have = [f.landmarks68 is not None for f in faces]
                lm = to_device(np.stack([f.landmarks68 if f.landmarks68 is not None
                                         else np.zeros((68, 2), np.float32) for f in faces]),
                               self.dev.device)
                m = area_masks(size, to_crop_tensor(lm, mats), s.mask_areas or tuple(AREAS))
                keep = to_device(have, self.dev.device).view(k, 1, 1)
                parts.append(torch.where(keep, m, torch.ones_like(m)))
            if self.parser is not None:
                parts.append(self.parser.masks(swapped))
            return combine(parts)

    def enhance(self, batch: DeviceBatch, faces: list[list[Face]]) -> None:
        """FaceFusion's face enhancer on every swapped face, in place, after the paste; all
        faces of the batch in the enhancer's batched calls."""
        idx = [i for i, fl in enumerate(faces) for _ in fl]
        if not idx:
            return
        with self.timer.stage("enhance"):
            lm = np.stack([f.landmarks for fl in faces for f in fl])  # host: see swap
            extra = self.occluder.masks if self.occluder is not None else None
            union = self.enhancer.enhance(batch.frames, lm, idx, extra_mask=extra)
        batch.union = union if batch.union is None else self.torch.maximum(batch.union, union)
        batch.hit = tuple(sorted(set(batch.hit) | set(idx)))

    def paste(self, batch: DeviceBatch, faces: list[list[Face]], swapped: DeviceSwapped) -> None:
        with self.timer.stage("paste"):
            union = paste_faces(batch.frames, swapped.faces, swapped.matrices, swapped.index,
                                self.mask if swapped.masks is None else swapped.masks,
                                color=self.settings.color_transfer, boxes=swapped.boxes)
        batch.union = union if batch.union is None else self.torch.maximum(batch.union, union)
        batch.hit = tuple(sorted(set(batch.hit) | set(swapped.index)))
