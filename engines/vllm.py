"""The vLLM engine: `vllm serve` as a supervised child, reached through the OpenAI proxy.

vLLM brings its own continuous batching, paged KV cache and OpenAI server, so this engine
only supplies the command line; supervision and proxying are SupervisedServerEngine's.
vLLM needs a CUDA GPU and is not installed on CPU machines (requirements/gpu.txt has it).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from .capabilities import CAPABILITIES
from .child_server import SupervisedServerEngine
from .errors import EngineUnavailableError
from .process_supervisor import LOOPBACK


class VllmEngine(SupervisedServerEngine):
    """Options: gpu, port, max_model_len, gpu_memory_utilization, extra_args, vllm_executable,
    and `command` (a whole replacement command line, for tests without a GPU)."""

    name = "vllm"
    # What the proxy forwards. vLLM itself also does n, logprobs and grammars, but OpenAIProxy
    # does not pass them on, so declaring them would let the API accept what it would then drop.
    capabilities = CAPABILITIES["vllm"]
    health_url_template = "http://{host}:{port}/health"
    tokenizer_endpoints = True
    # Loading weights and capturing CUDA graphs takes minutes on large models.
    default_startup_timeout_s = 900.0

    def command_template(self) -> list[str]:
        options = self.spec.options
        if options.get("command"):
            return super().command_template()
        extra_args = options.get("extra_args") or []
        if isinstance(extra_args, str) or not all(isinstance(a, str) for a in extra_args):
            raise EngineUnavailableError(
                f'model {self.spec.name}: options.extra_args must be a list of strings, e.g. ["--dtype", "half"]'
            )
        return [
            *vllm_launcher(options.get("vllm_executable")),
            "serve",
            "{source}",
            # Loopback only: the proxy is the child's one client, and keys are checked here.
            "--host",
            LOOPBACK,
            "--port",
            "{port}",
            "--max-model-len",
            str(self._positive_int("max_model_len", self.spec.context_length)),
            "--gpu-memory-utilization",
            str(self._fraction("gpu_memory_utilization", 0.9)),
            "--served-model-name",
            "{model}",
            *extra_args,
        ]

    def served_model(self) -> str:
        return self.spec.name

    def server_env(self) -> dict[str, str]:
        env = super().server_env()
        gpu = self.spec.options.get("gpu")
        if gpu is not None and gpu != "":
            # A list means tensor parallelism over several GPUs, e.g. [0, 1] -> "0,1".
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu)) if isinstance(gpu, (list, tuple)) else str(gpu)
        return env

    def _positive_int(self, key: str, default: int) -> int:
        value = self.spec.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise EngineUnavailableError(
                f"model {self.spec.name}: options.{key} must be a positive integer, not {value!r}"
            )
        return value

    def _fraction(self, key: str, default: float) -> float:
        value = self.spec.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise EngineUnavailableError(f"model {self.spec.name}: options.{key} must be in (0, 1], not {value!r}")
        return float(value)


def vllm_launcher(executable: str | None = None) -> list[str]:
    """How to run the vLLM CLI here, or EngineUnavailableError saying what is missing."""
    if executable:
        if shutil.which(executable):
            return [executable]
        raise EngineUnavailableError(f"vllm executable {executable!r} (options.vllm_executable) was not found")
    # The venv's bin is not always on PATH (services started by absolute path).
    beside_python = Path(sys.executable).with_name("vllm")
    found = shutil.which("vllm") or (str(beside_python) if shutil.which(str(beside_python)) else None)
    if found:
        return [found]
    if importlib.util.find_spec("vllm") is not None:
        return [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    raise EngineUnavailableError(
        f"vLLM is not installed: no `vllm` executable on PATH or beside {sys.executable}, and the `vllm` "
        "module is not importable. vLLM needs a CUDA GPU; install requirements/gpu.txt on such a machine."
    )
