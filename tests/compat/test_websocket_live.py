"""A real WebSocket client (`websockets`) against the platform started the way the README says."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

pytestmark = [pytest.mark.live, pytest.mark.model]

CHAT = [{"role": "user", "content": "Tell me about the sea in two sentences."}]
TIMEOUT = 60


def ws_url(live, path: str = "/ws/v1/chat/completions") -> str:
    return live.base_url.replace("http://", "ws://", 1) + path


def open_socket(live, key: str | None = None):
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return connect(ws_url(live), additional_headers=headers, open_timeout=TIMEOUT, close_timeout=5)


def send_request(socket, body: dict) -> None:
    socket.send(json.dumps({"type": "request", "body": body}))


def frames_until_done(socket) -> list:
    frames = []
    while (text := socket.recv(timeout=TIMEOUT)) != "[DONE]":
        frames.append(json.loads(text))
    return frames


def content(frames: list) -> str:
    return "".join(f["choices"][0]["delta"].get("content") or "" for f in frames if f.get("choices"))


def cancelled_records(live) -> list[tuple]:
    with sqlite3.connect(live.log_path.parent / "live.sqlite3") as connection:
        return connection.execute(
            "SELECT completion_tokens, status_code, stream FROM monitoring_requestrecord "
            "WHERE finish_reason = 'cancelled' ORDER BY id"
        ).fetchall()


def test_streamed_text_matches_the_sdk(live, sdk):
    body = dict(model="smollm2", messages=CHAT, max_tokens=16, temperature=0, seed=5)
    whole = sdk.chat.completions.create(**body)
    with open_socket(live, live.api_key) as socket:
        send_request(socket, {**body, "stream_options": {"include_usage": True}})
        frames = frames_until_done(socket)
    text = content(frames)
    assert text.strip() and text == whole.choices[0].message.content
    assert len([f for f in frames if f.get("choices") and f["choices"][0]["delta"].get("content")]) >= 5
    counts = {"prompt_tokens", "completion_tokens", "total_tokens"}  # cached_tokens depends on what ran before
    assert {k: frames[-1]["usage"][k] for k in counts} == whole.usage.model_dump(include=counts)


def test_auth_frame_and_legacy_completions(live, sdk):
    whole = sdk.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=6, temperature=0)
    with connect(ws_url(live, "/ws/v1/completions"), open_timeout=TIMEOUT) as socket:
        socket.send(json.dumps({"type": "auth", "api_key": live.api_key}))
        send_request(
            socket, {"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}
        )
        frames = frames_until_done(socket)
    assert all(f["object"] == "text_completion" for f in frames)
    assert "".join(f["choices"][0]["text"] for f in frames) == whole.choices[0].text


def test_a_wrong_key_is_told_and_closed_with_4401(live):
    with open_socket(live, "ipk-00000000-wrong") as socket:
        error = json.loads(socket.recv(timeout=TIMEOUT))
        assert error["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosedError) as closed:
            socket.recv(timeout=TIMEOUT)
    assert closed.value.rcvd.code == 4401


def test_cancel_mid_stream_stops_generation(live):
    before = len(cancelled_records(live))
    with open_socket(live, live.api_key) as socket:
        send_request(socket, {"model": "smollm2", "messages": CHAT, "max_tokens": 1500})
        contents = 0
        while contents < 3:
            frame = json.loads(socket.recv(timeout=TIMEOUT))
            contents += bool(frame["choices"][0]["delta"].get("content"))
        socket.send(json.dumps({"type": "cancel"}))
        rest = frames_until_done(socket)
        assert rest[-1] == {"object": "stream.cancelled"}
        records = cancelled_records(live)
        assert len(records) == before + 1  # written before the [DONE] that frees the connection
        completion_tokens, status_code, stream = records[-1]
        assert status_code == 499 and stream
        assert completion_tokens < 100, "generation went on after the cancel"
        # The same connection serves the next request.
        send_request(socket, {"model": "smollm2", "messages": CHAT, "max_tokens": 2})
        assert content(frames_until_done(socket))


def test_closing_the_socket_mid_stream_cancels(live):
    before = len(cancelled_records(live))
    with open_socket(live, live.api_key) as socket:
        send_request(socket, {"model": "smollm2", "messages": CHAT, "max_tokens": 1500})
        for _ in range(4):
            socket.recv(timeout=TIMEOUT)
    deadline = time.monotonic() + 30
    while len(records := cancelled_records(live)) == before:
        assert time.monotonic() < deadline, "no cancelled record appeared"
        time.sleep(0.2)
    completion_tokens, status_code, _ = records[-1]
    assert status_code == 499 and completion_tokens < 100
