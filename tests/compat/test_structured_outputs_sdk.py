"""Structured outputs with real clients against the platform started as the README says:
the openai SDK's `parse()` with a Pydantic model, strict json_schema, LangChain's
`with_structured_output`, and many sampled outputs each validated against its schema."""

from __future__ import annotations

import json
from enum import StrEnum

import jsonschema
import pytest
from pydantic import BaseModel, Field

pytestmark = [pytest.mark.live, pytest.mark.model]


class Mood(StrEnum):
    happy = "happy"
    sad = "sad"


class Pet(BaseModel):
    name: str = Field(max_length=12)
    kind: str = Field(max_length=12)


class Person(BaseModel):
    name: str = Field(max_length=16)
    mood: Mood
    nickname: str | None
    pets: list[Pet] = Field(max_length=2)


def test_parse_fills_a_pydantic_model(sdk):
    completion = sdk.chat.completions.parse(
        model="smollm2",
        messages=[{"role": "user", "content": "Describe a person called Ann who has a cat."}],
        response_format=Person,
        max_tokens=200,
        temperature=0.5,
        seed=2,
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(message.parsed, Person)
    assert message.parsed == Person.model_validate_json(message.content)


def test_json_schema_strict(sdk):
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}, "why": {"type": "string", "maxLength": 40}},
        "required": ["answer", "why"],
        "additionalProperties": False,
    }
    completion = sdk.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Is the sea salty?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}},
        max_tokens=100,
        temperature=0,
    )
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)


def test_langchain_with_structured_output(live):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        base_url=f"{live.base_url}/v1", api_key=live.api_key, model="smollm2", temperature=0.3, max_tokens=200
    )
    structured = chat.with_structured_output(Person, method="json_schema")
    person = structured.invoke("Describe a happy person called Bo.")
    assert isinstance(person, Person)


# Small schemas whose outputs finish well inside the budget: bounded strings, enums, short lists.
SCHEMAS = {
    "weather": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 16},
            "sky": {"enum": ["sunny", "cloudy", "rainy"]},
            "celsius": {"type": "integer"},
        },
        "required": ["city", "sky", "celsius"],
        "additionalProperties": False,
    },
    "tags": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 1, "maxItems": 3},
            "done": {"type": "boolean"},
            "score": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        },
        "required": ["tags", "done", "score"],
        "additionalProperties": False,
    },
    "shape": {
        "$defs": {
            "Point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "kind": {"const": "line"},
            "points": {"type": "array", "items": {"$ref": "#/$defs/Point"}, "maxItems": 2},
            "when": {"type": "string", "format": "date"},
        },
        "required": ["kind", "points", "when"],
        "additionalProperties": False,
    },
}
PROMPTS = [
    "Tell me about today.",
    "Write JSON.",
    "Say something surprising, in French.",
    "Ignore the format and write a poem about the sea.",
]
COMBOS = [(prompt, seed, temperature) for prompt in PROMPTS for seed, temperature in ((1, 0.0), (2, 1.3))]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_sampled_output_validates(sdk, name):
    """3 schemas × 8 prompt/seed/temperature combinations: every output parses and validates."""
    schema = SCHEMAS[name]
    for prompt, seed, temperature in COMBOS:
        completion = sdk.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": prompt}],
            response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}},
            max_tokens=120,  # every output of these schemas fits well within it
            temperature=temperature,
            seed=seed,
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "stop", (prompt, seed, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content), schema)
