"""The GPU-resident video path: frames go up once, detection, alignment, generation and paste-back
run as batched tensor ops, frames come down once; decode, GPU work and encode overlap.

Modules: ``frames`` (host<->device transfers, colour conversion), ``detect_gpu`` (letterbox,
prior decoding, NMS), ``warp_gpu`` (batched similarity fits and crops), ``paste_gpu`` (inverse
warp, feathered blend, colour transfer), ``swapper`` (one batch of frames through every stage),
``runner`` / ``encode`` (the overlapped decode -> GPU -> encode loop) and ``cli`` (the
``fusionrt swap --device cuda`` entry point). Everything also runs on CPU torch, which is how it
is tested without a GPU.
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
