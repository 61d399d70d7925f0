"""The device kernel set: every stage as batched torch tensor ops, frames uploaded once and
downloaded once (the GPU path). ``FaceSwapper`` drives it like the host kernel set.

Modules: ``kernels`` (the kernel set: detect, embed, align/crop, generate, paste on one compute
stream), ``frames`` (host<->device transfers, colour conversion), ``detect`` (letterbox, prior
decoding, NMS), ``warp`` (batched similarity fits and crops), ``paste`` (inverse warp, feathered
blend, colour transfer), ``stage`` (the video loop's frame stage: pinned uploads, GPU-side
waits), ``timing`` (CUDA-event stage times, queue waits). Everything also runs on CPU torch,
which is how it is tested without a GPU.
"""

from __future__ import annotations

from ...errors import EngineError


def require_torch():
    """Import torch or say how to get it."""
    try:
        import torch
    except ImportError:
        raise EngineError("the GPU video path needs PyTorch: pip install 'fusionrt[torch]'") \
            from None
    return torch
