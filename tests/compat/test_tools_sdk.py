"""Tool calling with real clients (the openai SDK, LangChain) against the platform as the README starts it.

Forced calls are grammar-constrained, so on SmolLM2 their arguments validate against the
function's parameters every time: that is what these tests check, over several seeds.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

pytestmark = [pytest.mark.live, pytest.mark.model]

MODEL = "smollm2"
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city's name."},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": WEATHER_PARAMETERS,
        },
    }
]
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
FORCED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_forced_call_validates_against_the_parameters(sdk, seed):
    answer = sdk.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice=FORCED, temperature=1.0, seed=seed, max_tokens=200
    )
    (choice,) = answer.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)


def test_a_forced_call_streams_and_assembles(sdk):
    stream = sdk.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=200, stream=True
    )
    calls: dict[int, dict] = {}
    pieces, finish = 0, None
    for chunk in stream:
        for choice in chunk.choices:
            for piece in choice.delta.tool_calls or ():
                pieces += 1
                call = calls.setdefault(piece.index, {"id": None, "name": None, "arguments": ""})
                if piece.id:
                    call["id"], call["name"] = piece.id, piece.function.name
                    assert piece.type == "function" and piece.function.arguments == ""
                call["arguments"] += piece.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["id"].startswith("call_") and calls[0]["name"] == "get_weather"
    assert pieces > 2, "the arguments arrive in fragments"
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER_PARAMETERS)


def test_a_tool_result_round_trip(sdk):
    first = sdk.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice=FORCED, temperature=0, max_tokens=200
    )
    message = first.choices[0].message
    (call,) = message.tool_calls
    history = [
        *ASK,
        message.model_dump(exclude_none=True),  # as the SDK's docs send the assistant turn back
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "sunny"})},
    ]
    assert history[1]["tool_calls"][0]["id"] == call.id and "content" not in history[1]
    second = sdk.chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=40
    )
    (choice,) = second.choices
    assert choice.message.content and not choice.message.tool_calls
    assert choice.finish_reason in ("stop", "length")


def test_langchain_bind_tools_returns_tool_calls(live):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str, unit: str) -> str:
        """Get the current weather in a city; unit is celsius or fahrenheit."""
        return f"18 degrees {unit} in {city}"

    llm = ChatOpenAI(
        model=MODEL, base_url=f"{live.base_url}/v1", api_key=live.api_key, temperature=0, max_tokens=200, max_retries=0
    )
    for choice in ("get_weather", "any"):  # LangChain's names for a named function and "required"
        answer = llm.bind_tools([get_weather], tool_choice=choice).invoke("What is the weather in Paris?")
        (call,) = answer.tool_calls
        assert call["name"] == "get_weather" and call["id"].startswith("call_")
        jsonschema.validate(call["args"], get_weather.tool_call_schema.model_json_schema())
        assert get_weather.invoke(call["args"]).startswith("18 degrees")
