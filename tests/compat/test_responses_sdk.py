"""The openai SDK's Responses API against the platform started as the README says, on SmolLM2."""

from __future__ import annotations

import json

import jsonschema
import openai
import pydantic
import pytest

from engines.capabilities import CAPABILITIES

pytestmark = [pytest.mark.live, pytest.mark.model]

ASK = dict(model="smollm2", input="Name three colours.", max_output_tokens=16, temperature=0)


def test_create_not_streamed(sdk):
    response = sdk.responses.create(**ASK, instructions="Answer briefly.", metadata={"case": "plain"})
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()  # the SDK's convenience join of output_text parts
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.instructions == "Answer briefly." and response.metadata == {"case": "plain"}
    usage = response.usage
    assert usage.input_tokens > 0 and 0 < usage.output_tokens <= 16
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_create_streamed_events_and_stream_helper_agree(sdk):
    events = list(sdk.responses.create(**ASK, stream=True))
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        events[-1].type,
    ] and events[-1].type in ("response.completed", "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    streamed = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert streamed and streamed == events[-1].response.output_text

    # The SDK's own stream helper assembles the answer from the events; it needs response.completed,
    # so this answer may run to its end.
    with sdk.responses.stream(**{**ASK, "max_output_tokens": 400}) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert "".join(deltas) == final.output_text and final.output_text.startswith(streamed)


def test_previous_response_id_chains_the_conversation(sdk):
    first = sdk.responses.create(model="smollm2", input="My name is Ada.", max_output_tokens=12, temperature=0)
    second = sdk.responses.create(
        model="smollm2", input="What is my name?", previous_response_id=first.id, max_output_tokens=12, temperature=0
    )
    assert second.previous_response_id == first.id
    alone = sdk.responses.create(model="smollm2", input="What is my name?", max_output_tokens=12, temperature=0)
    # The chained request's prompt holds the first turn (its input and output) as well.
    assert second.usage.input_tokens >= alone.usage.input_tokens + first.usage.output_tokens
    items = sdk.responses.input_items.list(second.id, order="asc")
    assert [item.type for item in items.data] == ["message", "message", "message"]
    assert items.data[0].content[0].text == "My name is Ada."
    assert items.data[-1].content[0].text == "What is my name?"


def test_retrieve_and_delete(sdk):
    created = sdk.responses.create(**ASK)
    fetched = sdk.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == created.output_text
    sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    unstored = sdk.responses.create(**ASK, store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)


def test_unsupported_parameters_are_400s_naming_them(sdk):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(**ASK, reasoning={"effort": "high"})
    assert refused.value.param == "reasoning"
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(**ASK, tools=[{"type": "web_search"}])
    assert refused.value.param == "tools[0]"


# --- Once tools and structured output are merged (their engine capability turns these on) ---

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


@pytest.mark.skipif("tools" not in CAPABILITIES["llama_cpp"], reason="tools are not merged yet")
def test_forced_function_call_and_its_result(sdk):
    ask = dict(
        model="smollm2",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
    )
    response = sdk.responses.create(**ask)
    [call] = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])

    with sdk.responses.stream(**ask) as stream:
        pieces = [event.delta for event in stream if event.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    [streamed_call] = [item for item in final.output if item.type == "function_call"]
    assert "".join(pieces) == streamed_call.arguments
    jsonschema.validate(json.loads(streamed_call.arguments), WEATHER["parameters"])

    reply = sdk.responses.create(
        model="smollm2",
        previous_response_id=response.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}],
        tools=[WEATHER],
        max_output_tokens=24,
        temperature=0,
    )
    assert reply.status in ("completed", "incomplete")


class Person(pydantic.BaseModel):
    # Bounded, because SmolLM2 can ramble inside a free string until max_output_tokens cuts the JSON.
    name: str = pydantic.Field(max_length=24)
    age: int


@pytest.mark.skipif("response_format" not in CAPABILITIES["llama_cpp"], reason="structured output is not merged yet")
def test_parse_with_a_pydantic_model(sdk):
    parsed = sdk.responses.parse(
        model="smollm2", input="Invent a person.", text_format=Person, max_output_tokens=64, temperature=0
    )
    assert parsed.status == "completed"
    assert isinstance(parsed.output_parsed, Person)
