"""Odd but valid message and prompt inputs on the real SmolLM2, over HTTP and WebSocket.

Null assistant content (what every tool-calling client sends), empty prompts and empty
messages must get a completion or a clean 4xx, never a 500 from the chat template or an
assertion inside llama.cpp.
"""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from monitoring.models import RequestRecord
from serving.dispatch.embedded import engine_host

from .sse import sse_events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model]

TIMEOUT = 60  # the first request loads the model
SMALL = {"model": "smollm2", "max_tokens": 4, "temperature": 0, "seed": 1}
NULL_HISTORY = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None},
    {"role": "assistant"},
    {"role": "user", "content": "Say hello."},
]


def engine_idle() -> bool:
    engine = engine_host().engine_for("smollm2")
    return engine is not None and engine.in_flight == 0


async def assert_still_serves(client) -> None:
    ok = await client.post("/v1/chat/completions", json={**SMALL, "messages": [{"role": "user", "content": "Hi"}]})
    assert ok.status_code == 200, ok.text
    assert engine_idle()


@pytest.fixture
async def ws_chat(asgi_app, api_key):
    """Sends one request over a WebSocket and returns its frames up to [DONE]."""
    sockets = []

    async def send(body: dict, path: str = "/ws/v1/chat/completions") -> list:
        socket = WebsocketCommunicator(asgi_app, path, headers=[(b"authorization", f"Bearer {api_key}".encode())])
        sockets.append(socket)
        connected, _ = await socket.connect(timeout=TIMEOUT)
        assert connected
        await socket.send_json_to({"type": "request", "body": body})
        frames = []
        while (text := await socket.receive_from(timeout=TIMEOUT)) != "[DONE]":
            frames.append(json.loads(text))
        return frames

    yield send
    for socket in sockets:
        await socket.disconnect(timeout=TIMEOUT)
    await sync_to_async(connections.close_all)()


async def test_null_and_missing_assistant_content_over_http(client, smollm2):
    body = {**SMALL, "messages": NULL_HISTORY}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["choices"][0]["message"]["content"], str)
    assert response.json()["usage"]["prompt_tokens"] > 0
    streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
    assert streamed.status_code == 200
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1])
    assert [r.status_code async for r in RequestRecord.objects.all()] == [200, 200]


async def test_null_assistant_content_over_websocket(ws_chat, smollm2):
    frames = await ws_chat({**SMALL, "messages": NULL_HISTORY})
    assert frames and not any("error" in f for f in frames), frames
    assert frames[-1]["choices"][0]["finish_reason"] in ("stop", "length")


async def test_null_content_renders_like_empty_content(client, smollm2):
    """null means no text: the model sees exactly what it sees for ""."""
    as_null = {**SMALL, "max_tokens": 8, "messages": NULL_HISTORY}
    as_empty = {**as_null, "messages": [{**m, "content": m.get("content") or ""} for m in NULL_HISTORY]}
    null_body = (await client.post("/v1/chat/completions", json=as_null)).json()
    empty_body = (await client.post("/v1/chat/completions", json=as_empty)).json()
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")  # not the prefix cache's share
    assert [null_body["usage"][k] for k in counts] == [empty_body["usage"][k] for k in counts]
    assert null_body["choices"][0]["message"] == empty_body["choices"][0]["message"]


@pytest.mark.parametrize("prompt", ["", [""]])
@pytest.mark.parametrize("stream", [False, True])
async def test_empty_prompt_is_a_400_naming_prompt(client, smollm2, prompt, stream):
    """SmolLM2 adds no BOS, so "" is zero tokens: nothing to continue from."""
    response = await client.post("/v1/completions", json={**SMALL, "prompt": prompt, "stream": stream})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value", "prompt")
    assert "must not be empty" in error["message"]
    record = await RequestRecord.objects.aget()
    assert (record.status_code, record.error_type) == (400, "invalid_value")
    await assert_still_serves(client)


async def test_empty_prompt_over_websocket(ws_chat, smollm2):
    frames = await ws_chat({**SMALL, "prompt": ""}, path="/ws/v1/completions")
    assert len(frames) == 1, frames
    error = frames[0]["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "prompt")


async def test_a_one_space_prompt_still_generates(client, smollm2):
    response = await client.post("/v1/completions", json={**SMALL, "prompt": " "})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 1


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": ""}],
        [{"role": "system", "content": ""}, {"role": "user", "content": ""}],
        [{"role": "assistant", "content": None}],
        [{"role": "user", "content": []}],
    ],
)
async def test_all_empty_messages_still_generate(client, smollm2, messages):
    """The template's own markers make the prompt non-empty."""
    response = await client.post("/v1/chat/completions", json={**SMALL, "messages": messages})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > 0
    assert engine_idle()


async def test_invalid_role_is_not_echoed(client, smollm2):
    role = "wizard-c0ffee"
    response = await client.post("/v1/chat/completions", json={**SMALL, "messages": [{"role": role, "content": "x"}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "messages[0].role")
    assert "Must be one of: system, developer, user, assistant, tool." in error["message"]
    assert role not in error["message"]
    record = await RequestRecord.objects.aget()
    assert record.error_type == "invalid_value" and role not in record.error_message


async def test_unknown_content_part_type_is_not_echoed(client, smollm2):
    parts = [{"type": "secret-part-type", "text": "x"}]
    response = await client.post(
        "/v1/chat/completions", json={**SMALL, "messages": [{"role": "user", "content": parts}]}
    )
    assert response.status_code == 400
    assert "secret-part-type" not in response.json()["error"]["message"]
    known = [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    response = await client.post(
        "/v1/chat/completions", json={**SMALL, "messages": [{"role": "user", "content": known}]}
    )
    assert response.status_code == 400 and "'image_url'" in response.json()["error"]["message"]


async def test_unknown_field_names_are_named_back_only_when_plain(client, smollm2):
    chat = {**SMALL, "messages": [{"role": "user", "content": "x"}]}
    plain = await client.post("/v1/chat/completions", json={**chat, "frobnicate": 1})
    assert plain.status_code == 400 and plain.json()["error"]["param"] == "frobnicate"
    for name in ["<b>secret-field</b>", "f" * 65]:
        for body, param in [
            ({**chat, name: 1}, None),
            ({**chat, "messages": [{"role": "user", "content": "x", name: 1}]}, "messages[0]"),
        ]:
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert (error["code"], error["param"]) == ("invalid_value", param)
            assert "Unrecognized request argument" in error["message"] and name not in error["message"]
    for body in [{**chat, "\ud800": 1}, {**chat, "messages": [{"role": "user", "content": "x", "\ud800": 1}]}]:
        # json.dumps escapes the surrogate, so the body is valid JSON, as a client would send it;
        # the parser refuses it before any field is looked at.
        response = await client.post(
            "/v1/chat/completions", content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_json", None) and "\ud800" not in error["message"]
