"""LiteLLM's proxy, pinned, installed once into its own virtualenv, and run in front of an upstream.

LiteLLM's dependencies (FastAPI, pydantic, boto3, ...) must not meet the platform's, so the
proxy lives in a virtualenv of its own, cached outside the repository and reused:

    ~/.cache/inference-platform/litellm-<version>/venv   (or $XDG_CACHE_HOME/...)

It runs the way a user would run it for a fair comparison with the platform's hashed keys and
records: a master key and nothing else (no database, no spend logs, no callbacks).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.child_process import stop_group, wait_until_healthy

# The issue measured 1.108. Its later patch releases pin post-releases of litellm-enterprise and
# litellm-proxy-extras that some PyPI mirrors lack; 1.108.7 is the newest whose [proxy] extra
# resolves from all the indexes we install from.
LITELLM_VERSION = "1.108.7"
MODEL = "mock-gpt"


def cache_dir(version: str = LITELLM_VERSION) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "inference-platform" / f"litellm-{version}"


def ensure_litellm(version: str = LITELLM_VERSION, *, log=print) -> Path:
    """The cached virtualenv's `litellm` program, installed first (pip, a minute or two) if missing.

    A lock file serialises installs. The venv is finished only when its marker file is written
    last, so an install cut short is started again, never taken for a complete one.
    """
    directory = cache_dir(version)
    venv = directory / "venv"
    program, marker = venv / "bin" / "litellm", venv / ".installed"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and program.is_file():
            return program
        shutil.rmtree(venv, ignore_errors=True)
        started = time.perf_counter()
        log(f"[litellm] installing litellm[proxy]=={version} into {venv} (once; cached)")
        _run([sys.executable, "-m", "venv", str(venv)])
        _run(
            [
                str(venv / "bin" / "pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"litellm[proxy]=={version}",
            ]
        )
        marker.write_text(f"litellm[proxy]=={version}\n", encoding="utf-8")
        log(f"[litellm] installed in {time.perf_counter() - started:.0f}s")
        return program


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(
            f"{' '.join(command[:4])} ... failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


@dataclass
class LiteLLMProxy:
    base_url: str
    master_key: str
    command: list[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def config_yaml(upstream_base_url: str, master_key: str) -> str:
    """One model routed to the upstream, a master key, and every optional feature left off."""
    return (
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream_base_url}\n"
        "      api_key: not-needed\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  set_verbose: false\n"
    )


@contextlib.contextmanager
def running_litellm(
    program: Path, upstream_base_url: str, *, port: int, tmp: Path, ready_timeout: float = 120
) -> Iterator[LiteLLMProxy]:
    """`litellm --config` on `port` (one worker) until its liveness probe answers; stopped on the way out."""

    master_key = f"sk-bench-{secrets.token_hex(8)}"
    config = tmp / "litellm.yaml"
    config.write_text(config_yaml(upstream_base_url, master_key), encoding="utf-8")
    command = [str(program), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    env = {name: value for name, value in os.environ.items() if name in ("PATH", "HOME", "LANG", "TMPDIR")}
    # No network here: the bundled cost map, not GitHub's; no telemetry; only errors logged.
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False", NO_DOCS="True")
    log_path = tmp / "litellm.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    proxy = LiteLLMProxy(f"http://127.0.0.1:{port}", master_key, command, log_path)
    try:
        wait_until_healthy(
            process,
            f"{proxy.base_url}/health/liveliness",
            what="litellm",
            log_path=log_path,
            timeout=ready_timeout,
            poll_s=0.3,
        )
        yield proxy
    finally:
        stop_group(process)
