"""Structured outputs (`response_format`) and llama-server's raw `grammar` through the real ASGI
stack, on the real SmolLM2 model: every output follows its format, bad formats are 400s."""

import json

import jsonschema
import pytest

from .sse import sse_events
from .test_auth_and_errors import assert_openai_error

pytestmark = pytest.mark.django_db(transaction=True)

ASK = [{"role": "user", "content": "Give me a city and its country as JSON."}]
CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "country": {"type": "string", "maxLength": 20},
        "size": {"enum": ["small", "big"]},
    },
    "required": ["city", "country", "size"],
    "additionalProperties": False,
}
CITY_FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}


def chat(**extra) -> dict:
    return {"model": "smollm2", "messages": ASK, "max_tokens": 120, "temperature": 0.7, "seed": 1, **extra}


@pytest.mark.model
async def test_json_schema_strict_validates_for_each_of_n_choices(client, smollm2):
    response = await client.post("/v1/chat/completions", json=chat(response_format=CITY_FORMAT, n=2))
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert [choice["index"] for choice in choices] == [0, 1]
    for choice in choices:
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(json.loads(choice["message"]["content"]), CITY)


@pytest.mark.model
async def test_json_schema_streamed_assembles_to_valid_json(client, smollm2):
    response = await client.post("/v1/chat/completions", json=chat(response_format=CITY_FORMAT, stream=True))
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
    jsonschema.validate(json.loads(text), CITY)


@pytest.mark.model
async def test_json_object_is_one_object(client, smollm2):
    body = chat(response_format={"type": "json_object"}, temperature=0, max_tokens=300)
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert isinstance(json.loads(choice["message"]["content"]), dict)


@pytest.mark.model
async def test_text_response_format_is_plain_text(client, smollm2):
    response = await client.post("/v1/chat/completions", json=chat(response_format={"type": "text"}, max_tokens=5))
    assert response.status_code == 200, response.text


@pytest.mark.model
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_raw_grammar_on_chat_and_completions(client, smollm2, path):
    grammar = 'root ::= ("red" | "green" | "blue") "!"'
    body = (
        chat(grammar=grammar, temperature=1.2)
        if "chat" in path
        else {
            "model": "smollm2",
            "prompt": "My favourite colour is",
            "max_tokens": 8,
            "grammar": grammar,
        }
    )
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    text = choice["message"]["content"] if "chat" in path else choice["text"]
    assert text in ("red!", "green!", "blue!")
    assert choice["finish_reason"] == "stop"


@pytest.mark.model
async def test_grammar_llama_cpp_cannot_parse_is_400_naming_grammar(client, smollm2):
    response = await client.post("/v1/chat/completions", json=chat(grammar='root ::= "open'))
    assert_openai_error(response, 400, param="grammar")


@pytest.mark.model
async def test_unenforceable_keyword_is_400_naming_it(client, smollm2):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}
    body = chat(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
    error = assert_openai_error(
        await client.post("/v1/chat/completions", json=body), 400, "unsupported_parameter", "response_format"
    )
    assert "'minimum'" in error["message"]


@pytest.mark.parametrize(
    "response_format",
    [
        "json",
        {"type": "yaml"},
        {"type": "json_object", "schema": {}},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"schema": CITY}},
        {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": CITY}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": "{}"}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": CITY, "strict": "yes"}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": CITY, "extra": 1}},
    ],
)
async def test_bad_response_format_shape_is_400_naming_it(client, echo_model, response_format):
    body = {"model": "echo", "messages": ASK, "response_format": response_format}
    assert_openai_error(await client.post("/v1/chat/completions", json=body), 400, param="response_format")


async def test_grammar_with_response_format_is_400(client, echo_model):
    body = {"model": "echo", "messages": ASK, "response_format": {"type": "json_object"}, "grammar": 'root ::= "x"'}
    assert_openai_error(await client.post("/v1/chat/completions", json=body), 400, param="grammar")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"response_format": CITY_FORMAT}, "response_format"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"grammar": 'root ::= "x"'}, "grammar"),
    ],
)
async def test_echo_refuses_structured_outputs(client, echo_model, extra, param):
    body = {"model": "echo", "messages": ASK, **extra}
    error = assert_openai_error(
        await client.post("/v1/chat/completions", json=body), 400, "unsupported_parameter", param
    )
    assert "echo" in error["message"]


async def test_echo_accepts_text_response_format(client, echo_model):
    body = {"model": "echo", "messages": ASK, "response_format": {"type": "text"}, "max_tokens": 3}
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
