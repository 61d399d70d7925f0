"""ONNX Runtime engines: CPU, CUDA (IOBinding on device buffers) and the TensorRT execution provider.

One file because the three share the session set-up; each is registered under its own name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import EngineError
from .base import Engine

log = logging.getLogger(__name__)

_TORCH_DTYPES = {"float32": "float32", "float16": "float16", "int64": "int64", "uint8": "uint8"}


def _providers() -> list[str]:
    import onnxruntime as ort
    return ort.get_available_providers()


class OrtCpuEngine(Engine):
    """ONNX Runtime on the CPU: the default engine where there is no GPU."""

    name = "ort-cpu"
    devices = ("cpu",)

    def _session_options(self):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = self.config.options.get("threads")
        if threads:
            so.intra_op_num_threads = int(threads)
        so.log_severity_level = 3  # warnings from ORT's graph passes are not the user's business
        return so

    def _provider_list(self) -> list:
        return ["CPUExecutionProvider"]

    @property
    def max_batch(self) -> int | None:
        limits = [b for b in (super().max_batch, self._graph_batch()) if b]
        return min(limits) if limits else None

    def _graph_batch(self) -> int | None:
        session = getattr(self, "session", None)
        if session is None:
            return None
        dim = session.get_inputs()[0].shape[0]
        return dim if isinstance(dim, int) and dim > 0 else None

    def _load(self) -> None:
        import onnxruntime as ort
        path = self.artifact.onnx_path
        if path is None or not Path(path).is_file():
            raise EngineError(f"model '{self.spec.name}' | ONNX file not found: {path}")
        try:
            self.session = ort.InferenceSession(
                str(path), self._session_options(), providers=self._provider_list())
        except Exception as e:  # ORT raises its own exception types for corrupt graphs
            raise EngineError(f"model '{self.spec.name}' | ONNX Runtime cannot load {path}: {e}") \
                from None
        self._check_session_io()

    def _check_session_io(self) -> None:
        """The graph must match the declared contract: names and fixed dims."""
        got = {i.name: i.shape for i in self.session.get_inputs()}
        for t in self.inputs:
            if t.name not in got:
                raise EngineError(f"model '{self.spec.name}' | graph has inputs {sorted(got)}; "
                                  f"contract expects '{t.name}'")
            gshape = got[t.name]
            if len(gshape) != len(t.shape) or any(
                    isinstance(d, int) and isinstance(g, int) and d != g
                    for d, g in zip(t.shape, gshape)):
                raise EngineError(f"model '{self.spec.name}' | graph input '{t.name}' has shape "
                                  f"{gshape}; contract expects {t.shape_str()}")

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        names = [o.name for o in self.outputs]
        outs = self.session.run(names, {k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return dict(zip(names, outs))

    def _close(self) -> None:
        self.session = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False, "onnxruntime is not installed: pip install onnxruntime"
        return True, ""


class OrtCudaEngine(OrtCpuEngine):
    """ONNX Runtime CUDA EP. Feeds may be torch CUDA tensors: they are bound in place (IOBinding),
    outputs are torch CUDA tensors, so consecutive GPU stages never round-trip through the host.
    Numpy feeds get numpy outputs (one upload, one download)."""

    name = "ort-cuda"
    devices = ("cuda",)
    accepts_stream = True  # options["stream"]: ORT's kernels go on the caller's CUDA stream
    cuda_graphs = True  # options["cuda_graph"]: tensor feeds (IOBinding) only
    provider = "CUDAExecutionProvider"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            provs = _providers()
        except ImportError:
            return False, "onnxruntime is not installed: pip install onnxruntime-gpu"
        if cls.provider not in provs:
            return False, (f"{cls.provider} not in onnxruntime's providers {provs}: "
                           "pip uninstall onnxruntime && pip install onnxruntime-gpu")
        return True, ""

    def _device_id(self) -> int:
        dev = self.config.device
        return int(dev.split(":")[1]) if ":" in dev else 0

    def _cuda_options(self) -> dict:
        o = self.config.options
        opts = {
            "device_id": self._device_id(),
            # EXHAUSTIVE cuDNN search once at load: slower first run, fastest convs after.
            "cudnn_conv_algo_search": o.get("cudnn_conv_algo_search",
                                            os.environ.get("FUSIONRT_ORT_CONV_SEARCH",
                                                           "EXHAUSTIVE")),
            "cudnn_conv_use_max_workspace": "1",
            "do_copy_in_default_stream": "1",
        }
        if self._graph_wanted():
            opts["enable_cuda_graph"] = "1"
        if o.get("prefer_nhwc"):  # NHWC convolutions (tensor-core layout for FP16)
            opts["prefer_nhwc"] = "1"
        if "tf32" in o:  # ORT's own default is TF32 on
            opts["use_tf32"] = "1" if o["tf32"] else "0"
        if o.get("stream") is not None:  # share the caller's torch stream: no cross-stream syncs
            opts["user_compute_stream"] = str(o["stream"])
        return opts

    def _provider_list(self) -> list:
        return [(self.provider, self._cuda_options()), "CPUExecutionProvider"]

    def _graph_wanted(self) -> bool:
        return bool(self.config.options.get("cuda_graph")) and not getattr(
            self, "graph_refused", None)

    def _load(self) -> None:
        try:
            super()._load()
        except EngineError as e:
            if not self._graph_wanted():
                raise
            # ORT refuses a CUDA graph when any node is placed on the CPU: run without one
            self.graph_refused = str(e).splitlines()[0][-300:]
            log.warning("engine '%s' | model '%s': CUDA graph refused by ONNX Runtime, running "
                        "without one (%s)", self.name, self.spec.name, self.graph_refused)
            super()._load()
        used = self.session.get_providers()
        if self.provider not in used:
            raise EngineError(f"engine '{self.name}' | ONNX Runtime did not enable {self.provider} "
                              f"(session providers: {used})")

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        first = next(iter(feeds.values()))
        if isinstance(first, np.ndarray):
            if not self._graph_wanted():
                return super()._run(feeds)
            # a captured graph reads bound device buffers: numpy in, through them, numpy out
            import torch
            dev = f"cuda:{self._device_id()}"
            out = self._run_bound({k: torch.from_numpy(np.ascontiguousarray(v)).to(dev)
                                   for k, v in feeds.items()})
            return {k: v.cpu().numpy() for k, v in out.items()}
        return self._run_bound(feeds)

    def _run_bound(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """IOBinding on torch CUDA tensors: inputs and outputs stay in device memory.

        With ``cuda_graph`` ORT captures the first run of each input shape (its own
        ``gpu_graph_id``) and replays it on later runs, reading and writing the *same
        addresses*: so inputs are copied into persistent buffers bound once per shape, and
        outputs are cloned out of persistent buffers.
        """
        import torch
        graph = self._graph_wanted()
        key = tuple(tuple(feeds[t.name].shape) for t in self.inputs)
        bound = getattr(self, "_bound", {})
        if not graph or key not in bound:
            binding = self.session.io_binding()
            dev_id = self._device_id()
            batch = None
            ins = {}
            for t in self.inputs:
                x = feeds[t.name].contiguous()
                if graph:
                    x = x.clone()
                if batch is None and isinstance(t.shape[0], str):
                    batch = x.shape[0]
                binding.bind_input(t.name, "cuda", dev_id, np.dtype(t.dtype), tuple(x.shape),
                                   x.data_ptr())
                ins[t.name] = x
            outs = {}
            shapes = self._output_shapes(binding, key, batch or 1)
            for t in self.outputs:
                y = torch.empty(shapes[t.name], dtype=getattr(torch, t.dtype),
                                device=f"cuda:{dev_id}")
                binding.bind_output(t.name, "cuda", dev_id, np.dtype(t.dtype), tuple(y.shape),
                                    y.data_ptr())
                outs[t.name] = y
            run_options = None
            if graph:  # one captured graph per input shape, told apart by ORT's graph id
                import onnxruntime as ort
                run_options = ort.RunOptions()
                run_options.add_run_config_entry("gpu_graph_id", str(len(bound) + 1))
                bound[key] = (binding, ins, outs, run_options)
                self._bound = bound
        else:
            binding, ins, outs, run_options = bound[key]
            for name, buf in ins.items():
                buf.copy_(feeds[name])
        # ORT reads inputs on its own stream unless user_compute_stream is set: order it.
        if self.config.options.get("stream") is None:
            torch.cuda.current_stream().synchronize()
        self.session.run_with_iobinding(binding, run_options)
        if graph:
            return {k: v.clone() for k, v in outs.items()}
        return outs


    def _output_shapes(self, binding, key: tuple, batch: int) -> dict[str, tuple[int, ...]]:
        """Output shapes for these input shapes. Axis 0 is the batch; other symbolic axes
        (the detector's anchor count, which depends on H and W) are read once from a probe run
        with ORT-allocated outputs and cached per input-shape key."""
        cache = self.__dict__.setdefault("_shape_cache", {})
        if key not in cache:
            fixed = all(all(isinstance(d, int) for d in t.shape[1:]) for t in self.outputs)
            if fixed:
                cache[key] = {t.name: t.with_batch(batch) for t in self.outputs}
            else:
                for t in self.outputs:
                    binding.bind_output(t.name, "cuda", self._device_id())
                import torch
                torch.cuda.current_stream().synchronize()
                self.session.run_with_iobinding(binding)
                cache[key] = {t.name: tuple(v.shape()) for t, v in
                              zip(self.outputs, binding.get_outputs())}
        return cache[key]


class OrtTensorrtEngine(OrtCudaEngine):
    """ONNX Runtime's TensorRT EP with engine + timing cache in fusionrt's cache and explicit
    batch profiles. Falls back to the CUDA EP, with a warning, when TensorRT's libraries are
    missing (ORT lists the provider even then)."""

    name = "ort-trt"
    provider = "TensorrtExecutionProvider"
    fixed_batch_profile = True
    cuda_graphs = False  # the TensorRT EP has its own graph option; not wired here

    @classmethod
    def available(cls) -> tuple[bool, str]:
        ok, why = OrtCudaEngine.available()
        if not ok:
            return ok, why
        try:
            provs = _providers()
        except ImportError:
            return False, "onnxruntime is not installed"
        if cls.provider not in provs:
            return False, "onnxruntime build has no TensorRT EP: pip install onnxruntime-gpu"
        return True, ""

    def _trt_options(self) -> dict:
        from ..runtime.cache import cache_root
        o = self.config.options
        cache = Path(o.get("cache_dir") or cache_root() / "ort-trt")
        cache.mkdir(parents=True, exist_ok=True)
        p = self.config.batch
        dims = dict(o.get("dims") or {})  # other symbolic axes, e.g. the detector's H and W

        def dim(d, n: int, i: int, t) -> str:
            if i == 0 and isinstance(d, str):
                return str(n)
            if isinstance(d, str):
                if d not in dims:
                    raise EngineError(f"input '{t.name}' | axis {i} ('{d}') is dynamic; pass "
                                      f"options={{'dims': {{'{d}': N}}}} for the TensorRT profile")
                return str(dims[d])
            return str(d)

        shape = lambda n: ",".join(  # noqa: E731
            f"{t.name}:{'x'.join(dim(d, n, i, t) for i, d in enumerate(t.shape))}"
            for t in self.inputs)
        opts = {
            "device_id": self._device_id(),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache),
            "trt_builder_optimization_level": str(o.get("builder_optimization_level", 3)),
            "trt_max_workspace_size": str(int(o.get("workspace_gb", 4) * (1 << 30))),
            # FaceFusion sets no profile: every new batch size then rebuilds the engine.
            "trt_profile_min_shapes": shape(p.min),
            "trt_profile_opt_shapes": shape(p.opt),
            "trt_profile_max_shapes": shape(p.max),
        }
        # No trt_fp16_enable: precision lives in the graph (an fp16 artifact from
        # `fusionrt build --precision fp16`), as on the strongly typed native TensorRT path.
        return opts

    def _provider_list(self) -> list:
        return [(self.provider, self._trt_options()),
                (OrtCudaEngine.provider, self._cuda_options()), "CPUExecutionProvider"]

    def _load(self) -> None:
        OrtCpuEngine._load(self)
        used = self.session.get_providers()
        if self.provider not in used:
            log.warning("engine 'ort-trt' | TensorRT libraries not loadable (libnvinfer.so.10?); "
                        "falling back to the CUDA EP. Fix: pip install tensorrt-cu12 or tensorrt-cu13")
            self.fell_back = True
        else:
            self.fell_back = False


