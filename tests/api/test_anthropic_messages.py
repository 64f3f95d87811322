"""Anthropic Messages through the real ASGI stack: shapes, stream events, stop sequences, errors in Anthropic's shape."""

import json

import httpx
import pytest
from asgiref.sync import sync_to_async

from api.anthropic.requests import generation_request, validated_body
from engines.capabilities import CAPABILITIES
from models_registry.models import ServedModel
from models_registry.services.served_models import served_model_register
from monitoring.models import RequestRecord
from tests.engines.openai_server import replay_server

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = "one two three four five"
ECHO = {"model": "echo", "max_tokens": 64, "messages": [{"role": "user", "content": WORDS}]}


def anthropic_events(text: str) -> list[tuple[str, dict]]:
    """(event name, data) of each event of an Anthropic SSE body; each event's name is its data's type."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: "), block
        name, data = event_line[len("event: ") :], json.loads(data_line[len("data: ") :])
        assert data["type"] == name, block
        events.append((name, data))
    return events


def assert_anthropic_error(response: httpx.Response, status: int, error_type: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == error_type, body
    for word in words:
        assert word in body["error"]["message"], body


async def records(**filters) -> list[RequestRecord]:
    return await sync_to_async(lambda: list(RequestRecord.objects.filter(**filters)))()


async def test_message_shape_and_usage(client, echo_model):
    response = await client.post("/v1/messages", json={**ECHO, "max_tokens": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("msg_") and body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "echo"
    assert body["content"] == [{"type": "text", "text": "one two three"}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("max_tokens", None)
    assert body["usage"] == {"input_tokens": 5, "output_tokens": 3}
    (record,) = await records(endpoint="messages")
    assert (record.status_code, record.prompt_tokens, record.completion_tokens) == (200, 5, 3)
    assert record.model_name == "echo" and record.request_id in body["id"]


async def test_system_and_content_blocks_are_the_prompt(client, echo_model):
    body = {
        **ECHO,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": " Very."}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "hello there"}]},
            {"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "text", "text": " three"}]},
        ],
        "metadata": {"user_id": "u-1"},
        "temperature": 0.5,
        "top_p": 0.9,
    }
    answer = (await client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})).json()
    assert answer["content"] == [{"type": "text", "text": "one two three"}]  # echo answers the last turn
    # Every turn is in the prompt: 3 system words, 1 + 2 + 3 in the turns.
    assert answer["usage"]["input_tokens"] == 9
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("end_turn", None)


async def test_stop_sequence_names_the_one_that_matched(client, echo_model):
    body = {**ECHO, "stop_sequences": [" nine", " three"]}
    answer = (await client.post("/v1/messages", json=body)).json()
    assert answer["content"] == [{"type": "text", "text": "one two"}]
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("stop_sequence", " three")
    unmatched = (await client.post("/v1/messages", json={**ECHO, "stop_sequences": [" nine"]})).json()
    assert (unmatched["stop_reason"], unmatched["stop_sequence"]) == ("end_turn", None)


async def test_stream_events_in_anthropic_order(client, echo_model):
    response = await client.post("/v1/messages", json={**ECHO, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = anthropic_events(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 5,  # one per token
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["stop_reason"] is None
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(delta["type"] == "text_delta" for delta in deltas)
    assert "".join(delta["text"] for delta in deltas) == WORDS
    message_delta = events[-2][1]
    assert message_delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert message_delta["usage"] == {"input_tokens": 5, "output_tokens": 5}
    (record,) = await records(endpoint="messages")
    assert record.stream and record.status_code == 200 and record.completion_tokens == 5


async def test_streamed_stop_sequence(client, echo_model):
    response = await client.post("/v1/messages", json={**ECHO, "stream": True, "stop_sequences": [" four"]})
    events = anthropic_events(response.text)
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "one two three"
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": " four"}


async def test_x_api_key_authenticates_and_bad_keys_are_authentication_errors(asgi_app, api_key, echo_model):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app), base_url="http://testserver") as anon:
        ok = await anon.post(
            "/v1/messages", json=ECHO, headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["content"][0]["text"] == WORDS
        assert_anthropic_error(await anon.post("/v1/messages", json=ECHO), 401, "authentication_error", "API key")
        wrong = await anon.post("/v1/messages", json=ECHO, headers={"x-api-key": "ipk-wrong"})
        assert_anthropic_error(wrong, 401, "authentication_error", "Incorrect")
        assert "ipk-wrong" not in wrong.text
        # The OpenAI routes take the same header.
        chat = await anon.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": ECHO["messages"], "max_tokens": 2},
            headers={"x-api-key": api_key},
        )
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "one two"
        counted = await anon.post("/v1/messages/count_tokens", json={}, headers={"x-api-key": "ipk-wrong"})
        assert_anthropic_error(counted, 401, "authentication_error")


@pytest.mark.parametrize(
    ("change", "param_word"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 1.5}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "hi"}]}, "role"),
        ({"stop_sequences": ["x"] * 17}, "stop_sequences"),
        ({"frequency_penalty": 1}, "frequency_penalty"),
        ({"tool_choice": {"type": "tool"}}, "name"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
            "tool_use",
        ),
    ],
)
async def test_invalid_bodies_are_invalid_request_errors(client, echo_model, change, param_word):
    body = {key: value for key, value in {**ECHO, **change}.items() if value is not None}
    assert_anthropic_error(await client.post("/v1/messages", json=body), 400, "invalid_request_error", param_word)


async def test_unsupported_features_are_named(client, echo_model):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    with_image = {**ECHO, "messages": [{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}]}
    assert_anthropic_error(await client.post("/v1/messages", json=with_image), 400, "invalid_request_error", "'image'")
    top_k = await client.post("/v1/messages", json={**ECHO, "top_k": 5})
    assert_anthropic_error(top_k, 400, "invalid_request_error", "top_k")
    thinking = await client.post("/v1/messages", json={**ECHO, "thinking": {"type": "enabled", "budget_tokens": 1024}})
    assert_anthropic_error(thinking, 400, "invalid_request_error", "thinking")
    effort = await client.post("/v1/messages", json={**ECHO, "output_config": {"effort": "high"}})
    assert_anthropic_error(effort, 400, "invalid_request_error", "effort")
    prefill = {**ECHO, "messages": [*ECHO["messages"], {"role": "assistant", "content": "one"}]}
    assert_anthropic_error(await client.post("/v1/messages", json=prefill), 400, "invalid_request_error", "prefill")
    # Prompt-caching hints are accepted: prefixes are cached without them.
    cached = {
        **ECHO,
        "cache_control": {"type": "ephemeral"},
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "disabled"},
    }
    accepted = await client.post("/v1/messages", json=cached)
    assert accepted.status_code == 200, accepted.text
    # Nothing reached an engine, and each refusal is one record.
    refused = await records(endpoint="messages", status_code=400)
    assert len(refused) == 5 and {r.error_type for r in refused} == {"unsupported_parameter"}


def test_tool_use_history_becomes_openai_chat_messages():
    """tool_use blocks are assistant tool calls, tool_result blocks tool messages, in the order written."""
    body = validated_body(
        {
            "model": "m",
            "max_tokens": 8,
            "system": "Use tools.",
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            "messages": [
                {"role": "user", "content": "Weather in Paris and Oslo?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "content": [{"type": "text", "text": "no data"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "Thanks!"},
                    ],
                },
            ],
        }
    )
    request = generation_request(body, ServedModel(name="m", default_params={}), "r1", tenant="1")
    call = {"type": "function", "function": {"name": "get_weather"}}
    assert request.messages == (
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {**call, "id": "toolu_1", "function": {**call["function"], "arguments": '{"city": "Paris"}'}},
                {**call, "id": "toolu_2", "function": {**call["function"], "arguments": '{"city": "Oslo"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no data"},
        {"role": "user", "content": "Thanks!"},
    )
    assert (request.tool_choice, request.forced_tool, request.parallel_tool_calls) == ("function", "get_weather", False)
    assert request.tools[0].name == "get_weather" and request.tools[0].parameters == {"type": "object"}


async def test_unknown_model_method_and_path_are_anthropic_errors(client, echo_model):
    missing = await client.post("/v1/messages", json={**ECHO, "model": "nope"})
    assert_anthropic_error(missing, 404, "not_found_error", "nope")
    assert_anthropic_error(await client.get("/v1/messages"), 405, "invalid_request_error", "GET")
    assert_anthropic_error(await client.post("/v1/messages/batches", json={}), 404, "not_found_error")
    bad_json = await client.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
    assert_anthropic_error(bad_json, 400, "invalid_request_error", "JSON")
    overflow = await client.post("/v1/messages", json={**ECHO, "max_tokens": 4096})
    assert_anthropic_error(overflow, 400, "invalid_request_error", "maximum context length")
    # The OpenAI routes keep OpenAI's shape.
    openai = await client.post("/v1/chat/completions", json={"model": "nope", "messages": ECHO["messages"]})
    assert openai.status_code == 404 and openai.json()["error"]["code"] == "model_not_found"


async def test_a_body_over_the_limit_is_request_too_large(client, echo_model, settings):
    settings.MAX_REQUEST_BODY_BYTES = 1024
    big = {**ECHO, "messages": [{"role": "user", "content": "word " * 400}]}
    assert_anthropic_error(await client.post("/v1/messages", json=big), 413, "request_too_large", "1024")
    openai = await client.post("/v1/chat/completions", json={"model": "echo", "messages": big["messages"]})
    assert openai.status_code == 413 and openai.json()["error"]["code"] == "request_too_large"


WEATHER_TOOL = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
# What echo says back: some text, then a call in the generic tool prompt's tags (engines.tool_calls).
CALLING = 'Let me look. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
echo_tools = pytest.mark.skipif("tools" not in CAPABILITIES["echo"], reason="needs tools on the echo engine")


@echo_tools
async def test_a_tool_call_is_a_tool_use_block(client, echo_model):
    body = {**ECHO, "tools": [WEATHER_TOOL], "messages": [{"role": "user", "content": CALLING}]}
    answer = (await client.post("/v1/messages", json=body)).json()
    text, call = answer["content"]
    assert text == {"type": "text", "text": "Let me look. "}
    assert call["type"] == "tool_use" and call["id"].startswith("toolu_")
    assert (call["name"], call["input"]) == ("get_weather", {"city": "Paris"})
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("tool_use", None)

    events = anthropic_events((await client.post("/v1/messages", json={**body, "stream": True})).text)
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert starts[0] == {"type": "text", "text": ""}
    assert starts[1] == {"type": "tool_use", "id": starts[1]["id"], "name": "get_weather", "input": {}}
    fragments = [
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta"
    ]
    assert all(
        data["index"] == 1 for name, data in events if name == "content_block_delta" and "partial_json" in data["delta"]
    )
    assert json.loads("".join(fragments)) == {"city": "Paris"}
    stops = [data["index"] for name, data in events if name == "content_block_stop"]
    assert stops == [0, 1]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


@echo_tools
async def test_a_tool_result_round_trip_reaches_the_engine(client, echo_model):
    body = {
        **ECHO,
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": CALLING},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "sunny and warm"}],
            },
        ],
    }
    answer = (await client.post("/v1/messages", json=body)).json()
    # Echo answers the last message, which is the tool's result.
    assert answer["content"] == [{"type": "text", "text": "sunny and warm"}] and answer["stop_reason"] == "end_turn"


def sse(*events) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def vllm_chunk(delta=None, finish=None, **extra) -> dict:
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}]
    )
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "qwen", "choices": choices}


async def upstream_model(base_url: str):
    return await sync_to_async(served_model_register)(
        name="qwen", source="qwen", engine="upstream", context_length=2048, engine_options={"base_url": base_url}
    )


TOOL_HISTORY = [
    {"role": "user", "content": "weather?"},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}],
    },
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sun"}]},
]


async def test_tools_and_tool_history_on_an_engine_without_tools_are_refused(client, gguf_path):
    """The mlx engine has no tools: both a tool offer and a tool_use history are 400s naming it, before any load."""
    await sync_to_async(served_model_register)(name="smol-mlx", source=gguf_path, engine="mlx", context_length=2048)
    offered = await client.post("/v1/messages", json={**ECHO, "model": "smol-mlx", "tools": [WEATHER_TOOL]})
    replayed = await client.post("/v1/messages", json={**ECHO, "model": "smol-mlx", "messages": TOOL_HISTORY})
    for refused in (offered, replayed):
        assert_anthropic_error(refused, 400, "invalid_request_error", "'tools'", "mlx")


async def test_tools_pass_through_an_upstream_and_its_calls_come_back_as_tool_use(client):
    """Anthropic tools and tool history reach a vLLM upstream as OpenAI's; its streamed call is a tool_use block."""
    call = {"index": 0, "id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    answer = sse(
        vllm_chunk({"role": "assistant", "tool_calls": [call]}),
        vllm_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        vllm_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Rome"}'}}]}, finish="tool_calls"),
        b"[DONE]",
    )
    with replay_server(answer) as server:
        await upstream_model(server.base_url)
        body = {**ECHO, "model": "qwen", "tools": [WEATHER_TOOL], "messages": TOOL_HISTORY, "stream": True}
        events = anthropic_events((await client.post("/v1/messages", json=body)).text)
        sent = server.requests[0]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "", "parameters": WEATHER_TOOL["input_schema"]},
        }
    ]
    assert sent["messages"][1]["tool_calls"][0]["id"] == "toolu_1"
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sun"}
    start = next(data["content_block"] for name, data in events if name == "content_block_start")
    assert start == {"type": "tool_use", "id": "toolu_7", "name": "get_weather", "input": {}}
    fragments = [data["delta"]["partial_json"] for name, data in events if name == "content_block_delta"]
    assert "".join(fragments) == '{"city": "Rome"}'
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_an_error_after_the_first_event_is_an_in_band_error_event(client):
    """A vLLM upstream that fails midway: the stream ends with Anthropic's `event: error`."""
    error = {"error": {"message": "the GPU fell over", "type": "InternalServerError", "param": None, "code": 500}}
    with replay_server(sse(vllm_chunk({"role": "assistant", "content": "Hello"}), error)) as server:
        await upstream_model(server.base_url)
        response = await client.post("/v1/messages", json={**ECHO, "model": "qwen", "stream": True})
    assert response.status_code == 200
    events = anthropic_events(response.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "error",
    ]
    assert events[-1][1]["error"]["type"] == "api_error" and "GPU" in events[-1][1]["error"]["message"]
    (record,) = await records(endpoint="messages")
    assert record.status_code == 500 and record.stream


async def test_an_upstream_that_names_its_stop_reports_stop_sequence(client):
    """vLLM says which stop string matched (`stop_reason`); the message reports it."""
    answer = sse(
        vllm_chunk({"role": "assistant", "content": "Hello"}),
        vllm_chunk({"content": ""}, finish="stop", stop_reason="\n\n"),
        {**vllm_chunk(), "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}},
        b"[DONE]",
    )
    with replay_server(answer) as server:
        await upstream_model(server.base_url)
        body = (await client.post("/v1/messages", json={**ECHO, "model": "qwen", "stop_sequences": ["\n\n"]})).json()
        sent = server.requests[0]
    assert sent["stop"] == ["\n\n"] and sent["max_tokens"] == 64
    assert body["content"] == [{"type": "text", "text": "Hello"}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "\n\n")
    assert body["usage"] == {"input_tokens": 7, "output_tokens": 2}


# --- The real model ------------------------------------------------------------------------------


@pytest.mark.model
async def test_smollm2_answers_and_streams_the_same_text(client, smollm2):
    body = {
        "model": "smollm2",
        "max_tokens": 12,
        "temperature": 0,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Name a colour."}],
    }
    whole = (await client.post("/v1/messages", json=body)).json()
    assert whole["content"][0]["type"] == "text" and whole["content"][0]["text"].strip()
    assert whole["stop_reason"] in ("end_turn", "max_tokens") and whole["usage"]["output_tokens"] <= 12
    prompt = whole["usage"]["input_tokens"] + whole["usage"].get("cache_read_input_tokens", 0)
    assert prompt > 10
    events = anthropic_events((await client.post("/v1/messages", json={**body, "stream": True})).text)
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == whole["content"][0]["text"]
    usage = events[-2][1]["usage"]
    assert usage["input_tokens"] + usage.get("cache_read_input_tokens", 0) == prompt
    assert usage["output_tokens"] == whole["usage"]["output_tokens"]


@pytest.mark.model
@pytest.mark.skipif("tokenize" not in CAPABILITIES["llama_cpp"], reason="needs the llama.cpp tokenize task")
async def test_count_tokens_matches_the_prompt_a_message_uses(client, smollm2):
    body = {"model": "smollm2", "system": "You are terse.", "messages": [{"role": "user", "content": "Name a colour."}]}
    counted = await client.post("/v1/messages/count_tokens", json=body)
    assert counted.status_code == 200, counted.text
    assert set(counted.json()) == {"input_tokens"}
    answer = (await client.post("/v1/messages", json={**body, "max_tokens": 2})).json()
    usage = answer["usage"]
    assert counted.json()["input_tokens"] == usage["input_tokens"] + usage.get("cache_read_input_tokens", 0)
    (record,) = await records(endpoint="messages.count_tokens")
    assert record.status_code == 200 and record.prompt_tokens == counted.json()["input_tokens"]
