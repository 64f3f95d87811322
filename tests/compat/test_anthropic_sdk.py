"""The official anthropic SDK against the platform started the way the README says, on the bundled model."""

from __future__ import annotations

import json

import anthropic
import jsonschema
import pytest

from engines.capabilities import CAPABILITIES

pytestmark = [pytest.mark.live, pytest.mark.model]

MODEL = "smollm2"
ASK = [{"role": "user", "content": "Tell me about the sea in one sentence."}]
# This SDK's methods take no sampling arguments; the API does, so they go in the body as such.
GREEDY = {"extra_body": {"temperature": 0}}
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        # A bounded city: a sampled (temperature 1) string could otherwise run past max_tokens.
        "properties": {
            "city": {"type": "string", "maxLength": 30},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
needs_tools = pytest.mark.skipif("tools" not in CAPABILITIES["llama_cpp"], reason="needs tools on llama.cpp")
needs_structured = pytest.mark.skipif(
    "response_format" not in CAPABILITIES["llama_cpp"], reason="needs structured output on llama.cpp"
)
needs_tokenize = pytest.mark.skipif("tokenize" not in CAPABILITIES["llama_cpp"], reason="needs llama.cpp tokenize")


@pytest.fixture(scope="module")
def claude(live):
    """The SDK as a user configures it: the key goes out in `x-api-key`, with `anthropic-version`."""
    return anthropic.Anthropic(base_url=live.base_url, api_key=live.api_key, max_retries=0, timeout=120)


def test_messages_create(claude):
    message = claude.messages.create(model=MODEL, max_tokens=24, **GREEDY, system="You are terse.", messages=ASK)
    assert message.id.startswith("msg_") and message.role == "assistant" and message.model == MODEL
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert 0 < message.usage.output_tokens <= 24 and message.usage.input_tokens > 0


def test_stop_sequence_is_reported(claude):
    free = claude.messages.create(model=MODEL, max_tokens=24, **GREEDY, messages=ASK).content[0].text
    words = free.split()
    assert len(words) >= 3, free
    stop = " " + words[2]
    message = claude.messages.create(model=MODEL, max_tokens=24, **GREEDY, messages=ASK, stop_sequences=[stop])
    assert message.content[0].text == free[: free.index(stop)]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", stop)


def test_messages_stream_text_and_final_message(claude):
    whole = claude.messages.create(model=MODEL, max_tokens=24, **GREEDY, messages=ASK)
    with claude.messages.stream(model=MODEL, max_tokens=24, **GREEDY, messages=ASK) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 3  # streamed, not one lump
    assert "".join(pieces) == final.content[0].text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    total = final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)
    assert total == whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0)


def test_errors_are_the_sdks_typed_errors(claude, live):
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model=MODEL, max_tokens=8, messages=ASK, extra_body={"top_k": 5})
    assert "top_k" in bad.value.message
    wrong = anthropic.Anthropic(base_url=live.base_url, api_key="ipk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model=MODEL, max_tokens=8, messages=ASK)


@needs_tokenize
def test_count_tokens(claude):
    counted = claude.messages.count_tokens(model=MODEL, system="You are terse.", messages=ASK)
    message = claude.messages.create(model=MODEL, max_tokens=2, system="You are terse.", messages=ASK)
    assert counted.input_tokens == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
    longer = claude.messages.count_tokens(model=MODEL, system="You are terse. And kind.", messages=ASK)
    assert longer.input_tokens > counted.input_tokens


@needs_tools
def test_forced_tool_use_validates_and_a_tool_result_round_trips(claude):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    message = claude.messages.create(
        model=MODEL, max_tokens=128, messages=ask, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}
    )
    assert message.stop_reason == "tool_use"
    (call,) = [block for block in message.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    jsonschema.validate(call.input, WEATHER["input_schema"])

    history = [
        *ask,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees, sunny"}]},
    ]
    answer = claude.messages.create(model=MODEL, max_tokens=48, **GREEDY, messages=history, tools=[WEATHER])
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    prompt = answer.usage.input_tokens + (answer.usage.cache_read_input_tokens or 0)
    assert answer.content and prompt > message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


@needs_tools
def test_forced_tool_use_streams_its_input(claude):
    ask = [{"role": "user", "content": "Weather in Oslo, please."}]
    with claude.messages.stream(
        model=MODEL,
        max_tokens=128,
        messages=ask,
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    ) as stream:
        final = stream.get_final_message()
    (call,) = [block for block in final.content if block.type == "tool_use"]
    jsonschema.validate(call.input, WEATHER["input_schema"])
    assert final.stop_reason == "tool_use"


@needs_structured
def test_output_config_format_gives_json_valid_against_the_schema(claude):
    schema = WEATHER["input_schema"]
    message = claude.messages.create(
        model=MODEL,
        max_tokens=96,
        messages=[{"role": "user", "content": "The weather in Rome, as JSON."}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    jsonschema.validate(json.loads(message.content[0].text), schema)
