"""Tools, output formats, embeddings and tokenizing passed through to an OpenAI-compatible server.

The servers that have these (vLLM on a GPU) cannot run here, so their answers are played back
over a real socket as vLLM sends them (`replay_server`); the request side is checked on what
reached that socket.
"""

import json

import pytest

from engines.base import GenerationRequest, ModelSpec, OutputFormat, SamplingParams, ToolSpec
from engines.errors import UnsupportedParameterError
from engines.openai_client import OpenAIProxy
from engines.upstream import UpstreamEngine
from serving.outcome import OutcomeBuilder
from tests.engines.helpers import POEM, collect

from .openai_server import replay_server
from .test_upstream import replay_engine, sse, vllm_chunk

WEATHER = ToolSpec(
    name="get_weather",
    description="The weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def tool_request(**fields) -> GenerationRequest:
    return GenerationRequest(
        request_id="t", messages=POEM, sampling=SamplingParams(max_tokens=32), tools=(WEATHER,), **fields
    )


def test_body_carries_tools_tool_choice_and_the_output_format():
    proxy = OpenAIProxy("http://127.0.0.1:9/v1", model="m")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = tool_request(
        tool_choice="function",
        forced_tool="get_weather",
        parallel_tool_calls=False,
        output_format=OutputFormat(kind="json_schema", schema=schema, name="answer"),
    )
    _, body = proxy.body(request)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }


def test_a_plain_request_sends_no_tool_fields():
    _, body = OpenAIProxy("http://127.0.0.1:9/v1", model="m").body(tool_request(tool_choice="required"))
    assert body["tool_choice"] == "required" and "parallel_tool_calls" not in body
    _, plain = OpenAIProxy("http://127.0.0.1:9/v1", model="m").body(
        GenerationRequest(request_id="t", messages=POEM, sampling=SamplingParams())
    )
    assert not {"tools", "tool_choice", "response_format"} & plain.keys()


def test_a_grammar_cannot_go_upstream():
    request = GenerationRequest(
        request_id="t",
        messages=POEM,
        sampling=SamplingParams(),
        output_format=OutputFormat(kind="grammar", grammar='root ::= "a"'),
    )
    with pytest.raises(UnsupportedParameterError) as caught:
        OpenAIProxy("http://127.0.0.1:9/v1", model="m").body(request)
    assert caught.value.param == "grammar"


async def test_streamed_tool_call_deltas_come_through_as_the_server_sends_them():
    """vLLM's stream: the call's id and name first, then its arguments in fragments."""
    first = {"index": 0, "id": "chatcmpl-tool-1", "type": "function", "function": {"name": "get_weather"}}
    answer = sse(
        vllm_chunk({"role": "assistant", "content": None}),
        vllm_chunk({"tool_calls": [{**first, "function": {"name": "get_weather", "arguments": ""}}]}),
        vllm_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        vllm_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}, finish="tool_calls"),
        vllm_chunk(usage={"prompt_tokens": 30, "total_tokens": 38, "completion_tokens": 8}),
        b"[DONE]",
    )
    with replay_server(answer) as server:
        chunks = await collect(replay_engine(server), tool_request(tool_choice="required"))
        sent = server.requests[0]
    assert sent["tool_choice"] == "required" and sent["tools"][0]["function"]["name"] == "get_weather"
    pieces = [delta for chunk in chunks for delta in chunk.tool_calls]
    assert (pieces[0].id, pieces[0].name) == ("chatcmpl-tool-1", "get_weather")
    assert [p.arguments for p in pieces[1:]] == ['{"city": ', '"Paris"}']
    builder = OutcomeBuilder()
    for chunk in chunks:
        builder.add(chunk)
    outcome = builder.outcome()
    assert outcome.choices[0].finish_reason == "tool_calls"
    (call,) = outcome.choices[0].tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == ("chatcmpl-tool-1", "get_weather", {"city": "Paris"})
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (30, 8)


async def test_a_whole_message_with_tool_calls_comes_through():
    """Servers asked without streaming (`stream: false`) answer with the whole message."""
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ],
    }
    answer = json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50},
        }
    ).encode()
    with replay_server(answer) as server:
        engine = UpstreamEngine(
            ModelSpec(name="qwen", source="qwen", options={"base_url": server.base_url, "stream": False})
        )
        engine.load()
        chunks = await collect(engine, tool_request())
    calls = [delta for chunk in chunks for delta in chunk.tool_calls]
    assert [(c.call, c.id, c.arguments) for c in calls] == [
        (0, "call_a", '{"city":"Oslo"}'),
        (1, "call_b", '{"city":"Rome"}'),
    ]
    assert chunks[-1].finish_reason == "tool_calls"


async def test_embeddings_come_from_the_servers_embeddings_route():
    answer = json.dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": 0, "embedding": [0.5, -0.5]},
                {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]},
            ],
            "usage": {"prompt_tokens": 7, "total_tokens": 7},
        }
    ).encode()
    request = GenerationRequest(request_id="t", sampling=SamplingParams(), task="embed", inputs=("a b", (1, 2, 3)))
    with replay_server(answer) as server:
        chunks = await collect(replay_engine(server), request)
        sent = server.requests[0]
    assert sent == {"model": "qwen", "input": ["a b", [1, 2, 3]]}
    assert [(c.index, c.embedding) for c in chunks[:-1]] == [(0, (0.5, -0.5)), (1, (1.0, 0.0))]
    assert (chunks[-1].finish_reason, chunks[-1].prompt_tokens) == ("stop", 7)


async def test_an_openai_upstream_has_no_tokenizer_to_lend():
    with replay_server(b"{}") as server:
        engine = replay_engine(server)
        with pytest.raises(UnsupportedParameterError):
            await collect(
                engine, GenerationRequest(request_id="t", sampling=SamplingParams(), task="tokenize", prompt="hi")
            )
        assert server.requests == []


async def test_vllm_tokenizes_on_its_own_routes_under_the_server_root():
    with replay_server(json.dumps({"count": 3, "max_model_len": 2048, "tokens": [5, 6, 7]}).encode()) as server:
        proxy = OpenAIProxy(server.base_url, model="qwen")
        request = GenerationRequest(request_id="t", sampling=SamplingParams(), task="tokenize", prompt="hi there")
        chunks = [chunk async for chunk in proxy.tokenize(request)]
        sent = server.requests[0]
    assert sent == {"model": "qwen", "prompt": "hi there", "add_special_tokens": True}
    assert chunks[-1].token_ids == (5, 6, 7) and chunks[-1].prompt_tokens == 0
    with replay_server(json.dumps({"prompt": "hi there"}).encode()) as server:
        proxy = OpenAIProxy(server.base_url, model="qwen")
        request = GenerationRequest(request_id="t", sampling=SamplingParams(), task="detokenize", token_ids=(5, 6))
        chunks = [chunk async for chunk in proxy.tokenize(request)]
        assert server.requests[0] == {"model": "qwen", "tokens": [5, 6]}
    assert chunks[-1].text == "hi there"
