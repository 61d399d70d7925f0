"""Open an engine: build what its class needs for the config, then load it.

Engines only load (``fusionrt.engines``); builders make. An engine class says which product it
needs for an artifact and config (``Engine.needs`` → a kind such as ``"trt-plan"``); the kind
names a builder here and the constructor keyword the product goes in as. So every caller that
wants a working engine — pipeline, bench, gate, front ends — calls ``open_engine``, and no code
outside ``engines/`` asks which engine it is.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from ..engines.base import Engine, EngineConfig
from ..engines.registry import get_engine
from ..errors import EngineError
from ..models.spec import Artifact

# product kind -> (constructor keyword, "module:function(cls, artifact, config) -> product");
# modules are imported on first use only (torch and tensorrt stay optional).
BUILDERS: dict[str, tuple[str, str]] = {
    "torch-module": ("module", "fusionrt.builders.torch_module:build_torch_module"),
    "aot-package": ("package", "fusionrt.builders.aot:build_aot_package"),
    "trt-plan": ("plan", "fusionrt.builders.trt_plan:build_trt_plan"),
    "trt-rtx-plan": ("plan", "fusionrt.builders.trt_rtx:build_trt_rtx_plan"),
}


def register_builder(kind: str, keyword: str, target: str) -> None:
    """Add or replace the builder of a product kind ("module:function"), e.g. from a plugin."""
    BUILDERS[kind] = (keyword, target)


def builder_for(kind: str) -> tuple[str, Callable[..., Any]]:
    """(constructor keyword, builder function) of ``kind``; an unknown kind lists the known."""
    try:
        keyword, target = BUILDERS[kind]
    except KeyError:
        raise EngineError(f"product '{kind}' | no builder makes it; expected one of: "
                          f"{', '.join(BUILDERS)}") from None
    module, fn = target.split(":")
    return keyword, getattr(importlib.import_module(module), fn)


def open_engine(name: str | type[Engine], artifact: Artifact,
                config: EngineConfig | None = None) -> Engine:
    """A loaded engine for ``artifact``: ``name`` is a registered engine name (or an engine
    class, e.g. a test's stand-in); its product, if it needs one, is built first.

    Raises:
        EngineError: unknown engine, not usable here, or the build/load failed (the reason).
    """
    cls = get_engine(name) if isinstance(name, str) else name
    config = config or EngineConfig()
    ok, why = cls.available()
    if not ok:
        raise EngineError(f"engine '{cls.name}' | not usable here: {why}")
    product: dict[str, Any] = {}
    kind = cls.needs(artifact, config)
    if kind is not None:
        keyword, build = builder_for(kind)
        product[keyword] = build(cls, artifact, config)
    return cls(artifact, config, **product).load()
