"""Fixtures for the benchmark smoke tests: the cached llama-server binary and a live platform."""

from __future__ import annotations

import time

import pytest

from benchmarks.llama_server import cache_dir, ensure_binary, llama_cpp_python_version
from tests.compat.live_server import start_live_server


@pytest.fixture(scope="session")
def llama_server_binary():
    """llama-server from the llama-cpp-python pin's sources: built once (minutes on 2 cores), then cached
    in ~/.cache/inference-platform/ for every later run on the machine."""
    version = llama_cpp_python_version()
    cached = (cache_dir(version) / "llama-server").is_file()
    started = time.perf_counter()
    binary = ensure_binary(version)
    if not cached:
        print(f"built llama-server {version} in {time.perf_counter() - started:.0f}s")
    return binary


@pytest.fixture(scope="module")
def live(tmp_path_factory, request):
    """The platform as the README starts it, with the key its first run printed."""
    server = start_live_server(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    assert server.api_key, server.log()
    yield server
    server.stop()
