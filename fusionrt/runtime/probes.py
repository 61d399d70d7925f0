"""Machine probes (driver, GPUs, CUDA, cuDNN, TensorRT, TensorRT-RTX, ONNX Runtime and its
providers, torch, cupy): what ``fusionrt doctor`` reports. Below the engines, so any layer may ask.

Every probe is optional and never raises: a missing piece is a finding, not a crash.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from typing import Any

from .machine import library_version

# Relu on a float[1, 4]: the smallest graph every execution provider can take. Built with
# onnx.helper (opset 13, IR 7) and stored as bytes so that the probe needs no `onnx` package;
# tests/test_doctor.py rebuilds it with onnx and checks it is the same model.
PROBE_MODEL = (b'\x08\x07\x12\x08fusionrt:?\n\x0c\n\x01x\x12\x01y"\x04Relu\x12\x05probeZ\x13\n'
               b'\x01x\x12\x0e\n\x0c\x08\x01\x12\x08\n\x02\x08\x01\n\x02\x08\x04b\x13\n\x01y'
               b'\x12\x0e\n\x0c\x08\x01\x12\x08\n\x02\x08\x01\n\x02\x08\x04B\x04\n\x00\x10\r')

NVINFER = "libnvinfer.so.10"
NVINFER_11 = "libnvinfer.so.11"
#: The ONNX Runtime release its TensorRT EP needs per TensorRT major version: 1.18 is the first
#: built against TensorRT 10 (ONNX Runtime's TensorRT EP requirements table); TensorRT 11 removed
#: APIs the EP called, and NVIDIA's 10.x → 11.x migration notes name ONNX Runtime 1.27+ for it.
ORT_FOR_TENSORRT = {10: "1.18", 11: "1.27"}
_SMI_FIELDS = "index,name,driver_version,memory.total,compute_cap"


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def tensorrt_pip_hint(cuda: str | None) -> str:
    """The TensorRT wheel matching a CUDA major version."""
    major = (cuda or "").split(".")[0]
    if major in ("12", "13"):
        return f"pip install tensorrt-cu{major}"
    return "pip install tensorrt-cu12 (or tensorrt-cu13, matching your CUDA)"


def parse_nvidia_smi(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(driver version, GPUs) from ``nvidia-smi --query-gpu=<_SMI_FIELDS> --format=csv,noheader,
    nounits`` output."""
    driver, gpus = None, []
    for line in text.strip().splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 4:
            continue
        driver = cols[2]
        cc = cols[4] if len(cols) > 4 and cols[4] not in ("", "[N/A]") else None
        mem = int(float(cols[3])) if cols[3].replace(".", "", 1).isdigit() else None
        gpus.append({"index": int(cols[0]), "name": cols[1], "memory_total_mib": mem,
                     "compute_capability": cc})
    return driver, gpus


def probe_driver() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Driver via NVML (nvidia-ml-py), else ``nvidia-smi``, else "no NVIDIA driver"."""
    info: dict[str, Any] = {"version": None, "cuda_driver": None, "source": None, "error": None}
    gpus: list[dict[str, Any]] = []
    nvml_error = "nvidia-ml-py not installed"
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            dec = lambda s: s.decode() if isinstance(s, bytes) else str(s)  # noqa: E731
            info["version"] = dec(pynvml.nvmlSystemGetDriverVersion())
            cu = pynvml.nvmlSystemGetCudaDriverVersion()
            info["cuda_driver"] = f"{cu // 1000}.{cu % 1000 // 10}"
            info["source"] = "nvml"
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                gpus.append({
                    "index": i, "name": dec(pynvml.nvmlDeviceGetName(h)),
                    "memory_total_mib": pynvml.nvmlDeviceGetMemoryInfo(h).total // (1 << 20),
                    "compute_capability": "%d.%d" % pynvml.nvmlDeviceGetCudaComputeCapability(h)})
            return info, gpus
        finally:
            pynvml.nvmlShutdown()
    except ImportError:
        pass
    except Exception as e:  # NVML present but no driver / no GPU
        nvml_error = f"NVML: {error_text(e)}"
    smi = shutil.which("nvidia-smi")
    if smi:
        for fields in (_SMI_FIELDS, _SMI_FIELDS.rsplit(",", 1)[0]):  # old drivers lack compute_cap
            try:
                out = subprocess.run([smi, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=15)
            except (OSError, subprocess.TimeoutExpired) as e:
                info["error"] = f"nvidia-smi: {error_text(e)}"
                return info, gpus
            if out.returncode == 0:
                info["version"], gpus = parse_nvidia_smi(out.stdout)
                info["source"] = "nvidia-smi"
                return info, gpus
        info["error"] = f"nvidia-smi failed: {(out.stderr or out.stdout).strip()[:200]}"
        return info, gpus
    info["error"] = f"no NVIDIA driver ({nvml_error}; nvidia-smi not on PATH)"
    return info, gpus


def probe_torch() -> dict[str, Any]:
    t: dict[str, Any] = {"version": None, "cuda": None, "cuda_available": False, "cudnn": None,
                         "gpus": [], "error": None}
    try:
        import torch
    except ImportError:
        t["error"] = "torch not installed: pip install 'fusionrt[torch]'"
        return t
    except Exception as e:
        t["error"] = error_text(e)
        return t
    t["version"], t["cuda"] = library_version("torch"), torch.version.cuda
    try:
        t["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        t["cuda_available"] = bool(torch.cuda.is_available())
        for i in range(torch.cuda.device_count() if t["cuda_available"] else 0):
            p = torch.cuda.get_device_properties(i)
            t["gpus"].append({"index": i, "name": p.name,
                              "memory_total_mib": p.total_memory // (1 << 20),
                              "compute_capability": f"{p.major}.{p.minor}"})
    except Exception as e:  # a broken driver surfaces here, not at import
        t["error"] = error_text(e)
    return t


def _library_loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def probe_provider(ort: Any, provider: str, cuda: str | None) -> dict[str, Any]:
    """Whether ``provider`` is really enabled on a tiny session (ORT silently falls back to the
    CPU when a provider's libraries are missing, and lists the TensorRT EP even then)."""
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        fallback = [] if provider == "CPUExecutionProvider" else ["CPUExecutionProvider"]
        sess = ort.InferenceSession(PROBE_MODEL, so, providers=[provider, *fallback])
        if provider in sess.get_providers():
            return {"usable": True, "reason": ""}
        why = "listed but not enabled on a test session"
    except Exception as e:
        why = f"listed but a test session failed ({error_text(e)[:200]})"
    if provider == "TensorrtExecutionProvider" and not (_library_loadable(NVINFER)
                                                         or _library_loadable(NVINFER_11)):
        why = f"TensorRT EP listed but {NVINFER} not found: {tensorrt_pip_hint(cuda)}"
    elif provider == "CUDAExecutionProvider":
        why += ("; needs an NVIDIA GPU and CUDA 12 + cuDNN 9 libraries: "
                "pip install 'onnxruntime-gpu[cuda,cudnn]'")
    return {"usable": False, "reason": why}


def probe_onnxruntime(cuda: str | None) -> dict[str, Any]:
    o: dict[str, Any] = {"version": None, "providers": [], "provider_status": {}, "error": None}
    try:
        import onnxruntime as ort
    except Exception as e:
        o["error"] = f"onnxruntime not importable ({error_text(e)}): pip install onnxruntime"
        return o
    o["version"] = library_version("onnxruntime")
    o["providers"] = list(ort.get_available_providers())
    skip = {"CPUExecutionProvider", "AzureExecutionProvider"}  # always on / not a device
    try:
        ort.set_default_logger_severity(4)  # our findings replace ORT's fallback errors
        for p in o["providers"]:
            if p not in skip:
                o["provider_status"][p] = probe_provider(ort, p, cuda)
    finally:
        ort.set_default_logger_severity(2)  # ORT's default (warning)
    return o


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def _older(version: str | None, than: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in v.split(".")[:2])
    return version is not None and key(version) < key(than)


def ort_ep_needs(tensorrt_version: str | None, ort_version: str | None) -> str | None:
    """What ONNX Runtime's TensorRT EP needs for this TensorRT ("onnxruntime-gpu >= 1.27"), and
    whether the installed ONNX Runtime is too old; None when TensorRT is absent."""
    major = _major(tensorrt_version)
    if major is None:
        return None
    need = ORT_FOR_TENSORRT.get(major)
    if need is None:
        return f"unknown for TensorRT {major} (known: " + ", ".join(
            f"TensorRT {k}: onnxruntime-gpu >= {v}" for k, v in ORT_FOR_TENSORRT.items()) + ")"
    text = f"onnxruntime-gpu >= {need}"
    if _older(ort_version, need):
        text += f" (installed onnxruntime {ort_version} is older: its TensorRT EP cannot use it)"
    return text


def _import_into(out: dict[str, Any], module: str, hint: str) -> Any:
    """The module, or None with ``out["error"]`` set: not installed, or an import that failed
    (a broken wheel, a missing library), each with the install hint."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        out["error"] = f"not installed: {hint}"
    except Exception as e:  # noqa: BLE001 - doctor reports it, never raises
        out["error"] = f"import failed ({error_text(e)}): {hint}"
    return None


def probe_tensorrt(cuda: str | None) -> dict[str, Any]:
    """Full TensorRT: version, major version (10 or 11) and the ONNX Runtime its EP needs."""
    out: dict[str, Any] = {"version": None, "major": None, "ort_ep_needs": None, "error": None}
    if _import_into(out, "tensorrt", tensorrt_pip_hint(cuda)) is None:
        return out
    out["version"] = library_version("tensorrt")
    out["major"] = _major(out["version"])
    out["ort_ep_needs"] = ort_ep_needs(out["version"], library_version("onnxruntime"))
    return out


def probe_tensorrt_rtx() -> dict[str, Any]:
    """TensorRT for RTX: version and the archs it can build plans for (its ComputeCapability
    targets, e.g. sm86); whether a GPU here can run them is the engine's to say."""
    out: dict[str, Any] = {"version": None, "build_archs": [], "error": None}
    trt = _import_into(out, "tensorrt_rtx", "pip install 'fusionrt[trt-rtx]' (tensorrt-rtx-cu13)")
    if trt is None:
        return out
    out["version"] = library_version("tensorrt_rtx")
    names = [m for m in dir(getattr(trt, "ComputeCapability", object))
             if m.startswith("SM") and m[2:].isdigit()]
    out["build_archs"] = [m.lower() for m in sorted(names, key=lambda m: int(m[2:]))]
    return out


def probe_cupy() -> str | None:
    try:
        import cupy
        return (f"cupy {library_version('cupy')} "
                f"(CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()})")
    except Exception:  # absent or without a usable CUDA: not needed by fusionrt
        return None
