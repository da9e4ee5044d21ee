"""A fingerprint of the hardware and software a figure was measured on."""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("lrl-harness", "torch", "transformers", "peft", "tokenizers", "accelerate", "llama-cpp-python",
            "vllm", "anthropic", "pluggy", "click")


def package_versions(names=PACKAGES) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int | None:
    """Cores this process may run on (the affinity mask), which can be fewer than ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def torch_threads() -> int | None:
    """Intra-op threads torch uses, when torch is already imported (never imports it)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def gpu_info() -> dict | None:
    """GPU name, compute capability, memory and driver; None when there is no NVIDIA GPU.

    Asks torch when it is already imported (never imports it, so fast commands stay fast),
    otherwise ``nvidia-smi`` when it is on the PATH (a llama.cpp or vLLM run may not import torch here).
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return {
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
            "driver": nvidia_driver(),
        }
    return _nvidia_smi()


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver version (e.g. ``535.104.05``), or None."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as fh:
            line = fh.readline().strip()
    except OSError:
        return None
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+(?:\.\d+)+)", line)
    return match.group(1) if match else line


def _nvidia_smi() -> dict | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    fields = ("name", "compute_cap", "memory.total", "driver_version")
    try:
        out = subprocess.run([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [[cell.strip() for cell in line.split(",")] for line in out.strip().splitlines() if line.strip()]
    if not rows or len(rows[0]) != len(fields):
        return None
    name, capability, memory_mib, driver = rows[0]
    try:
        memory_gib = round(float(memory_mib) / 1024, 1)
    except ValueError:
        memory_gib = None
    return {"name": name, "compute_capability": capability, "memory_gib": memory_gib, "count": len(rows),
            "cuda": None, "driver": driver}


def fingerprint() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch_threads(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gpu": gpu_info(),
        "packages": package_versions(),
    }


def cuda_torch():
    """torch, when something already imported it and CUDA is up; never imports it."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and torch.cuda.is_available() else None


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB on Linux


def current_rss_mib() -> float | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * resource.getpagesize() / 2**20, 1)
