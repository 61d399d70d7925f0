"""PyTorch eager engine (CPU or CUDA): FP32 with TF32 off/on, FP16/BF16 autocast, channels_last,
and optional CUDA-graph replay for static shapes.

The module comes from the reference architecture when the artifact carries torch weights
(synthetic models), else from the ONNX file: into a native module where one exists (the real
detector, SimSwap-256), through onnx2torch otherwise or when the native loader refuses the file,
so every stage runs here. A module a builder changed (exact layer rewrites, the FP16 keep-list
cast, channel padding: ``fusionrt.builders.torch_module``) comes in as ``module=``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import EngineError, ModelError
from ..models.spec import Artifact
from .base import Engine, EngineConfig

log = logging.getLogger(__name__)

_INSTALL = "pip install 'fusionrt[torch]'  (CPU: pip install torch==2.13.0)"

# ONNX-only archs with a native torch re-implementation: arch -> "module:loader(onnx_path)".
# Native modules need no onnx2torch/torchvision and trace cleanly (CUDA graphs, torch.compile).
NATIVE_FROM_ONNX: dict[str, str] = {
    "retinaface_mnet025": "fusionrt.models.arch.retinaface:retinaface_from_onnx",
    "simswap256": "fusionrt.models.arch.simswap:simswap_from_onnx",
}


# Values of option ``rewrite`` that ask for no layer rewrite (the others are parsed by the builder).
REWRITE_OFF = (None, False, "", 0, "none")


@dataclass(frozen=True)
class BuiltModule:
    """A torch module made for the torch engines by a builder (still on the CPU), with the
    number of layers each rewrite part changed (``{}``: none)."""

    module: Any
    rewritten: Mapping[str, int] = field(default_factory=dict)


def import_torch():
    try:
        import torch
    except ImportError:
        raise EngineError(f"the torch engines need PyTorch: {_INSTALL}") from None
    return torch


def load_torch_module(artifact: Artifact):
    """The artifact as an ``nn.Module`` in eval mode (FP32, CPU)."""
    if artifact.weights_path is not None:
        from ..models.arch.reference import load_reference
        return load_reference(artifact.spec.name, artifact.weights_path).eval()
    if artifact.onnx_path is None:
        raise EngineError(f"model '{artifact.spec.name}' | no ONNX file or torch weights to load")
    native = NATIVE_FROM_ONNX.get(artifact.spec.arch)
    if native is not None:
        module, loader = native.split(":")
        try:
            return getattr(importlib.import_module(module), loader)(artifact.onnx_path).eval()
        except ModelError as e:  # another export of the same contract: the generic path
            log.warning("model '%s' | native torch module refused (%s); converting the ONNX "
                        "with onnx2torch instead", artifact.spec.name, e)
    try:
        import onnx
        import onnxslim
        from onnx2torch import convert
    except ImportError as e:
        raise EngineError(f"model '{artifact.spec.name}' | the torch engines run ONNX-only models "
                          f"through onnx2torch ({e.name} missing): pip install 'fusionrt[onnx2torch]'"
                          " (needs a torchvision matching torch)") from None
    # onnxslim first: it folds the Identity-fed weights that onnx2torch cannot resolve.
    model = onnxslim.slim(onnx.load(str(artifact.onnx_path)))
    _patch_onnx2torch_reshape()
    return convert(model).eval()


def fp16_cast(config: EngineConfig) -> bool:
    """Precision fp16 without ``autocast``: the module is cast once with the FP32 keep-list."""
    return config.precision == "fp16" and not config.options.get("autocast")


def align_option(config: EngineConfig) -> int:
    """Option ``align_channels`` as an int (0 = off)."""
    return int(config.options.get("align_channels") or 0)


def _patch_onnx2torch_reshape() -> None:
    """onnx2torch's Reshape builds ``torch.Size(shape_tensor)``, which TorchDynamo cannot trace
    (InternalTorchDynamoError on the RetinaFace heads); reading the shape as Python ints works
    in eager and compiles with one graph break."""
    import torch
    from onnx2torch.node_converters.reshape import OnnxReshape

    def _do_reshape(input_tensor, shape):
        dims = [int(d) for d in shape.tolist()]
        dims = [input_tensor.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return torch.reshape(input_tensor, dims)

    OnnxReshape._do_reshape = staticmethod(_do_reshape)


class TorchEngine(Engine):
    """Eager PyTorch. Options: ``tf32`` (bool), ``channels_last`` (bool), ``cuda_graph`` (bool),
    ``autocast`` (bool), ``align_channels`` (int: zero-pad conv channels to this multiple;
    0 = off, the default), ``rewrite`` (exact layer rewrites, ``builders.generator_rewrite``).
    Precision ``fp16`` casts the module once with the FP32 keep-list
    (``fusionrt.builders.fp16.fp16_module``), or runs under autocast with ``autocast=True``;
    ``bf16`` runs under autocast. The keep-list cast, channel padding and rewrites are made by
    ``fusionrt.builders`` (``needs`` says so; ``open_engine`` builds them) and come in as
    ``module=``; without one the engine loads and runs the artifact's plain module."""

    name = "torch"
    devices = ("cpu", "cuda")
    precisions = ("fp32", "fp16", "bf16")
    cuda_graphs = True
    capturable = True  # eager modules on the current stream (with cuda_graph off)
    channels_last = True
    tf32 = True

    def __init__(self, artifact: Artifact, config: EngineConfig | None = None, *,
                 module: Any = None):
        super().__init__(artifact, config)
        if module is not None and not isinstance(module, BuiltModule):
            module = BuiltModule(module)  # a ready module, used as it is
        self._product: BuiltModule | None = module
        self.rewritten: dict[str, int] = {}

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import torch  # noqa: F401
        except ImportError:
            return False, f"torch not installed: {_INSTALL}"
        return True, ""

    @classmethod
    def can_load(cls, artifact: Artifact) -> tuple[bool, str]:
        """Torch weights, an ONNX file of an arch with a native loader, or onnx2torch."""
        ok, why = cls.available()
        if not ok:
            return ok, why
        if artifact.weights_path is not None:
            return True, ""
        if artifact.onnx_path is None:
            return False, f"model '{artifact.spec.name}' | no ONNX file or torch weights to load"
        if artifact.spec.arch in NATIVE_FROM_ONNX:
            return True, ""
        try:
            import onnx2torch  # noqa: F401
        except Exception as e:  # ImportError, or a torchvision that does not match torch
            return False, (f"model '{artifact.spec.name}' | ONNX-only: the torch engines need "
                           f"onnx2torch ({type(e).__name__}: {e}): pip install "
                           "'fusionrt[onnx2torch]' (needs a torchvision matching torch)")
        return True, ""

    # -- what a builder makes ----------------------------------------------------
    @classmethod
    def needs(cls, artifact: Artifact, config: EngineConfig) -> str | None:
        """``"torch-module"`` when the config changes the module (FP16 keep-list cast, channel
        padding, layer rewrites, ``rewrite="auto"`` included where it picks any)."""
        o = config.options
        rewrite = o.get("rewrite", "auto")
        if (fp16_cast(config) or align_option(config)
                or (rewrite not in REWRITE_OFF and rewrite != "auto")
                or (rewrite == "auto" and cls.auto_rewrite(artifact, config))):
            return "torch-module"
        return None

    @classmethod
    def auto_rewrite(cls, artifact: Artifact, config: EngineConfig) -> tuple[str, ...]:
        """The rewrite parts option ``rewrite="auto"`` stands for. None in eager mode: the head's
        shifted sum is 49 kernels without a compiler to fuse them, and the rest were measured
        only compiled."""
        return ()

    # -- set-up ---------------------------------------------------------------
    def _load(self) -> None:
        self.setup()
        self.module = self._wrap(self.place(self._module()))
        self._graphs: dict[tuple, tuple] = {}

    def setup(self) -> None:
        """Device, backend flags and the precision/layout settings ``_run`` reads."""
        torch = import_torch()
        self.torch = torch
        self.device = torch.device(self.config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError(f"engine '{self.name}' | device {self.config.device} asked for, "
                              "but torch sees no CUDA GPU")
        if self.device.type == "cuda":
            tf32 = bool(self.config.options.get("tf32", False))
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True  # static shapes: pick the fastest conv once
        # FP16: weights cast once with the keep-list (norms, AdaIN statistics, output head) in
        # FP32 — fusionrt.builders.keeplist; option autocast=True uses torch.autocast instead.
        self._half = fp16_cast(self.config)
        self.memory_format = (torch.channels_last if self.config.options.get("channels_last")
                              else torch.preserve_format)

    def _module(self):
        """The module to run (CPU): the builder's product, else the artifact's plain module."""
        if self._product is not None:
            self.rewritten = dict(self._product.rewritten)
            return self._product.module
        if self._half:
            raise self._needs_builder("the FP16 keep-list cast (precision fp16; option "
                                      "autocast=True runs under autocast instead)")
        if self.align_channels():
            raise self._needs_builder(f"channel padding (option align_channels="
                                      f"{self.align_channels()})")
        rewrite = self.rewrite_option()
        if rewrite not in REWRITE_OFF and rewrite != "auto":
            raise self._needs_builder(f"a layer rewrite (option rewrite={rewrite!r})")
        if rewrite == "auto" and self.auto_rewrite(self.artifact, self.config):
            log.info("%s | rewrite 'auto' for '%s' is applied by open_engine; running the plain "
                     "module", self.name, self.spec.name)
        self.rewritten = {}
        return load_torch_module(self.artifact)

    def place(self, module):
        """``module`` on the engine's device, in its memory format (after ``setup``)."""
        module = module.to(self.device)
        if self.memory_format == self.torch.channels_last:
            module = module.to(memory_format=self.torch.channels_last)
        return module

    def _wrap(self, module):
        """Hook for torch-compile."""
        return module

    def rewrite_option(self):
        """The ``rewrite`` option as given (default "auto")."""
        return self.config.options.get("rewrite", "auto")

    def align_channels(self) -> int:
        """Conv channel multiple to zero-pad to (``builders.channel_pad``); option
        ``align_channels``, default 0 (off: on the H100 it bought nothing, see that module)."""
        return align_option(self.config)

    def _autocast(self):
        torch = self.torch
        prec = self.config.precision
        if getattr(self, "_half", False):
            return torch.autocast(self.device.type, enabled=False)
        if prec in ("fp16", "bf16"):
            dtype = torch.float16 if prec == "fp16" else torch.bfloat16
            return torch.autocast(self.device.type, dtype=dtype)
        if prec != "fp32":
            raise EngineError(f"engine '{self.name}' | precision '{prec}' not supported; "
                              "expected fp32, fp16 or bf16")
        return torch.autocast(self.device.type, enabled=False)

    # -- run ----------------------------------------------------------------------
    def to_tensor(self, a: Any):
        torch = self.torch
        t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
        t = t.to(self.device, non_blocking=True)
        if t.ndim == 4:
            t = t.contiguous(memory_format=self.memory_format)
        return t

    def _forward(self, tensors: list):
        with self.torch.inference_mode(), self._autocast():
            out = self.module(*tensors)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float() for o in outs]

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        numpy_in = isinstance(next(iter(feeds.values())), np.ndarray)
        tensors = [self.to_tensor(feeds[t.name]) for t in self.inputs]
        if self.config.options.get("cuda_graph") and self.device.type == "cuda":
            outs = self._replay(tensors)
        else:
            outs = self._forward(tensors)
        if len(outs) != len(self.outputs):
            raise EngineError(f"model '{self.spec.name}' | module returned {len(outs)} outputs; "
                              f"contract declares {len(self.outputs)}")
        if numpy_in:
            outs = [o.cpu().numpy() for o in outs]
        return {t.name: o for t, o in zip(self.outputs, outs)}

    def _replay(self, tensors: list):
        """One captured CUDA graph per input-shape set: replay skips every kernel launch's
        Python and dispatcher overhead (the bulk of bs1 latency for small generators)."""
        torch = self.torch
        key = tuple(tuple(t.shape) for t in tensors)
        if key not in self._graphs:
            static_in = [t.clone() for t in tensors]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm up: cuDNN autotuning and lazy init stay out of the graph
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        for s, t in zip(static_in, tensors):
            s.copy_(t, non_blocking=True)
        graph.replay()
        return [o.clone() for o in static_out]

    def _close(self) -> None:
        self.module = None
        self._graphs = {}
