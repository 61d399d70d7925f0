"""Torch weights into a reference architecture: the module the torch engines run for a model
with a ``.pt`` file (synthetic weights, or a plain state dict such as insightface's).

Loading only; the weights themselves are made by ``fusionrt.builders.synth``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ModelError
from ..spec import ModelSpec
from ..zoo import get_spec
from . import ARCHS, build_arch, require_torch

# The checkpoint format ``fusionrt.builders.synth.synthesize`` writes: the state dict plus the
# architecture's width and options, so a load rebuilds exactly the module that was saved.
WEIGHTS_FORMAT = "fusionrt.synthetic/1"


def reference_spec(name: str) -> ModelSpec:
    """``name``'s spec, if it has a reference architecture and no built-in real weights."""
    spec = get_spec(name)
    if spec.builtin:
        raise ModelError(f"model '{name}' | ships real built-in weights; nothing to synthesize")
    if spec.arch not in ARCHS:
        raise ModelError(f"model '{name}' | no reference architecture '{spec.arch}'; expected "
                         f"one of: {', '.join(ARCHS)}")
    return spec


def load_reference(name: str, weights_path: Path | str | None = None, width: float = 1.0):
    """The torch module for ``name`` in eval mode, for the torch engines.

    ``weights_path`` defaults to the store's ``synthetic/<name>.pt``. A file written by
    ``synthesize`` carries its own width/seed/options (``width`` is then ignored); any other
    file is read as a plain state dict (e.g. insightface's ``backbone.pth``) at ``width``.
    """
    spec = reference_spec(name)
    torch = require_torch()
    if weights_path is None:
        from ..store import ModelStore
        weights_path = ModelStore().synthetic_path(name).with_suffix(".pt")
    path = Path(weights_path)
    if not path.is_file():
        raise ModelError(f"model '{name}' | torch weights not found: {path}; expected a .pt "
                         f"file (make one with: fusionrt models synth {name})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors come in many types
        raise ModelError(f"model '{name}' | cannot read torch weights {path}: {e}") from None
    options: dict[str, Any] = {}
    if isinstance(ckpt, dict) and ckpt.get("format") == WEIGHTS_FORMAT:
        if ckpt["arch"] != spec.arch:
            raise ModelError(f"model '{name}' | {path} holds architecture '{ckpt['arch']}'; "
                             f"expected '{spec.arch}'")
        width, options, state = ckpt["width"], ckpt.get("options", {}), ckpt["state_dict"]
    elif isinstance(ckpt, dict):
        state = ckpt
    else:
        raise ModelError(f"model '{name}' | {path} is not a state dict; expected a mapping of "
                         "parameter names to tensors")
    module = build_arch(spec.arch, width, **options)
    fits = f"{path} does not fit {spec.arch} at width {width:g}"
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when strict=False
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e))
        raise ModelError(f"model '{name}' | {fits}: {first}") from None
    missing = [k for k in missing if k != "emap"]  # real training checkpoints carry no emap
    if missing or unexpected:
        raise ModelError(f"model '{name}' | {fits}: missing {missing[:3]}"
                         f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                         f"{'...' if len(unexpected) > 3 else ''}")
    return module.eval()
