"""Face enhancement on the device: ``host/enhance.py``'s FaceFusion face enhancer as batched
torch ops, for the faces of many frames at once.

Crops of every face of every frame go through the engine together (in chunks of
``max_batch``, padded to few shapes when the engine replays a CUDA graph: ``batching``), and
are pasted in place with ``paste.paste_faces``.

FaceFusion pastes with the box mask ``a`` (``paste_back``), then blends the pasted frame over
the frame (``blend_paste_frame``: ``addWeighted(frame, 1 - b, pasted, b)``): frame + (pasted -
frame) * b = frame + (face - frame) * a * b. So here one paste with the mask ``a * b`` gives
the same frame up to rounding (FaceFusion rounds twice, truncating the first time: <= 1 level).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ...engines.base import Engine
from ...errors import InputError
from ..host.enhance import check_unit, enhance_spec
from ..host.masks import box_mask
from . import require_torch
from .batching import StaticBatches
from .frames import const
from .paste import fit_on_host, paste_faces
from .warp import crop_faces, template_points

# crops (K, 3, S, S) float BGR in [0, 255] -> (K, S, S) weights in [0, 1] (tensors)
DeviceExtraMask = Callable[[Any], Any]


class DeviceEnhancer:
    """FaceFusion's face enhancer over torch tensors (CUDA or CPU torch).

    Args:
        engine: a loaded engine of a task ``"enhance"`` spec that takes tensors (torch,
            ort-cuda; ort-cpu takes CPU tensors).
        device: the torch device the frames live on.
        blend, weight, mask_blur: as ``host.enhance.FaceEnhancer``.
        max_batch: the most crops per engine call (capped by the graph's fixed batch).
    """

    def __init__(self, engine: Engine, device: Any = "cpu", blend: float = 0.8,
                 weight: float = 0.5, mask_blur: float = 0.3, max_batch: int = 8) -> None:
        torch = require_torch()
        self.torch = torch
        self.engine = engine
        self.spec = enhance_spec(engine)
        self.blend = check_unit("face enhancer blend", blend)
        self.weight = check_unit("face enhancer weight", weight)
        self.mask_blur = check_unit("face mask blur", mask_blur)
        if int(max_batch) < 1:
            raise InputError(f"max_batch {max_batch} | expected >= 1")
        self.device = torch.device(device)
        self.size = int(self.spec.preprocess.size[0])
        self.template = self.spec.template
        self.has_weight = any(t.name == "weight" for t in self.spec.inputs)
        self.output_name = self.spec.outputs[0].name
        self.calls = StaticBatches(engine, max_batch, self.device)
        self.tpl = template_points(self.template, self.size, "cpu")  # fitted on the host
        self.box = torch.from_numpy(box_mask(self.size, self.mask_blur)).to(self.device)
        self._weight = torch.tensor([self.weight], dtype=torch.float64, device=self.device)

    def enhance_crops(self, crops):
        """(K, 3, S, S) float BGR crops in [0, 255] → enhanced, the same layout, rounded as the
        host path's uint8 result."""
        p = self.spec.preprocess
        x = crops.flip(1) if p.channel_order == "RGB" else crops
        mean, std = const(tuple(p.mean), x), const(tuple(p.std), x)
        x = ((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).float()
        fixed = {"weight": self._weight} if self.has_weight else None
        y = self.calls.run({"input": x}, fixed, self.output_name)
        y = (y.clamp(-1.0, 1.0) + 1.0) / 2.0
        y = (y * 255.0).round()
        return y.flip(1) if p.channel_order == "RGB" else y

    def enhance(self, frames, landmarks, frame_idx: Sequence[int],
                extra_mask: DeviceExtraMask | None = None):
        """Enhance K faces of a batch of frames, in place.

        Args:
            frames: (N, 3, H, W) float BGR in [0, 255]; changed in place.
            landmarks: (K, 5, 2) frame pixels, host array (a device tensor is read back: the
                similarity fits and the paste windows are made on the host).
            frame_idx: frame of each face (host ints).
            extra_mask: crops (K, 3, S, S) → (K, S, S) weights, intersected with the box mask.

        Returns:
            (N, 1, H, W) union of the pasted weights (mask x blend; 0 where untouched).
        """
        torch = self.torch
        k = len(frame_idx)
        n, _, h, w = frames.shape
        if tuple(landmarks.shape) != (k, 5, 2):
            raise InputError(f"landmarks | got shape {tuple(landmarks.shape)}; expected "
                             f"({k}, 5, 2) for {k} faces")
        if any(not 0 <= int(i) < n for i in frame_idx):
            raise InputError(f"frame_idx | got {list(frame_idx)}; expected ints in [0, {n})")
        if k == 0:
            return frames.new_zeros((n, 1, h, w))
        lm = landmarks.detach().cpu() if hasattr(landmarks, "detach") else landmarks
        mats, boxes = fit_on_host(lm, self.tpl, self.size, h, w, self.device)
        crops = crop_faces(frames, list(frame_idx), mats, self.size)
        mask = self.box.expand(k, self.size, self.size)  # paste_faces: (K, S, S)
        if extra_mask is not None:
            extra = torch.as_tensor(extra_mask(crops)).to(self.device, frames.dtype)
            if tuple(extra.shape) != (k, self.size, self.size):
                raise InputError(f"extra mask | got shape {tuple(extra.shape)}; expected "
                                 f"({k}, {self.size}, {self.size})")
            mask = torch.minimum(mask, extra)
        mask = mask.clamp(0.0, 1.0) * self.blend  # paste-then-addWeighted in one paste
        return paste_faces(frames, self.enhance_crops(crops), mats, list(frame_idx), mask,
                           boxes=boxes)
