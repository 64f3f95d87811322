"""Hardware detection and the choice of engine for `auto` (the seed's PlatformDetector)."""

from __future__ import annotations

import importlib.util
import os
import platform as _platform
import shutil
import subprocess
from typing import Any

import psutil

from .capabilities import CAPABILITIES

CONCRETE_ENGINES = tuple(CAPABILITIES)  # every engine a served model may name
ENGINE_CHOICES = ("auto",) + CONCRETE_ENGINES
# What INFERENCE_ENGINE may force onto `auto` models: upstream needs a URL of its own per model.
FORCEABLE_ENGINES = ("auto", "llama_cpp", "mlx", "vllm", "echo")


def _module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _cuda_facts() -> dict[str, Any]:
    """Ask nvidia-smi, which exists wherever a usable NVIDIA driver does."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {"available": False, "devices": []}
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"available": False, "devices": []}
    devices = []
    for line in out.strip().splitlines():
        name, _, memory = line.partition(",")
        devices.append({"name": name.strip(), "memory_mb": int(memory.strip() or 0)})
    return {"available": bool(devices), "devices": devices}


def get_platform_info() -> dict[str, Any]:
    """Facts about this machine that decide which engine can run well here."""
    system = _platform.system().lower()
    machine = _platform.machine().lower()
    memory = psutil.virtual_memory()
    cuda = _cuda_facts()
    return {
        "system": system,
        "machine": machine,
        "python": _platform.python_version(),
        "cpu_count": os.cpu_count() or 1,
        "physical_cores": psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        "memory_total_bytes": memory.total,
        "memory_available_bytes": memory.available,
        "cuda_available": cuda["available"],
        "cuda_devices": cuda["devices"],
        "apple_silicon": system == "darwin" and machine in ("arm64", "aarch64"),
        "vllm_importable": _module_available("vllm"),
        "mlx_lm_importable": _module_available("mlx_lm"),
        "llama_cpp_importable": _module_available("llama_cpp"),
    }


def detect_best_engine(force_engine: str | None = None, info: dict[str, Any] | None = None) -> str:
    """Pick an engine: a forced one wins, then vLLM on CUDA, MLX on Apple Silicon, else llama.cpp."""
    return explain_engine_choice(force_engine, info)[0]


def explain_engine_choice(force_engine: str | None = None, info: dict[str, Any] | None = None) -> tuple[str, str]:
    """Return the chosen engine and a one-line reason an operator can read."""
    if force_engine and force_engine != "auto":
        if force_engine not in FORCEABLE_ENGINES:
            raise ValueError(f"Unknown engine {force_engine!r}; choose one of {', '.join(FORCEABLE_ENGINES)}")
        return force_engine, f"forced: {force_engine}"
    info = info if info is not None else get_platform_info()
    cuda = "yes" if info["cuda_available"] else "no"
    if info["cuda_available"] and info["vllm_importable"]:
        return "vllm", f"CUDA: {cuda}; vllm importable → vllm"
    apple = "yes" if info["apple_silicon"] else "no"
    if info["apple_silicon"] and info["mlx_lm_importable"]:
        return "mlx", f"CUDA: {cuda}; Apple Silicon: {apple}; mlx-lm importable → mlx"
    return "llama_cpp", f"CUDA: {cuda}; Apple Silicon: {apple} → llama_cpp"
