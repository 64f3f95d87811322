"""Tools on /v1/chat/completions through the real ASGI stack: calls whole and streamed, history, 400s.

The echo engine repeats the last message, so a call written there comes back through the same
parsing a model's output goes through: the exact shapes are checked on it. SmolLM2 shows the
real model: forced calls (grammar-constrained) always validate against the parameters.
"""

import json

import jsonschema
import jsonschema_rs
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from api.openai.schema import CHAT_CHUNK

from .sse import sse_events
from .test_auth_and_errors import assert_openai_error

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city's name."},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
TOOLS = [WEATHER, TIME]
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
CALLED = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
ECHOED_CALL = (
    'One moment. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}</tool_call>'
)


@pytest.fixture
async def validator(client):
    """Validates a body against a component of the served OpenAPI document."""
    components = (await client.get("/v1/openapi.json")).json()["components"]

    def validate(ref: dict, instance) -> None:
        jsonschema_rs.validator_for({**ref, "components": components}).validate(instance)

    return validate


def echo_body(**extra):
    return {"model": "echo", "messages": [{"role": "user", "content": ECHOED_CALL}], "tools": TOOLS, **extra}


def assemble(events: list) -> tuple[dict, str | None, str]:
    """A streamed answer's calls ({index: {id, name, arguments}}), finish reason and text, as SDKs assemble them."""
    calls, finish, text = {}, None, ""
    for event in events[:-1]:
        for choice in event["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for piece in delta.get("tool_calls", ()):
                call = calls.setdefault(piece["index"], {"id": None, "name": None, "arguments": ""})
                if "id" in piece:
                    assert call["id"] is None, "only a call's first delta carries its id"
                    call["id"], call["name"] = piece["id"], piece["function"]["name"]
                call["arguments"] += piece["function"].get("arguments", "")
            finish = choice["finish_reason"] or finish
    return calls, finish, text


# --- Exact shapes, on echo ------------------------------------------------------------------------


async def test_a_call_comes_back_as_tool_calls_in_the_message(client, echo_model, validator):
    response = await client.post("/v1/chat/completions", json=echo_body())
    assert response.status_code == 200, response.text
    body = response.json()
    validator({"$ref": "#/components/schemas/ChatCompletion"}, body)
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "One moment. "
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}


async def test_only_a_call_means_null_content(client, echo_model):
    only = ECHOED_CALL.removeprefix("One moment. ")
    body = echo_body(messages=[{"role": "user", "content": only}])
    message = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]["message"]
    assert message["content"] is None and message["tool_calls"][0]["function"]["name"] == "get_weather"


async def test_streamed_call_deltas_are_openais(client, echo_model, validator):
    response = await client.post("/v1/chat/completions", json=echo_body(stream=True))
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        validator(CHAT_CHUNK, event)
    pieces = [p for e in events[:-1] for c in e["choices"] for p in c["delta"].get("tool_calls", ())]
    first, *rest = pieces
    assert first == {
        "index": 0,
        "id": first["id"],
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert rest and all(set(p) == {"index", "function"} and set(p["function"]) == {"arguments"} for p in rest)
    calls, finish, text = assemble(events)
    assert finish == "tool_calls" and text == "One moment. "
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}


async def test_tool_choice_none_leaves_calls_as_text(client, echo_model):
    body = echo_body(tool_choice="none")
    choice = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": ECHOED_CALL}
    assert choice["finish_reason"] == "stop"


async def test_the_websocket_streams_the_same_call_deltas(asgi_app, api_key, echo_model):
    socket = WebsocketCommunicator(
        asgi_app, "/ws/v1/chat/completions", headers=[(b"authorization", f"Bearer {api_key}".encode())]
    )
    assert (await socket.connect(timeout=60))[0]
    try:
        await socket.send_json_to({"type": "request", "body": echo_body()})
        frames = []
        while (text := await socket.receive_from(timeout=60)) != "[DONE]":
            frames.append(json.loads(text))
    finally:
        await socket.disconnect(timeout=60)
        await sync_to_async(connections.close_all)()
    calls, finish, _ = assemble([*frames, "[DONE]"])
    assert finish == "tool_calls" and calls[0]["name"] == "get_weather"


async def test_echo_cannot_force_a_call(client, echo_model):
    body = echo_body(tool_choice="required")
    error = assert_openai_error(
        await client.post("/v1/chat/completions", json=body), 400, "unsupported_parameter", "tool_choice"
    )
    assert "echo" in error["message"]


# --- 400s ------------------------------------------------------------------------------------------


def _bad_parameters(value):
    return [{"type": "function", "function": {"name": "f", "parameters": value}}]


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice"),
        ({"tools": _bad_parameters({"type": "string"})}, "tools[0].function.parameters"),
        ({"tools": _bad_parameters([1])}, "tools[0].function.parameters"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools[0].type"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "colour": "red"}}]}, "tools[0].function.colour"),
        ({"messages": [*ASK, {"role": "tool", "content": "18 C"}]}, "messages[1].tool_call_id"),
        ({"messages": [*ASK, {"role": "user", "content": "x", "tool_call_id": "c"}]}, "messages[1].tool_call_id"),
        ({"messages": [{**ASK[0], "tool_calls": [CALLED]}]}, "messages[0].tool_calls"),
        (
            {
                "messages": [
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
                ]
            },
            "messages[0].tool_calls[0].function",
        ),
    ],
)
async def test_bad_tool_fields_are_400_naming_the_param(client, echo_model, extra, param):
    body = {"model": "echo", "messages": ASK, **extra}
    assert_openai_error(await client.post("/v1/chat/completions", json=body), 400, "invalid_value", param)


async def test_an_unknown_forced_function_is_named_in_the_error(client, echo_model):
    body = {
        "model": "echo",
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "nope"}},
    }
    error = assert_openai_error(
        await client.post("/v1/chat/completions", json=body), 400, "invalid_value", "tool_choice"
    )
    assert "'nope'" in error["message"]


# --- The real model -------------------------------------------------------------------------------


def check_call(call: dict, allowed=("get_weather", "get_time")) -> None:
    assert call["id"].startswith("call_") and call["type"] == "function"
    name = call["function"]["name"]
    assert name in allowed
    jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMETERS[name])


@pytest.mark.model
async def test_tools_are_in_the_prompt_and_auto_answers_validly(client, smollm2, validator):
    plain = {"model": "smollm2", "messages": ASK, "max_tokens": 40, "temperature": 0}
    without = (await client.post("/v1/chat/completions", json=plain)).json()
    response = await client.post("/v1/chat/completions", json={**plain, "tools": TOOLS})
    assert response.status_code == 200, response.text
    offered = response.json()
    validator({"$ref": "#/components/schemas/ChatCompletion"}, offered)
    # The generic tool prompt lists both functions in the system message.
    assert offered["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"] + 100
    (choice,) = offered["choices"]
    for call in choice["message"].get("tool_calls", ()):
        assert call["function"]["name"] in PARAMETERS
    assert choice["finish_reason"] in ("stop", "length", "tool_calls")


@pytest.mark.model
@pytest.mark.parametrize("seed", [1, 2])
async def test_required_forces_a_call_whose_arguments_validate(client, smollm2, seed):
    body = {"model": "smollm2", "messages": ASK, "tools": TOOLS, "tool_choice": "required", "seed": seed}
    response = await client.post("/v1/chat/completions", json={**body, "temperature": 1.0, "max_tokens": 150})
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    check_call(call)


@pytest.mark.model
async def test_a_named_function_streams_its_deltas(client, smollm2, validator):
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "What time is it in Tokyo?"}],
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        "max_tokens": 200,
        "temperature": 0,
        "stream": True,
    }
    events = sse_events((await client.post("/v1/chat/completions", json=body)).text)
    for event in events[:-1]:
        validator(CHAT_CHUNK, event)
    pieces = [p for e in events[:-1] for c in e["choices"] for p in c["delta"].get("tool_calls", ())]
    assert pieces[0]["function"] == {"name": "get_time", "arguments": ""} and "id" in pieces[0]
    assert len(pieces) > 2, "the arguments arrive in fragments as they are generated"
    calls, finish, text = assemble(events)
    assert finish == "tool_calls" and text == ""
    check_call({"id": calls[0]["id"], "type": "function", "function": calls[0]}, allowed=("get_time",))


@pytest.mark.model
async def test_a_tool_result_round_trip_gets_an_answer(client, smollm2):
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"temperature": 18, "sky": "sunny"}'},
    ]
    body = {"model": "smollm2", "messages": history, "tools": TOOLS, "max_tokens": 40, "temperature": 0}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] or choice["message"].get("tool_calls")
    # The call and its result reached the prompt: longer than the question alone with the same tools.
    alone = await client.post("/v1/chat/completions", json={**body, "messages": ASK})
    assert response.json()["usage"]["prompt_tokens"] > alone.json()["usage"]["prompt_tokens"] + 20
