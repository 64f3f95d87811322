"""`/v1/responses` through the real ASGI stack: shapes, streaming events, the store, chaining, refusals."""

import datetime as dt
import io
import json

import httpx
import jsonschema
import jsonschema_rs
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from api.models import StoredResponse
from api.openai.responses.format import EventWriter, ResponseBuilder
from api.openai.responses.schema import EVENT, RESPONSE
from api.services.stored_responses import stored_responses_prune
from engines.base import Chunk
from engines.capabilities import CAPABILITIES
from models_registry.services.api_keys import api_key_issue
from monitoring.models import RequestRecord
from serving.errors import ErrorInfo

from .sse import named_sse_events

pytestmark = pytest.mark.django_db(transaction=True)

ECHO = {"model": "echo", "input": "one two three four five"}
STREAM_TEXT_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 5,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def assert_error(response: httpx.Response, status: int, code: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert error["message"]


@pytest.fixture
async def other_client(asgi_app, client, transactional_db):
    """A client with a second key: it must not see the first key's responses."""
    plaintext = (await sync_to_async(api_key_issue)(name="other")).plaintext
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi_app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {plaintext}"},
        timeout=60,
    ) as c:
        yield c


@pytest.fixture
async def validator(client):
    """Validates a body against a component of the served OpenAPI document."""
    components = (await client.get("/v1/openapi.json")).json()["components"]

    def validate(schema: dict, body: dict) -> None:
        jsonschema_rs.validator_for({**schema, "components": components}).validate(body)

    return validate


async def test_response_shape_usage_and_echoed_settings(client, echo_model, validator):
    body = {**ECHO, "instructions": "be brief", "temperature": 0.5, "metadata": {"run": "7"}}
    response = await client.post("/v1/responses", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    validator(RESPONSE, answer)
    assert answer["id"].startswith("resp_") and answer["object"] == "response"
    assert (answer["status"], answer["error"], answer["incomplete_details"]) == ("completed", None, None)
    assert (answer["model"], answer["instructions"], answer["temperature"]) == ("echo", "be brief", 0.5)
    assert answer["metadata"] == {"run": "7"} and answer["store"] is True
    assert answer["text"] == {"format": {"type": "text"}} and answer["tools"] == [] and answer["tool_choice"] == "auto"
    [message] = answer["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_")
    assert (message["role"], message["status"]) == ("assistant", "completed")
    assert message["content"] == [
        {"type": "output_text", "text": "one two three four five", "annotations": [], "logprobs": []}
    ]
    # The echo engine counts every message's words: the instructions are the system message.
    assert answer["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 12,
    }


async def test_max_output_tokens_makes_an_incomplete_response(client, echo_model):
    answer = (await client.post("/v1/responses", json={**ECHO, "max_output_tokens": 3})).json()
    assert answer["status"] == "incomplete" and answer["incomplete_details"] == {"reason": "max_output_tokens"}
    assert answer["max_output_tokens"] == 3
    assert answer["output"][0]["status"] == "incomplete"
    assert answer["output"][0]["content"][0]["text"] == "one two three"


async def test_input_items_with_text_parts_become_chat_messages(client, echo_model):
    items = [
        {"role": "developer", "content": "rules here"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "reply", "annotations": []}]},
        {"role": "user", "content": [{"type": "input_text", "text": "last "}, {"type": "input_text", "text": "words"}]},
    ]
    answer = (await client.post("/v1/responses", json={"model": "echo", "input": items})).json()
    assert answer["output"][0]["content"][0]["text"] == "last words"
    assert answer["usage"]["input_tokens"] == 6


async def test_streamed_events_in_the_documented_order(client, echo_model, validator):
    response = await client.post("/v1/responses", json={**ECHO, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = named_sse_events(response.text)
    assert [name for name, _ in events] == STREAM_TEXT_ORDER
    for name, event in events:
        validator(EVENT, event)
        assert event["type"] == name
    assert [event["sequence_number"] for _, event in events] == list(range(len(events)))
    created, completed = events[0][1]["response"], events[-1][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert created["id"] == completed["id"] and completed["status"] == "completed"
    deltas = [event["delta"] for name, event in events if name == "response.output_text.delta"]
    assert "".join(deltas) == "one two three four five"
    item_id = events[2][1]["item"]["id"]
    assert all(event.get("item_id", item_id) == item_id for _, event in events[2:-1])
    assert events[-2][1]["item"] == completed["output"][0]
    assert completed["output"][0]["content"][0]["text"] == "one two three four five"
    assert completed["usage"]["output_tokens"] == 5


async def test_streamed_incomplete_ends_with_response_incomplete(client, echo_model):
    events = named_sse_events(
        (await client.post("/v1/responses", json={**ECHO, "stream": True, "max_output_tokens": 2})).text
    )
    name, event = events[-1]
    assert name == "response.incomplete" and event["response"]["incomplete_details"]["reason"] == "max_output_tokens"
    assert events[-2][1]["item"]["status"] == "incomplete"


async def test_stored_response_is_read_and_deleted_by_its_key_only(client, other_client, echo_model):
    answer = (await client.post("/v1/responses", json=ECHO)).json()
    path = f"/v1/responses/{answer['id']}"
    got = await client.get(path)
    assert got.status_code == 200 and got.json() == answer
    assert_error(await other_client.get(path), 404, "not_found", None)
    assert_error(await other_client.delete(path), 404, "not_found", None)
    deleted = await client.delete(path)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": answer["id"], "object": "response.deleted", "deleted": True}
    assert_error(await client.get(path), 404, "not_found", None)
    assert_error(await client.delete(path), 404, "not_found", None)


async def test_a_response_past_its_retention_is_gone_and_the_prune_deletes_only_those(client, echo_model, settings):
    settings.RESPONSE_RETENTION_DAYS = 30
    old, fresh = [(await client.post("/v1/responses", json=ECHO)).json()["id"] for _ in range(2)]
    await StoredResponse.objects.filter(pk=old).aupdate(created_at=timezone.now() - dt.timedelta(days=31))
    for method, path in [("GET", ""), ("GET", "/input_items"), ("DELETE", "")]:
        assert_error(await client.request(method, f"/v1/responses/{old}{path}"), 404, "not_found", None)
    continued = {**ECHO, "previous_response_id": old}
    assert_error(await client.post("/v1/responses", json=continued), 404, "not_found", "previous_response_id")
    assert (await client.get(f"/v1/responses/{fresh}")).status_code == 200

    settings.RESPONSE_RETENTION_DAYS = 0  # forever: the old one is served again, and nothing is pruned
    assert (await client.get(f"/v1/responses/{old}")).status_code == 200
    assert await sync_to_async(stored_responses_prune)() == 0
    settings.RESPONSE_RETENTION_DAYS = 30
    said = io.StringIO()
    await sync_to_async(call_command)("prune_stored_responses", stdout=said)
    assert said.getvalue().strip() == "Deleted 1 stored responses older than 30 days."
    assert [r.pk async for r in StoredResponse.objects.all()] == [fresh]


async def test_streamed_response_is_stored_and_store_false_is_not(client, echo_model):
    events = named_sse_events((await client.post("/v1/responses", json={**ECHO, "stream": True})).text)
    completed = events[-1][1]["response"]
    assert (await client.get(f"/v1/responses/{completed['id']}")).json() == completed
    unstored = (await client.post("/v1/responses", json={**ECHO, "store": False})).json()
    assert unstored["store"] is False
    assert_error(await client.get(f"/v1/responses/{unstored['id']}"), 404, "not_found", None)


async def test_previous_response_id_continues_the_conversation(client, other_client, echo_model):
    first = (await client.post("/v1/responses", json={"model": "echo", "input": "a b c", "instructions": "x"})).json()
    second = (
        await client.post("/v1/responses", json={"model": "echo", "input": "d e", "previous_response_id": first["id"]})
    ).json()
    assert second["previous_response_id"] == first["id"] and second["instructions"] is None
    assert second["output"][0]["content"][0]["text"] == "d e"
    # The first input and output, then this input; the first request's instructions are not carried over.
    assert second["usage"]["input_tokens"] == 3 + 3 + 2
    third = named_sse_events(
        (
            await client.post(
                "/v1/responses",
                json={"model": "echo", "input": "f", "previous_response_id": second["id"], "stream": True},
            )
        ).text
    )[-1][1]["response"]
    assert third["usage"]["input_tokens"] == 3 + 3 + 2 + 2 + 1

    items = (await client.get(f"/v1/responses/{third['id']}/input_items", params={"order": "asc"})).json()
    texts = [item["content"][0]["text"] for item in items["data"]]
    assert texts == ["a b c", "a b c", "d e", "d e", "f"]
    assert [item["role"] for item in items["data"]] == ["user", "assistant", "user", "assistant", "user"]
    newest = (await client.get(f"/v1/responses/{third['id']}/input_items", params={"limit": 2})).json()
    assert [item["content"][0]["text"] for item in newest["data"]] == ["f", "d e"] and newest["has_more"] is True
    assert newest["first_id"] == newest["data"][0]["id"]

    missing = {"model": "echo", "input": "g", "previous_response_id": "resp_nothing"}
    assert_error(await client.post("/v1/responses", json=missing), 404, "not_found", "previous_response_id")
    theirs = {**missing, "previous_response_id": first["id"]}
    assert_error(await other_client.post("/v1/responses", json=theirs), 404, "not_found", "previous_response_id")


@pytest.mark.parametrize(
    "extra, code, param",
    [
        ({"reasoning": {"effort": "high"}}, "unsupported_parameter", "reasoning"),
        ({"background": True}, "unsupported_parameter", "background"),
        ({"include": ["message.output_text.logprobs"]}, "unsupported_parameter", "include"),
        ({"tools": [{"type": "web_search"}]}, "unsupported_parameter", "tools[0]"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}},
            "unsupported_parameter",
            "text.format",
        ),
        ({"text": {"format": {"type": "json_object"}}}, "unsupported_parameter", "text.format"),
        ({"text": {"format": {"type": "yaml"}}}, "invalid_value", "text.format"),
        ({"tool_choice": "required"}, "invalid_value", "tool_choice"),
        ({"tools": [{"type": "function", "name": "no spaces"}]}, "invalid_value", "tools[0].name"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "unsupported_parameter",
            "input[0].content[0]",
        ),
        ({"input": [{"type": "reasoning", "summary": []}]}, "unsupported_parameter", "input[0].type"),
        ({"input": [{"role": "robot", "content": "hi"}]}, "invalid_value", "input[0].role"),
        ({"input": []}, "invalid_value", "input"),
        ({"input": 7}, "invalid_value", "input"),
        ({"max_output_tokens": 0}, "invalid_value", "max_output_tokens"),
        ({"frequency_penalty": 1}, "invalid_value", "frequency_penalty"),
        ({"model": "missing"}, "model_not_found", "model"),
    ],
)
async def test_bad_or_unsupported_requests_are_4xx_naming_the_parameter(client, echo_model, extra, code, param):
    response = await client.post("/v1/responses", json={**ECHO, **extra})
    assert_error(response, 404 if code == "model_not_found" else 400, code, param)


@pytest.mark.skipif("tools" in CAPABILITIES["echo"], reason="the echo engine has tools")
@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [{"type": "function", "name": "f"}]},
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]},
    ],
)
async def test_tools_on_an_engine_without_them_are_400(client, echo_model, extra):
    assert_error(await client.post("/v1/responses", json={**ECHO, **extra}), 400, "unsupported_parameter", "tools")


async def test_keys_bodies_and_methods_are_checked_as_on_every_route(asgi_app, client, echo_model):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi_app), base_url="http://testserver"
    ) as anonymous:
        for answer in (await anonymous.post("/v1/responses", json=ECHO), await anonymous.get("/v1/responses/resp_x")):
            assert_error(answer, 401, "invalid_api_key", None)
            assert answer.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    form = await client.post("/v1/responses", content=b"input=hi", headers={"Content-Type": "text/plain"})
    assert_error(form, 415, "unsupported_media_type", None)
    broken = await client.post("/v1/responses", content=b"{", headers={"Content-Type": "application/json"})
    assert_error(broken, 400, "invalid_json", None)
    assert_error(await client.get("/v1/responses"), 405, "method_not_allowed", None)
    assert_error(await client.post("/v1/responses/resp_x"), 405, "method_not_allowed", None)
    assert_error(
        await client.get("/v1/responses/resp_x/input_items", params={"limit": 0}), 400, "invalid_value", "limit"
    )


async def test_one_record_per_request_whatever_the_outcome(client, echo_model):
    await client.post("/v1/responses", json={**ECHO, "max_output_tokens": 2})
    await client.post("/v1/responses", json={**ECHO, "stream": True})
    await client.post("/v1/responses", json={**ECHO, "reasoning": {"effort": "low"}})
    await client.post("/v1/responses", json={**ECHO, "model": "missing"})
    await client.get("/v1/responses/resp_none")  # reading the store is not a generation: no record
    records = [r async for r in RequestRecord.objects.order_by("created_at")]
    assert [(r.endpoint, r.status_code) for r in records] == [("responses", s) for s in (200, 200, 400, 404)]
    ok, streamed = records[:2]
    assert (ok.prompt_tokens, ok.completion_tokens, ok.finish_reason, ok.engine) == (5, 2, "length", "echo")
    assert streamed.stream and streamed.completion_tokens == 5 and streamed.finish_reason == "stop"
    assert records[2].error_type == "unsupported_parameter"


@pytest.mark.model
async def test_real_model_response_and_stream_agree(client, smollm2, validator):
    body = {"model": "smollm2", "input": "Name a colour.", "max_output_tokens": 12, "temperature": 0}
    answer = (await client.post("/v1/responses", json=body)).json()
    validator(RESPONSE, answer)
    text = answer["output"][0]["content"][0]["text"]
    assert text.strip() and answer["usage"]["output_tokens"] > 0 and answer["usage"]["input_tokens"] > 5
    events = named_sse_events((await client.post("/v1/responses", json={**body, "stream": True})).text)
    deltas = "".join(event["delta"] for name, event in events if name == "response.output_text.delta")
    assert deltas == text == events[-1][1]["response"]["output"][0]["content"][0]["text"]


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
ECHOED_CALL = 'Checking. <tool_call> {"name": "get_weather", "arguments": {"city": "Paris"}} </tool_call>'


@pytest.mark.skipif("tools" not in CAPABILITIES["echo"], reason="tools are not merged yet")
async def test_a_call_in_the_text_becomes_a_function_call_item_after_the_message(client, echo_model):
    """The echo engine parses a call out of the text it echoes: a message, then a function_call item."""
    body = {"model": "echo", "input": ECHOED_CALL, "tools": [WEATHER]}
    answer = (await client.post("/v1/responses", json=body)).json()
    message, call = answer["output"]
    assert message["type"] == "message" and message["content"][0]["text"].strip() == "Checking."
    assert (call["type"], call["name"], call["status"]) == ("function_call", "get_weather", "completed")
    assert json.loads(call["arguments"]) == {"city": "Paris"} and call["call_id"] and call["id"].startswith("fc_")
    assert answer["status"] == "completed"

    events = named_sse_events((await client.post("/v1/responses", json={**body, "stream": True})).text)
    names = [name for name, _ in events]
    first_call = names.index("response.output_item.added", names.index("response.output_item.done"))
    assert names[first_call - 3 : first_call] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    added = events[first_call][1]
    assert added["output_index"] == 1 and added["item"]["type"] == "function_call"
    assert added["item"]["status"] == "in_progress" and added["item"]["name"] == "get_weather"
    pieces = [event["delta"] for name, event in events if name == "response.function_call_arguments.delta"]
    done = [event for name, event in events if name == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0]["arguments"] == "".join(pieces) and json.loads(done[0]["arguments"])
    assert names[-2:] == ["response.output_item.done", "response.completed"]
    completed = events[-1][1]["response"]
    assert [item["type"] for item in completed["output"]] == ["message", "function_call"]
    assert completed["output"][1] == events[-2][1]["item"]

    # The call and its result, sent back as items, are the conversation's tool turn.
    follow = {
        "model": "echo",
        "previous_response_id": answer["id"],
        "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny and warm"}],
        "tools": [WEATHER],
    }
    reply = (await client.post("/v1/responses", json=follow)).json()
    assert reply["output"][0]["content"][0]["text"] == "Sunny and warm"


# --- Once tools and structured output are merged (their engine capability turns these on) ---

needs_tools = pytest.mark.skipif("tools" not in CAPABILITIES["llama_cpp"], reason="tools are not merged yet")
needs_format = pytest.mark.skipif(
    "response_format" not in CAPABILITIES["llama_cpp"], reason="structured output is not merged yet"
)


@pytest.mark.model
@needs_tools
async def test_forced_function_call_is_an_output_item_and_streams_its_arguments(client, smollm2):
    body = {
        "model": "smollm2",
        "input": "What is the weather in Paris?",
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "temperature": 0,
    }
    answer = (await client.post("/v1/responses", json=body)).json()
    calls = [item for item in answer["output"] if item["type"] == "function_call"]
    assert calls and calls[0]["name"] == "get_weather" and calls[0]["call_id"]
    assert isinstance(json.loads(calls[0]["arguments"])["city"], str)
    assert answer["tools"][0]["name"] == "get_weather"

    events = named_sse_events((await client.post("/v1/responses", json={**body, "stream": True})).text)
    names = [name for name, _ in events]
    assert "response.function_call_arguments.delta" in names and names[-1] == "response.completed"
    done = [event for name, event in events if name == "response.function_call_arguments.done"]
    pieces = "".join(event["delta"] for name, event in events if name == "response.function_call_arguments.delta")
    assert done and done[0]["arguments"] == pieces and json.loads(pieces)["city"]

    # The tool's result, sent back with the call, continues the conversation to a text answer.
    follow = {
        "model": "smollm2",
        "previous_response_id": answer["id"],
        "input": [{"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "Sunny, 21 C"}],
        "tools": [WEATHER],
        "max_output_tokens": 24,
    }
    reply = await client.post("/v1/responses", json=follow)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["input_tokens"] > answer["usage"]["input_tokens"]


@pytest.mark.model
@needs_format
async def test_text_format_json_schema_is_valid_json(client, smollm2):

    schema = {
        "type": "object",
        # A bounded name: a sampled string could otherwise run past max_output_tokens.
        "properties": {"name": {"type": "string", "maxLength": 30}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    body = {
        "model": "smollm2",
        "input": "Invent a person.",
        "text": {"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}},
        "max_output_tokens": 64,
        "temperature": 0,
    }
    answer = (await client.post("/v1/responses", json=body)).json()
    assert answer["text"]["format"]["name"] == "person"
    jsonschema.validate(json.loads(answer["output"][0]["content"][0]["text"]), schema)


async def test_websocket_streams_the_same_events_then_done(asgi_app, api_key, echo_model):
    socket = WebsocketCommunicator(
        asgi_app, "/ws/v1/responses", headers=[(b"authorization", f"Bearer {api_key}".encode())]
    )
    connected, _ = await socket.connect(timeout=60)
    assert connected
    try:
        await socket.send_json_to({"type": "request", "body": ECHO})  # no "stream": the socket always streams
        frames = []
        while (frame := await socket.receive_from(timeout=60)) != "[DONE]":
            frames.append(json.loads(frame))
        assert [frame["type"] for frame in frames] == STREAM_TEXT_ORDER
        completed = frames[-1]["response"]
        assert completed["output"][0]["content"][0]["text"] == "one two three four five"
        await socket.send_json_to({"type": "request", "body": {**ECHO, "reasoning": {"effort": "high"}}})
        refused = json.loads(await socket.receive_from(timeout=60))
        assert refused["error"]["param"] == "reasoning"
        assert await socket.receive_from(timeout=60) == "[DONE]"
    finally:
        await socket.disconnect(timeout=60)
        await sync_to_async(connections.close_all)()
    assert (await StoredResponse.objects.aget(pk=completed["id"])).body == completed


def test_a_failure_after_the_first_event_ends_the_stream_with_response_failed():
    """What the stream sends when the engine fails midway (the serving code yields `fail`'s event then)."""
    writer = EventWriter(ResponseBuilder(response_id="resp_1", body=ECHO, temperature=1.0, top_p=1.0))
    events = [*writer.openings(), *writer.chunk(Chunk(text="one "))]
    failed = writer.fail(ErrorInfo(500, "server_error", "engine_error", "The engine crashed.", None))
    assert failed["type"] == "response.failed" and failed["sequence_number"] == len(events)
    response = failed["response"]
    assert response["status"] == "failed" and response["usage"] is None
    assert response["error"] == {"code": "engine_error", "message": "The engine crashed."}
