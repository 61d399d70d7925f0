"""What a result file must name: the machine, the library versions, the date and the command;
and the GPU memory probes (NVML for every allocator, torch's allocator for its own share)."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import shlex
import subprocess
import sys
from typing import Any

log = logging.getLogger(__name__)

MB = 1024.0 * 1024.0


def library_version(module: str) -> str | None:
    """``module.__version__`` (``"fusionrt"`` included), or ``None`` where the module is absent or
    broken: either way it is not part of this run. The one version lookup of fusionrt: doctor,
    bench result files and engine-cache fingerprints all read versions through it."""
    try:
        return str(__import__(module).__version__)
    except Exception:
        return None


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else whatever ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def x86_without_vnni() -> bool:
    """True on an x86-64 CPU known to lack VNNI (AVX512-VNNI / AVX-VNNI / AMX): there ONNX
    Runtime's 8-bit GEMMs use VPMADDUBSW, whose 16-bit sums can saturate (ORT's quantization
    docs; it is why an INT8 graph must use 7-bit weights, ``reduce_range``, on such CPUs)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    flags = cpu_flags()
    return bool(flags) and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


def command_line(argv: list[str] | None = None) -> str:
    """The exact command, with ``python -m fusionrt.cli`` spelled as typed."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].replace("\\", "/").endswith("fusionrt/cli/__main__.py"):
        argv = [os.path.basename(sys.executable), "-m", "fusionrt.cli"] + argv[1:]
    elif argv and argv[0].endswith("__main__.py"):
        argv = [os.path.basename(sys.executable), "-m", "fusionrt"] + argv[1:]
    return shlex.join(argv)


def _nvml_info(index: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        import pynvml  # nvidia-ml-py
        pynvml.nvmlInit()
    except Exception as e:
        log.debug("NVML unavailable: %s", e)
        return out
    try:
        dec = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
        out["gpu_driver"] = dec(pynvml.nvmlSystemGetDriverVersion())
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        out["gpu_name"] = dec(pynvml.nvmlDeviceGetName(h))
        out["gpu_memory_total_mb"] = round(pynvml.nvmlDeviceGetMemoryInfo(h).total / MB)
    except Exception as e:
        log.debug("NVML query failed: %s", e)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return out


def _smi_driver() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: str = "cpu", command: str | None = None) -> dict[str, Any]:
    """The ``machine`` block of a result file. Never raises; unknown fields are ``None``."""
    info: dict[str, Any] = {
        "gpu_name": None, "gpu_driver": None, "gpu_memory_total_mb": None,
        "compute_capability": None, "cuda": None, "cudnn": None,
        "torch": library_version("torch"), "onnxruntime": library_version("onnxruntime"),
        "onnxruntime_providers": None, "tensorrt": library_version("tensorrt"),
        "fusionrt": library_version("fusionrt"),
        "numpy": library_version("numpy"), "python": platform.python_version(),
        "platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "device": device,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or command_line(),
    }
    try:
        import onnxruntime as ort
        info["onnxruntime_providers"] = list(ort.get_available_providers())
    except Exception:
        pass
    index = torch_device_index(device)
    try:
        import torch
        info["cuda"] = torch.version.cuda
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info["cudnn"] = str(cudnn) if cudnn else None
        if torch.cuda.is_available():
            info["gpu_name"] = torch.cuda.get_device_name(index)
            info["compute_capability"] = "%d.%d" % torch.cuda.get_device_capability(index)
    except Exception as e:
        log.debug("torch query failed: %s", e)
    if device.startswith("cuda"):
        for k, v in _nvml_info(index).items():
            info[k] = info[k] or v
        info["gpu_driver"] = info["gpu_driver"] or _smi_driver()
    return info


def torch_device_index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


class MemoryProbe:
    """GPU memory around one engine: NVML used-memory delta from a baseline (sees ONNX Runtime's
    and TensorRT's allocations too) and torch's ``max_memory_allocated`` (its allocator only).
    On the CPU, or without NVML, the missing figures are ``None``."""

    def __init__(self, device: str):
        self.device = device
        self.cuda = device.startswith("cuda")
        self.index = torch_device_index(device)
        self._nvml = None
        self._base: float | None = None
        if self.cuda:
            try:
                import pynvml
                pynvml.nvmlInit()
                self._nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(self.index))
            except Exception as e:
                log.info("NVML not usable (%s): GPU memory from torch's allocator only; "
                         "pip install nvidia-ml-py for the whole-device figure", e)

    def nvml_used_mb(self) -> float | None:
        if self._nvml is None:
            return None
        pynvml, h = self._nvml
        try:
            return pynvml.nvmlDeviceGetMemoryInfo(h).used / MB
        except Exception:
            return None

    def release(self) -> None:
        """Give cached blocks back so the next baseline starts clean."""
        import gc
        gc.collect()
        if self.cuda:
            import torch
            torch.cuda.synchronize(self.index)
            torch.cuda.empty_cache()

    def baseline(self) -> None:
        """Call before an engine loads."""
        self.release()
        self._base = self.nvml_used_mb()

    def reset_peak(self) -> None:
        if self.cuda:
            import torch
            torch.cuda.reset_peak_memory_stats(self.index)

    def sample(self) -> dict[str, float | None]:
        """Current NVML delta and torch peak since ``reset_peak`` (MB)."""
        used = self.nvml_used_mb()
        delta = None if used is None or self._base is None else used - self._base
        torch_peak = None
        if self.cuda:
            import torch
            torch_peak = torch.cuda.max_memory_allocated(self.index) / MB
        return {"nvml_used_mb": used, "nvml_used_delta_mb": delta,
                "torch_max_allocated_mb": torch_peak}

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml[0].nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
