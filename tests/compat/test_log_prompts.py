"""LOG_PROMPTS: prompts reach the server log only when an operator turns it on; keys never do."""

import json
import secrets

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from .live_server import start_live_server

pytestmark = [pytest.mark.live, pytest.mark.model]


def send_prompts(server, marker: str) -> None:
    """A chat, a legacy completion, a stream, a WebSocket request and a refused one, each carrying `marker`."""
    headers = {"Authorization": f"Bearer {server.api_key}"}
    chat = {"model": "smollm2", "max_tokens": 2, "messages": [{"role": "user", "content": f"Say {marker}-chat"}]}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as client:
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
        assert client.post("/v1/chat/completions", json={**chat, "stream": True}).status_code == 200
        assert (
            client.post(
                "/v1/completions", json={"model": "smollm2", "max_tokens": 2, "prompt": f"Say {marker}-text"}
            ).status_code
            == 200
        )
        refused = client.post("/v1/chat/completions", json={**chat, "temperature": 9})
        assert refused.status_code == 400, refused.text
    ws_url = server.base_url.replace("http://", "ws://") + "/ws/v1/chat/completions"
    with ws_connect(ws_url, additional_headers=headers, open_timeout=30) as ws:
        ws.send(
            json.dumps(
                {"type": "request", "body": {**chat, "messages": [{"role": "user", "content": f"Say {marker}-ws"}]}}
            )
        )
        while ws.recv(timeout=120) != "[DONE]":
            pass


def run_with_log_prompts(tmp_path, value: str) -> tuple[str, str, str]:
    """Serve with LOG_PROMPTS=value, send the prompts, stop; returns (marker, key, the whole log)."""
    marker = f"marker{secrets.token_hex(6)}"
    server = start_live_server(tmp_path, extra_env={"LOG_PROMPTS": value, "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    try:
        assert server.api_key, server.log()
        send_prompts(server, marker)
    finally:
        server.stop()
    return marker, server.api_key, server.log()


def test_prompts_stay_out_of_the_log_by_default(tmp_path):
    marker, key, log = run_with_log_prompts(tmp_path, "false")
    assert "POST /v1/chat/completions" in log  # the requests themselves are logged
    assert marker not in log
    assert log.count(key.split("-")[-1]) == 1  # the key's secret: only in the first-run banner


def test_prompts_are_logged_when_turned_on(tmp_path):
    marker, key, log = run_with_log_prompts(tmp_path, "true")
    for suffix in ("chat", "text", "ws"):
        assert f"{marker}-{suffix}" in log, log[-3000:]
    # Only accepted requests are logged, each once: chat (plain and streamed) and WebSocket, and the text one.
    assert log.count(f"{marker}-chat") == 2
    assert log.count(f"{marker}-ws") == 1 and log.count(f"{marker}-text") == 1
    assert log.count(key.split("-")[-1]) == 1
