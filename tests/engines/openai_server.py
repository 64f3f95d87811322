"""llama-cpp-python's own OpenAI-compatible server on the bundled GGUF: a real upstream for tests.

Run as a script, this file is the vLLM stand-in: the same server plus vLLM's GET /health,
which VllmEngine waits on and llama_cpp.server lacks. `replay_server` plays back a recorded
answer of a server that cannot run here (vLLM needs a GPU) over a real socket.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _server_flags(n_ctx: int) -> list[str]:
    # interrupt_requests off: by default a new request cuts the running stream short with a
    # bare [DONE], which would make concurrent tests flaky for reasons not ours.
    return ["--n_ctx", str(n_ctx), "--interrupt_requests", "False", "--verbose", "False"]


def llama_server_command(
    gguf: str, *, port: int | str = "{port}", n_ctx: int = 2048, api_key: str | None = None
) -> list[str]:
    """`python -m llama_cpp.server` on `gguf`; the default port is a supervisor placeholder."""
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        gguf,
        "--host",
        HOST,
        "--port",
        str(port),
        *_server_flags(n_ctx),
    ]
    return command + (["--api_key", api_key] if api_key else [])


def vllm_stand_in_command(gguf: str, *, port: int | str = "{port}", n_ctx: int = 2048) -> list[str]:
    """This file as a script: llama_cpp.server that also answers vLLM's GET /health."""
    return [sys.executable, str(Path(__file__).resolve()), "--model", gguf, "--port", str(port), "--n_ctx", str(n_ctx)]


@dataclass
class RunningServer:
    process: subprocess.Popen
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def openai_server(
    gguf: str, log_path: Path, *, api_key: str | None = None, n_ctx: int = 2048, ready_timeout: float = 90
) -> Iterator[RunningServer]:
    """Start llama_cpp.server on a free port, wait for GET /v1/models, stop its group on exit."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            llama_server_command(gguf, port=port, n_ctx=n_ctx, api_key=api_key),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(process=process, base_url=f"http://{HOST}:{port}/v1", log_path=log_path)
    try:
        _wait_ready(server, api_key, ready_timeout)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_ready(server: RunningServer, api_key: str | None, timeout: float) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/models", headers=headers, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"llama_cpp.server was not ready within {timeout}s:\n{server.log()}")


@dataclass
class ReplayServer:
    base_url: str
    requests: list  # the JSON bodies POSTed to it, in order


@contextlib.contextmanager
def replay_server(answer: bytes, *, status: int = 200, models: tuple[str, ...] = ("qwen",)) -> Iterator[ReplayServer]:
    """An HTTP server that answers every POST with `answer` (an SSE transcript) and lists `models`."""
    received: list = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self._send(
                200,
                "application/json",
                json.dumps({"object": "list", "data": [{"id": name, "object": "model"} for name in models]}).encode(),
            )

        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self._send(status, "text/event-stream" if status == 200 else "application/json", answer)

        def _send(self, code: int, content_type: str, body: bytes):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep test output quiet
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ReplayServer(base_url=f"http://{HOST}:{server.server_address[1]}/v1", requests=received)
    finally:
        server.shutdown()
        server.server_close()


def _serve_with_health() -> None:
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n_ctx", type=int, default=2048)
    args = parser.parse_args()
    app = create_app(
        server_settings=ServerSettings(host=HOST, port=args.port, interrupt_requests=False),
        model_settings=[ModelSettings(model=args.model, n_ctx=args.n_ctx, verbose=False)],
    )

    def health() -> dict[str, str]:
        return {}

    app.add_api_route("/health", health, methods=["GET"])
    uvicorn.run(app, host=HOST, port=args.port)


if __name__ == "__main__":
    _serve_with_health()
