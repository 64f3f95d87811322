"""WebSocket streaming through the real ASGI application, on the echo model with real keys."""

import asyncio
import json
import logging
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from api.consumers import CLOSE_UNAUTHORIZED, ChatCompletionsConsumer
from models_registry.services.api_keys import api_key_revoke, api_key_verify
from monitoring.models import RequestRecord
from serving.dispatch.embedded import engine_host
from tests.held import LONG_ECHO, LONG_WORDS, long_chat, register_long_echo

pytestmark = pytest.mark.django_db(transaction=True)

CHAT_PATH = "/ws/v1/chat/completions"
# Only turns a hang into a failure; a receive that times out cancels the application.
TIMEOUT = 60
ECHO_TEXT = "one two three four five"
ECHO_CHAT = {"model": "echo", "messages": [{"role": "user", "content": ECHO_TEXT}]}
# Runs for 80 s unless cancelled, so a stream that ends early was stopped.
LONG_CHAT = long_chat()


@pytest.fixture
def long_echo(transactional_db):
    return register_long_echo()


@pytest.fixture
async def open_socket(asgi_app):
    """Opens accepted WebSockets to the real application; closes them after the test."""
    opened = []

    async def open_(path=CHAT_PATH, key=None, authorization=None):
        headers = []
        if key is not None:
            headers.append((b"authorization", f"Bearer {key}".encode()))
        if authorization is not None:
            headers.append((b"authorization", authorization.encode()))
        socket = WebsocketCommunicator(asgi_app, path, headers=headers)
        opened.append(socket)
        connected, _ = await socket.connect(timeout=TIMEOUT)
        assert connected
        return socket

    yield open_
    for socket in opened:
        # Raises here if the application died with an exception during the test.
        await socket.disconnect(timeout=TIMEOUT)
    # The consumer's ORM calls ran on asgiref's sync thread; close that thread's connection
    # so PostgreSQL can drop the test database at the end.
    await sync_to_async(connections.close_all)()


async def request(socket, body: dict) -> None:
    await socket.send_json_to({"type": "request", "body": body})


async def frames_until_done(socket) -> list:
    """Decoded frames up to the [DONE] text frame, which must arrive."""
    frames = []
    while (text := await socket.receive_from(timeout=TIMEOUT)) != "[DONE]":
        frames.append(json.loads(text))
    return frames


def joined(frames: list) -> str:
    return "".join(f["choices"][0]["delta"].get("content", "") for f in frames if f.get("choices"))


async def expect_unauthorized(socket) -> dict:
    """The 401 error frame, then a close with code 4401."""
    error = await socket.receive_json_from(timeout=TIMEOUT)
    assert error["error"]["code"] == "invalid_api_key", error
    assert error["error"]["type"] == "invalid_request_error"
    closed = await socket.receive_output(timeout=TIMEOUT)
    assert closed == {"type": "websocket.close", "code": CLOSE_UNAUTHORIZED}
    return error["error"]


async def cancelled_record() -> RequestRecord:
    """The request record of the cancelled request, waiting a bounded time for it."""
    deadline = time.monotonic() + TIMEOUT
    while (record := await RequestRecord.objects.filter(finish_reason="cancelled").afirst()) is None:
        assert time.monotonic() < deadline, "no cancelled request was recorded"
        await asyncio.sleep(0.05)
    return record


async def test_header_auth_streams_chunks_then_done(open_socket, api_key, echo_model):
    socket = await open_socket(key=api_key)
    await request(socket, ECHO_CHAT)
    frames = await frames_until_done(socket)
    assert all(f["object"] == "chat.completion.chunk" for f in frames)
    assert len({f["id"] for f in frames}) == 1 and frames[0]["id"].startswith("chatcmpl-")
    assert frames[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert joined(frames) == ECHO_TEXT
    assert len([f for f in frames if f["choices"][0]["delta"].get("content")]) == 5  # a frame per token
    finishes = [f["choices"][0]["finish_reason"] for f in frames if f["choices"][0]["finish_reason"]]
    assert finishes == ["stop"] and frames[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in f for f in frames)
    assert await socket.receive_nothing(timeout=0.2)  # nothing after [DONE]
    record = await RequestRecord.objects.aget()
    assert record.stream and record.status_code == 200 and record.completion_tokens == 5


async def test_usage_chunk_with_include_usage(open_socket, api_key, echo_model):
    socket = await open_socket(key=api_key)
    await request(socket, {**ECHO_CHAT, "max_tokens": 3, "stream_options": {"include_usage": True}})
    frames = await frames_until_done(socket)
    assert joined(frames) == "one two three"
    assert frames[-1]["choices"] == []
    assert frames[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert all(f["usage"] is None for f in frames[:-1])
    assert frames[-2]["choices"][0]["finish_reason"] == "length"


async def test_stream_false_in_the_body_still_streams(open_socket, api_key, echo_model):
    socket = await open_socket(key=api_key)
    await request(socket, {**ECHO_CHAT, "stream": False})
    frames = await frames_until_done(socket)
    assert len(frames) > 2 and joined(frames) == ECHO_TEXT


async def test_auth_frame_authenticates_and_a_request_may_follow_at_once(open_socket, api_key, echo_model):
    socket = await open_socket()
    await socket.send_json_to({"type": "auth", "api_key": api_key})
    await request(socket, ECHO_CHAT)
    assert joined(await frames_until_done(socket)) == ECHO_TEXT


async def test_legacy_completions_endpoint(open_socket, api_key, echo_model):
    socket = await open_socket(path="/ws/v1/completions", key=api_key)
    await request(socket, {"model": "echo", "prompt": "a b c", "max_tokens": 2})
    frames = await frames_until_done(socket)
    assert all(f["object"] == "text_completion" for f in frames)
    assert "".join(f["choices"][0]["text"] for f in frames) == "a b"
    assert frames[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "authorization", ["Bearer ipk-00000000-wrong", "Bearer not-even-a-key", "Basic abc", "Bearer "]
)
async def test_bad_header_gets_401_frame_and_4401(open_socket, echo_model, authorization):
    socket = await open_socket(authorization=authorization)
    error = await expect_unauthorized(socket)
    assert "ipk-00000000-wrong" not in error["message"]  # a key is never echoed back


@pytest.mark.parametrize(
    "first",
    [
        {"type": "auth", "api_key": "ipk-00000000-wrong"},
        {"type": "auth", "api_key": ""},
        {"type": "auth", "api_key": 42},
        {"type": "auth"},
        {"type": "request", "body": ECHO_CHAT},
        {"type": "cancel"},
        "not json",
    ],
)
async def test_anything_but_a_valid_auth_frame_first_gets_4401(open_socket, echo_model, first):
    socket = await open_socket()
    if isinstance(first, str):
        await socket.send_to(text_data=first)
    else:
        await socket.send_json_to(first)
    await expect_unauthorized(socket)
    assert not await RequestRecord.objects.aexists()


async def test_no_auth_frame_in_time_gets_4401(open_socket, echo_model, monkeypatch):
    monkeypatch.setattr(ChatCompletionsConsumer, "auth_timeout", 0.2)
    socket = await open_socket()
    error = await expect_unauthorized(socket)
    assert "0.2 seconds" in error["message"]


async def test_invalid_messages_get_error_frames_and_the_connection_stays_open(
    open_socket, api_key, echo_model, caplog
):
    caplog.set_level(logging.INFO, logger="api.consumers")
    socket = await open_socket(key=api_key)
    invalid = [
        ("{not json", None),
        ("[1, 2]", None),
        ('"request"', None),
        ('{"body": {}}', "type"),
        ('{"type": "nope"}', "type"),
        ('{"type": ["request"]}', "type"),
        ('{"type": "request"}', "body"),
        ('{"type": "request", "body": "hi"}', "body"),
        ('{"type": "request", "body": {}, "id": 1}', "id"),
        ('{"type": "cancel", "now": true}', "now"),
        (json.dumps({"type": "auth", "api_key": api_key}), None),  # already authenticated
    ]
    for text, param in invalid:
        await socket.send_to(text_data=text)
        error = (await socket.receive_json_from(timeout=TIMEOUT))["error"]
        assert (error["code"], error["param"]) == ("invalid_message", param), text
        assert error["type"] == "invalid_request_error"
        assert await socket.receive_nothing(timeout=0.05), text  # no [DONE]: no request was started
    await socket.send_to(bytes_data=b"\x00\x01")
    assert (await socket.receive_json_from(timeout=TIMEOUT))["error"]["code"] == "invalid_message"
    logged = [r.getMessage() for r in caplog.records if r.name == "api.consumers"]
    assert len(logged) == len(invalid) + 1 and all("invalid_message" in m for m in logged)  # logged, not swallowed
    assert api_key not in caplog.text
    await request(socket, ECHO_CHAT)
    assert joined(await frames_until_done(socket)) == ECHO_TEXT
    assert await RequestRecord.objects.acount() == 1


@pytest.mark.parametrize(
    "body, code, param",
    [
        ({**ECHO_CHAT, "model": "no-such-model"}, "model_not_found", "model"),
        ({**ECHO_CHAT, "temperature": 9}, "invalid_value", "temperature"),
        ({**ECHO_CHAT, "max_tokens": 10_000}, "context_length_exceeded", "messages"),
        ({**ECHO_CHAT, "n": 2}, "unsupported_parameter", "n"),
        ({"model": "echo"}, "invalid_value", "messages"),
    ],
)
async def test_errors_before_the_stream_are_one_error_frame_then_done(
    open_socket, api_key, echo_model, body, code, param
):
    socket = await open_socket(key=api_key)
    await request(socket, body)
    frames = await frames_until_done(socket)
    assert len(frames) == 1 and set(frames[0]) == {"error"}
    assert (frames[0]["error"]["code"], frames[0]["error"]["param"]) == (code, param)
    record = await RequestRecord.objects.aget()
    assert record.error_type == code and record.status_code >= 400
    await request(socket, ECHO_CHAT)  # the connection is still usable
    assert joined(await frames_until_done(socket)) == ECHO_TEXT


async def test_cancel_stops_generation_and_the_connection_serves_another(open_socket, api_key, echo_model, long_echo):
    socket = await open_socket(key=api_key)
    await request(socket, LONG_CHAT)
    contents = 0
    while contents < 3:
        frame = await socket.receive_json_from(timeout=TIMEOUT)
        contents += bool(frame["choices"][0]["delta"].get("content"))
    await socket.send_json_to({"type": "cancel"})
    rest = await frames_until_done(socket)
    # The stream ended with the cancel frame, long before its last token, and nothing is
    # left generating: the engine was stopped, not just the frames.
    assert rest[-1] == {"object": "stream.cancelled"}
    assert all("error" not in f for f in rest)
    assert not any(f.get("choices") and f["choices"][0]["finish_reason"] for f in rest[:-1])
    assert engine_host().engine_for(LONG_ECHO).in_flight == 0
    record = await cancelled_record()
    assert record.status_code == 499 and record.stream
    assert 3 <= record.completion_tokens < LONG_WORDS, record.completion_tokens
    assert record.completion_tokens >= contents + len(joined(rest).split())  # counts what was sent
    # After [DONE] the same connection takes the next request.
    await request(socket, ECHO_CHAT)
    assert joined(await frames_until_done(socket)) == ECHO_TEXT
    assert await RequestRecord.objects.acount() == 2


async def test_cancel_with_nothing_in_progress_does_nothing(open_socket, api_key, echo_model):
    socket = await open_socket(key=api_key)
    await socket.send_json_to({"type": "cancel"})
    await request(socket, ECHO_CHAT)
    # Frames arrive in order: a frame or [DONE] answering the cancel would come first.
    frames = await frames_until_done(socket)
    assert joined(frames) == ECHO_TEXT
    assert all(f.get("object") == "chat.completion.chunk" for f in frames)
    assert await RequestRecord.objects.acount() == 1


async def test_closing_the_socket_mid_stream_cancels(open_socket, api_key, long_echo):
    socket = await open_socket(key=api_key)
    await request(socket, LONG_CHAT)
    for _ in range(4):
        await socket.receive_json_from(timeout=TIMEOUT)
    await socket.disconnect(timeout=TIMEOUT)  # returns once the consumer has finished
    assert engine_host().engine_for(LONG_ECHO).in_flight == 0
    record = await cancelled_record()
    assert record.status_code == 499 and 3 <= record.completion_tokens < LONG_WORDS, record.completion_tokens


async def test_a_second_request_while_streaming_is_refused(open_socket, api_key, echo_model):
    socket = await open_socket(key=api_key)
    await request(socket, ECHO_CHAT)
    await socket.receive_json_from(timeout=TIMEOUT)  # the stream has started
    await request(socket, {**ECHO_CHAT, "max_tokens": 1})
    frames = await frames_until_done(socket)
    refusals = [f for f in frames if "error" in f]
    assert [f["error"]["code"] for f in refusals] == ["request_in_progress"]
    # The first stream was not disturbed.
    assert joined([f for f in frames if "error" not in f]) == ECHO_TEXT
    assert await RequestRecord.objects.acount() == 1
    # The refusal ended no request of its own: the next [DONE] is the next request's.
    await request(socket, ECHO_CHAT)
    frames = await frames_until_done(socket)
    assert joined(frames) == ECHO_TEXT and all("error" not in f for f in frames)
    assert await RequestRecord.objects.acount() == 2


async def test_a_revoked_key_is_refused_on_its_next_request(open_socket, api_key, echo_model):
    socket = await open_socket(key=api_key)
    await request(socket, ECHO_CHAT)
    assert joined(await frames_until_done(socket)) == ECHO_TEXT
    key = await sync_to_async(api_key_verify)(plaintext=api_key)
    await sync_to_async(api_key_revoke)(key=key)
    await request(socket, ECHO_CHAT)
    await expect_unauthorized(socket)
    assert await RequestRecord.objects.acount() == 1


DEEP = "[" * 10_000 + "]" * 10_000
SURROGATE_CHAT = '{"model": "echo", "messages": [{"role": "user", "content": "\\ud800"}]}'


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "request", "body": {"model": "echo", "messages": ' + DEEP + "}}",
        DEEP,
        '{"type": "request", "body": ' + SURROGATE_CHAT + "}",
        '{"type": "request", "body": {"model": "echo", "\\udfff": 1, "messages": []}}',
    ],
    ids=["deep body", "deep message", "surrogate in content", "surrogate as a field name"],
)
async def test_unparseable_json_is_an_error_frame_and_the_connection_stays_open(open_socket, api_key, echo_model, text):
    """JSON Python parses but the API refuses (too deep, lone surrogates): the README's invalid_message."""
    socket = await open_socket(key=api_key)
    await socket.send_to(text_data=text)
    error = (await socket.receive_json_from(timeout=TIMEOUT))["error"]
    assert (error["code"], error["type"]) == ("invalid_message", "invalid_request_error")
    assert "\ud800" not in error["message"] and "\udfff" not in error["message"]
    assert await socket.receive_nothing(timeout=0.05)  # no [DONE]: no request was started
    await request(socket, ECHO_CHAT)
    assert joined(await frames_until_done(socket)) == ECHO_TEXT


async def test_a_message_over_the_body_limit_is_refused_and_the_connection_stays_open(
    open_socket, api_key, echo_model, settings
):
    settings.MAX_REQUEST_BODY_BYTES = 1000
    socket = await open_socket(key=api_key)
    await request(socket, {**ECHO_CHAT, "messages": [{"role": "user", "content": "x" * 1000}]})
    error = (await socket.receive_json_from(timeout=TIMEOUT))["error"]
    assert (error["code"], error["type"]) == ("request_too_large", "invalid_request_error")
    assert "1000 bytes" in error["message"]
    assert await socket.receive_nothing(timeout=0.05)
    await request(socket, ECHO_CHAT)  # under the limit
    assert joined(await frames_until_done(socket)) == ECHO_TEXT
