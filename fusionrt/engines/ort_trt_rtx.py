"""ONNX Runtime with NVIDIA's TensorRT-RTX plugin execution provider (``ort-trt-rtx``).

The plugin is its own package (``pip install 'fusionrt[ort-trt-rtx]'``:
``onnxruntime-ep-nv-tensorrt-rtx-cu13``, ~146 MB, ONNX Runtime >= 1.24). It is not built into
ONNX Runtime: its library is registered once per process
(``ort.register_execution_provider_library(name, path)``), its devices are listed by
``ort.get_ep_devices()`` and a session asks for them with
``SessionOptions.add_provider_for_devices(devices, options)``. Feeds on torch CUDA buffers go
through IOBinding exactly as on ``ort-cuda`` (inherited).

No silent fallback: where the plugin is missing, cannot be registered (on a machine without an
NVIDIA driver its library cannot find ``libcuda.so.1``), offers no device, or the GPU is not one
TensorRT-RTX runs on (Hopper, CC 9.0), the engine is unavailable with that reason, and a session
that did not enable the plugin is an error — never CPU or CUDA-EP figures under this name.

Not run here: registration and the reasons are tested on a CPU-only machine; a session needs an
RTX GPU, which no machine of this project has.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import EngineError
from .onnxruntime import OrtCudaEngine
from .tensorrt_rtx import gpu_reason

log = logging.getLogger(__name__)

EP_NAME = "NvTensorRTRTXExecutionProvider"
PLUGIN_MODULE = "onnxruntime_ep_nv_tensorrt_rtx"
INSTALL_HINT = ("pip install 'fusionrt[ort-trt-rtx]' (onnxruntime-ep-nv-tensorrt-rtx-cu13, "
                "with onnxruntime >= 1.24)")
MIN_ORT = (1, 24)

# One registration per process: ONNX Runtime refuses a second one of the same name.
_REGISTERED: dict[str, tuple[bool, str]] = {}


def _version(text: str) -> tuple[int, ...]:
    out = []
    for p in str(text).split(".")[:2]:
        digits = "".join(c for c in p if c.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def register_plugin(ort: Any = None, plugin: Any = None) -> tuple[bool, str]:
    """Register the plugin's library with ONNX Runtime (once per process): (ok, reason)."""
    if EP_NAME in _REGISTERED:
        return _REGISTERED[EP_NAME]
    if ort is None:
        import onnxruntime as ort
    if plugin is None:
        import importlib
        plugin = importlib.import_module(PLUGIN_MODULE)
    try:
        name, path = plugin.get_ep_name(), plugin.get_library_path()
    except Exception as e:  # FileNotFoundError for a broken install
        return False, f"{EP_NAME} plugin | incomplete install ({e}); expected: {INSTALL_HINT}"
    try:
        ort.register_execution_provider_library(name, path)
        result = (True, "")
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "already" in msg.lower():  # registered by other code in this process
            result = (True, "")
        else:
            if "libcuda" in msg:  # the plugin links the driver's library
                msg = "libcuda.so.1 not found (no NVIDIA driver on this machine)"
            result = (False, f"{EP_NAME} plugin | cannot be registered: {msg[-300:]}; "
                             "expected an NVIDIA driver and an RTX GPU")
    _REGISTERED[EP_NAME] = result
    return result


def ep_devices(ort: Any) -> list:
    """The ``OrtEpDevice``s the plugin offers, in device order."""
    return [d for d in ort.get_ep_devices() if getattr(d, "ep_name", None) == EP_NAME]


class OrtTrtRtxEngine(OrtCudaEngine):
    """ONNX Runtime + the NV TensorRT-RTX plugin EP; one batch profile; IOBinding on torch buffers.

    Options: ``dims`` (non-batch dynamic axes, e.g. the detector's H and W), ``cuda_graph``,
    ``stream``, ``workspace_gb``, ``cache_dir`` (its runtime cache goes under
    ``<cache>/ort-trt-rtx``).
    """

    name = "ort-trt-rtx"
    provider = EP_NAME
    fixed_batch_profile = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, f"onnxruntime is not installed: {INSTALL_HINT}"
        if _version(ort.__version__) < MIN_ORT:
            return False, (f"onnxruntime {ort.__version__} | too old for plugin execution "
                           f"providers; expected >= {'.'.join(map(str, MIN_ORT))}: {INSTALL_HINT}")
        try:
            __import__(PLUGIN_MODULE)
        except ImportError:
            return False, f"{PLUGIN_MODULE} not installed: {INSTALL_HINT}"
        except Exception as e:
            return False, f"{PLUGIN_MODULE} cannot be imported ({e}): reinstall with {INSTALL_HINT}"
        ok, why = register_plugin(ort)
        if not ok:
            return False, why
        if not ep_devices(ort):
            return False, (f"{EP_NAME} | registered but offers no device; expected an NVIDIA RTX "
                           "GPU with a current driver")
        why = gpu_reason(0)
        return (False, why) if why else (True, "")

    def _ep_options(self) -> dict[str, str]:
        from ..runtime.cache import cache_root
        o = self.config.options
        cache = Path(o.get("cache_dir") or cache_root()) / self.name
        cache.mkdir(parents=True, exist_ok=True)
        p = self.config.batch
        opts = {
            "nv_profile_min_shapes": self._shapes(p.min),
            "nv_profile_opt_shapes": self._shapes(p.opt),
            "nv_profile_max_shapes": self._shapes(p.max),
            # JIT-compiled kernels kept across process starts (TensorRT-RTX's runtime cache).
            "nv_runtime_cache_path": str(cache),
            "nv_max_workspace_size": str(int(float(o.get("workspace_gb", 4)) * (1 << 30))),
        }
        if o.get("cuda_graph"):
            opts["enable_cuda_graph"] = "1"
        if o.get("stream") is not None:  # the caller's torch stream: no cross-stream syncs
            opts["has_user_compute_stream"] = "1"
            opts["user_compute_stream"] = str(o["stream"])
        return opts

    def _shapes(self, n: int) -> str:
        """``target:1x3x128x128,source:1x512``; non-batch dynamic axes from ``options["dims"]``."""
        dims = dict(self.config.options.get("dims") or {})
        parts = []
        for t in self.inputs:
            axes = []
            for i, d in enumerate(t.shape):
                if isinstance(d, str) and i == 0:
                    axes.append(str(n))
                elif isinstance(d, str):
                    if d not in dims:
                        raise EngineError(f"input '{t.name}' | axis {i} ('{d}') is dynamic; pass "
                                          f"options={{'dims': {{'{d}': N}}}} for the profile")
                    axes.append(str(dims[d]))
                else:
                    axes.append(str(d))
            parts.append(f"{t.name}:{'x'.join(axes)}")
        return ",".join(parts)

    def _load(self) -> None:
        import onnxruntime as ort
        path = self.artifact.onnx_path
        if path is None or not Path(path).is_file():
            raise EngineError(f"model '{self.spec.name}' | ONNX file not found: {path}")
        devices = ep_devices(ort)
        idx = self._device_id()
        if idx >= len(devices):
            raise EngineError(f"engine '{self.name}' | got device {self.config.device}; the "
                              f"plugin offers {len(devices)} device(s)")
        so = self._session_options()
        so.add_provider_for_devices([devices[idx]], self._ep_options())
        try:
            self.session = ort.InferenceSession(str(path), so)
        except Exception as e:
            raise EngineError(f"model '{self.spec.name}' | ONNX Runtime cannot load {path} on "
                              f"{EP_NAME}: {e}") from None
        used = self.session.get_providers()
        if self.provider not in used:  # never report another provider's figures as this one
            raise EngineError(f"engine '{self.name}' | ONNX Runtime did not enable {EP_NAME} "
                              f"(session providers: {used})")
        self._check_session_io()
