"""The torch engines' module, made: exact layer rewrites (``generator_rewrite``), the FP16
keep-list cast (``fp16.fp16_module``) and conv channel padding (``channel_pad``), in that order,
on the CPU. The engine places the result on its device and memory format and runs it.
"""

from __future__ import annotations

import logging

from ..engines.base import EngineConfig
from ..engines.torch_eager import BuiltModule, align_option, fp16_cast, load_torch_module
from ..errors import EngineError
from ..models.spec import Artifact

log = logging.getLogger(__name__)


def rewrite_parts(cls: type, artifact: Artifact, config: EngineConfig) -> tuple[str, ...]:
    """Exact layer rewrites to apply (``generator_rewrite``) for engine class ``cls``; option
    ``rewrite``: True/"all", a list or comma string of parts, "auto" (the class's measured
    choice, ``cls.auto_rewrite``) or off."""
    from .generator_rewrite import parse_parts
    option = config.options.get("rewrite", "auto")
    if option == "auto":
        return cls.auto_rewrite(artifact, config)
    try:
        return parse_parts(option)
    except ValueError as e:
        raise EngineError(f"engine '{cls.name}' | option rewrite: {e}") from None


def build_torch_module(cls: type, artifact: Artifact, config: EngineConfig) -> BuiltModule:
    """The artifact's module with what ``config`` asks for applied (product "torch-module")."""
    module = load_torch_module(artifact)
    parts = rewrite_parts(cls, artifact, config)
    rewritten: dict[str, int] = {}
    if parts:
        from .generator_rewrite import rewrite_generator
        rewritten = rewrite_generator(module, parts)
        log.info("%s | rewrite of '%s', layers changed per part: %s", cls.name,
                 artifact.spec.name, rewritten)
    if fp16_cast(config):
        from .fp16 import fp16_module
        module = fp16_module(module)
    if align_option(config):
        from .channel_pad import align_conv_channels
        module = align_conv_channels(module, align_option(config))
    return BuiltModule(module, rewritten)
