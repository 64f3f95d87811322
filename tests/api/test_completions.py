"""Chat and legacy completions through the real ASGI stack, on echo and on the real model."""

import pytest
from asgiref.sync import sync_to_async

from monitoring.models import RequestRecord
from serving.dispatch.embedded import engine_host
from tests.held import LONG_ECHO, HeldPost, hang_up_all, long_chat, register_long_echo, wait_until

from .sse import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

ECHO_CHAT = {"model": "echo", "messages": [{"role": "user", "content": "one two three four five"}]}


async def test_chat_completion_shape_and_usage(client, echo_model):
    response = await client.post("/v1/chat/completions", json={**ECHO_CHAT, "max_tokens": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "echo"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "one two three"}
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


async def test_max_completion_tokens_and_stop(client, echo_model):
    body = (
        await client.post("/v1/chat/completions", json={**ECHO_CHAT, "max_completion_tokens": 4, "stop": [" three"]})
    ).json()
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_streaming_chat_events(client, echo_model):
    response = await client.post(
        "/v1/chat/completions", json={**ECHO_CHAT, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(content) == "one two three four five"
    assert len([c for c in content if c]) == 5  # one event per token
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_streaming_without_usage_has_no_usage_field(client, echo_model):
    events = sse_events((await client.post("/v1/chat/completions", json={**ECHO_CHAT, "stream": True})).text)
    assert all("usage" not in e for e in events[:-1])


async def test_legacy_completion_and_stream(client, echo_model):
    body = (await client.post("/v1/completions", json={"model": "echo", "prompt": "a b c", "max_tokens": 2})).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "a b"
    assert body["usage"]["completion_tokens"] == 2
    streamed = sse_events(
        (await client.post("/v1/completions", json={"model": "echo", "prompt": ["a b c"], "stream": True})).text
    )
    assert streamed[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in streamed[:-1]) == "a b c"


async def test_legacy_completion_rejects_batches_and_echo(client, echo_model):
    batch = await client.post("/v1/completions", json={"model": "echo", "prompt": ["a", "b"]})
    assert batch.status_code == 400 and batch.json()["error"]["param"] == "prompt"
    echo = await client.post("/v1/completions", json={"model": "echo", "prompt": "a", "echo": True})
    assert echo.status_code == 400 and echo.json()["error"]["param"] == "echo"


async def test_eight_concurrent_requests_overlap(asgi_app, client, api_key):
    """Waiting for tokens must not hold Django's one sync thread: all 8 are in the engine at once.

    Each request would run for 80 s, so none ends before the others start; the clients hang
    up once all 8 are in. Were the thread held, the second could never get in.
    """
    await sync_to_async(register_long_echo)()
    await client.post("/v1/chat/completions", json=long_chat(max_tokens=1))  # load the engine
    engine = engine_host().engine_for(LONG_ECHO)
    engine.peak_in_flight = 0
    held = [HeldPost(asgi_app, "/v1/chat/completions", long_chat(), key=api_key) for _ in range(8)]
    try:
        await wait_until(lambda: engine.in_flight == 8, "all 8 requests inside the engine")
    finally:
        await hang_up_all(held)
    assert engine.in_flight == 0 and engine.peak_in_flight == 8
    statuses = [r.status_code async for r in RequestRecord.objects.filter(model_name=LONG_ECHO)]
    assert sorted(statuses) == [200] + [499] * 8  # the loading request, then 8 clients gone


async def test_one_record_per_request_whatever_the_outcome(client, echo_model):
    await client.post("/v1/chat/completions", json={**ECHO_CHAT, "max_tokens": 2})
    await client.post("/v1/chat/completions", json={**ECHO_CHAT, "stream": True})
    await client.post("/v1/chat/completions", json={**ECHO_CHAT, "max_tokens": 10_000})
    await client.post("/v1/chat/completions", json={**ECHO_CHAT, "model": "missing"})
    await client.post("/v1/chat/completions", json={**ECHO_CHAT, "temperature": -1})
    records = [r async for r in RequestRecord.objects.order_by("created_at")]
    assert [r.status_code for r in records] == [200, 200, 400, 404, 400]
    ok, streamed, overflow, missing, invalid = records
    assert (ok.prompt_tokens, ok.completion_tokens, ok.finish_reason, ok.engine) == (5, 2, "length", "echo")
    assert ok.ttft_ms is not None and ok.duration_ms >= ok.ttft_ms and ok.tokens_per_second > 0
    assert ok.api_key_id is not None and ok.worker.startswith("embedded@")
    assert streamed.stream and streamed.completion_tokens == 5 and streamed.finish_reason == "stop"
    assert overflow.error_type == "context_length_exceeded"
    assert missing.error_type == "model_not_found" and missing.model_name == ""  # a made-up name is not kept
    assert invalid.error_type == "invalid_value"
    assert len({r.request_id for r in records}) == 5


async def test_records_hold_no_prompt_text(client, echo_model):
    await client.post(
        "/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "supersecretprompt"}]}
    )
    record = await RequestRecord.objects.aget()
    assert "supersecretprompt" not in str(vars(record))


@pytest.mark.model
async def test_real_model_chat_and_stream_agree(client, smollm2):
    """At temperature 0 with a seed, streamed deltas join to the non-streamed text."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 12,
        "temperature": 0,
        "seed": 7,
    }
    whole = (await client.post("/v1/chat/completions", json=body)).json()
    events = sse_events(
        (
            await client.post(
                "/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
            )
        ).text
    )
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert whole["choices"][0]["message"]["content"] == streamed
    assert streamed.strip()
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert {k: events[-2]["usage"][k] for k in counts} == {k: whole["usage"][k] for k in counts}
    assert whole["usage"]["completion_tokens"] <= 12


@pytest.mark.model
async def test_real_model_reports_the_cached_prefix(client, smollm2):
    """A second request sharing a long prefix with the first reuses its KV, and usage says how much."""
    history = [
        {"role": "system", "content": "You are a lighthouse keeper on a remote island. " * 12},
        {"role": "user", "content": "What do you see tonight?"},
    ]
    body = {"model": "smollm2", "messages": history, "max_tokens": 4, "temperature": 0}
    first = (await client.post("/v1/chat/completions", json=body)).json()["usage"]
    follow_up = {
        **body,
        "messages": [*history[:1], {"role": "user", "content": "And in the morning?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = sse_events((await client.post("/v1/chat/completions", json=follow_up)).text)
    second = events[-2]["usage"]
    assert first["prompt_tokens_details"]["cached_tokens"] < 100 <= second["prompt_tokens_details"]["cached_tokens"]
    assert second["prompt_tokens_details"]["cached_tokens"] < second["prompt_tokens"]


@pytest.mark.model
async def test_real_model_alias_and_completion(client, smollm2):
    body = (
        await client.post(
            "/v1/completions",
            json={"model": "SmolLM2-135M-Instruct", "prompt": "The sky is", "max_tokens": 5, "temperature": 0},
        )
    ).json()
    assert body["model"] == "SmolLM2-135M-Instruct"
    assert body["usage"]["prompt_tokens"] > 0 and 0 < body["usage"]["completion_tokens"] <= 5
    assert body["choices"][0]["text"]


@pytest.mark.model
async def test_real_model_context_overflow(client, smollm2):
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2048}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    ok = await client.post("/v1/chat/completions", json={**body, "max_tokens": 2})
    assert ok.status_code == 200
