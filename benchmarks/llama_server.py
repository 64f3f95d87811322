"""llama.cpp's own `llama-server`, built once from the sources our llama-cpp-python pin vendors, and run.

The baseline must be the llama.cpp the platform runs on, so the binary is built from the
`vendor/llama.cpp` tree of the llama-cpp-python sdist of the installed version (the pin in
requirements/base.txt), natively optimised like the wheel pip built. The build takes minutes on
2 cores, so the binary is cached outside the repository and reused:

    ~/.cache/inference-platform/llama-server-<version>-<flags hash>/llama-server   (or $XDG_CACHE_HOME/...)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.child_process import stop_group, wait_until_healthy

ROOT = Path(__file__).resolve().parent.parent
BINARY_NAME = "llama-server"
# Everything but the server is off: no tests, examples, web UI (whose prebuilt assets would be
# downloaded) or HTTPS. LLAMA_CURL is gone from this llama.cpp (a deprecation warning only);
# LLAMA_OPENSSL=OFF is what keeps the build free of network libraries now.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary to cache
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)


def llama_cpp_python_version() -> str:
    """The installed llama-cpp-python's version, else the pin in requirements/base.txt."""
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        pin = re.search(r"^llama-cpp-python==(\S+)", (ROOT / "requirements" / "base.txt").read_text(), re.M)
        if not pin:
            raise RuntimeError("llama-cpp-python is neither installed nor pinned in requirements/base.txt") from None
        return pin.group(1)


def compiler_flags() -> str:
    """The flags the wheel was built with too (scripts/llama_cpp_flags.sh: AMX off where it crashes)."""
    script = ROOT / "scripts" / "llama_cpp_flags.sh"
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True).stdout.strip()


def cache_dir(version: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    flags = compiler_flags()
    suffix = f"-{hashlib.sha256(flags.encode()).hexdigest()[:12]}" if flags else ""
    return base / "inference-platform" / f"llama-server-{version}{suffix}"


def ensure_binary(version: str | None = None, *, jobs: int = 2, log=print) -> Path:
    """The cached llama-server for `version`, built first if it is not there yet.

    A lock file serialises builds, so two runs that start together build it once.
    """
    version = version or llama_cpp_python_version()
    directory = cache_dir(version)
    binary = directory / BINARY_NAME
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
        if not shutil.which("cmake"):  # llama-cpp-python's own build may have used PyPI's cmake instead
            raise RuntimeError(
                "building llama-server needs cmake on PATH (Debian: apt-get install cmake), "
                "or pass --llama-server PATH to a binary you have"
            )
        started = time.perf_counter()
        log(
            f"[llama-server] building {BINARY_NAME} from llama-cpp-python {version}'s vendor/llama.cpp "
            f"(-j{jobs}; minutes on 2 cores; cached in {directory})"
        )
        with tempfile.TemporaryDirectory(prefix="llama-server-build-") as tmp:
            source = _fetch_sources(version, Path(tmp), log)
            built = _build(source, Path(tmp) / "build", jobs, log)
            partial = directory / f".{BINARY_NAME}.partial"
            shutil.copy2(built, partial)
            os.replace(partial, binary)  # a build cut short never leaves a half-written binary behind
        (directory / "BUILD_INFO.txt").write_text(
            f"llama-cpp-python {version} vendor/llama.cpp\ncmake {' '.join(CMAKE_OPTIONS)} {compiler_flags()}\n"
            f"built in {time.perf_counter() - started:.0f}s\n",
            encoding="utf-8",
        )
        log(f"[llama-server] built in {time.perf_counter() - started:.0f}s: {binary}")
        return binary


def _fetch_sources(version: str, tmp: Path, log) -> Path:
    """The sdist from PyPI (pip's cache when it has it), unpacked; returns its llama.cpp tree."""
    log(f"[llama-server] pip download --no-binary :all: --no-deps llama-cpp-python=={version}")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--dest",
            str(tmp),
            f"llama-cpp-python=={version}",
        ]
    )
    archives = list(tmp.glob("llama_cpp_python-*.tar.gz"))
    if not archives:
        raise RuntimeError(f"pip download left no llama_cpp_python sdist in {tmp}")
    with tarfile.open(archives[0]) as archive:
        archive.extractall(tmp, filter="data")
    source = tmp / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        raise RuntimeError(f"no vendor/llama.cpp/CMakeLists.txt in the llama-cpp-python {version} sdist")
    return source


def _build(source: Path, build: Path, jobs: int, log) -> Path:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    flags = compiler_flags()
    options = [*CMAKE_OPTIONS, f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"] if flags else [*CMAKE_OPTIONS]
    log(f"[llama-server] cmake {' '.join(options)}")
    _run(["cmake", "-S", str(source), "-B", str(build), *generator, *options])
    _run(["cmake", "--build", str(build), "--config", "Release", f"-j{jobs}", "--target", BINARY_NAME])
    built = build / "bin" / BINARY_NAME
    if not built.is_file():
        raise RuntimeError(f"the build finished without {built}")
    return built


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(
            f"{' '.join(command[:4])} ... failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


# --------------------------------------------------------------------------- running it


@dataclass
class LlamaServer:
    base_url: str
    command: list[str]
    log_path: Path
    pid: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_llama_server(
    binary: Path,
    model_path: Path,
    *,
    alias: str,
    parallel: int,
    threads: int,
    ctx_per_slot: int,
    tmp: Path,
    extra_args: tuple[str, ...] = (),
    ready_timeout: float = 120,
) -> Iterator[LlamaServer]:
    """llama-server on a free port with `parallel` slots of `ctx_per_slot` tokens, until /health is 200
    (it answers 503 while the model loads); stopped with its whole process group on the way out."""

    from tests.compat.live_server import free_port

    port = free_port()
    command = [
        str(binary),
        "--model",
        str(model_path),
        "--alias",
        alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--parallel",
        str(parallel),
        "--ctx-size",
        str(parallel * ctx_per_slot),
        "--threads",
        str(threads),
        "--threads-batch",
        str(threads),
        *extra_args,
    ]
    log_path = tmp / "llama-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = LlamaServer(f"http://127.0.0.1:{port}", command, log_path, process.pid)
    try:
        wait_until_healthy(
            process, f"{server.base_url}/health", what="llama-server", log_path=log_path, timeout=ready_timeout
        )
        yield server
    finally:
        stop_group(process)
