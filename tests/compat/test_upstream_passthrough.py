"""The upstream engine passing tools, structured outputs and embeddings to a server that has them.

The server is this platform itself, started as the README does: a real OpenAI-compatible server
with grammar-bound tool calls, JSON schemas and embeddings on SmolLM2.
"""

import json

import jsonschema
import pytest

from engines.base import GenerationRequest, ModelSpec, OutputFormat, SamplingParams, ToolSpec
from engines.upstream import UpstreamEngine
from serving.outcome import OutcomeBuilder
from tests.engines.helpers import collect, loaded

pytestmark = [pytest.mark.live, pytest.mark.model]

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
    "additionalProperties": False,
}
ASK = ({"role": "user", "content": "What is the weather in Paris?"},)


def upstream(live, model: str) -> UpstreamEngine:
    options = {"base_url": f"{live.base_url}/v1", "api_key": live.api_key, "model": model}
    return UpstreamEngine(ModelSpec(name=f"via-upstream-{model}", source=model, options=options))


def outcome_of(chunks):
    builder = OutcomeBuilder()
    for chunk in chunks:
        builder.add(chunk)
    return builder.outcome()


async def test_a_forced_tool_call_and_a_json_schema_come_back_through_the_upstream(live):
    request = GenerationRequest(
        request_id="t",
        messages=ASK,
        sampling=SamplingParams(max_tokens=60, temperature=0),
        tools=(ToolSpec(name="get_weather", description="The weather in a city.", parameters=CITY),),
        tool_choice="function",
        forced_tool="get_weather",
    )
    with loaded(upstream(live, "smollm2")) as engine:
        called = outcome_of(await collect(engine, request))
        shaped = outcome_of(
            await collect(
                engine,
                GenerationRequest(
                    request_id="t",
                    messages=({"role": "user", "content": "Name a city as JSON."},),
                    sampling=SamplingParams(max_tokens=60, temperature=0),
                    output_format=OutputFormat(kind="json_schema", schema=CITY, name="city"),
                ),
            )
        )
    (call,) = called.choices[0].tool_calls
    assert called.choices[0].finish_reason == "tool_calls" and call.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.arguments), CITY)
    jsonschema.validate(json.loads(shaped.choices[0].text), CITY)


async def test_embeddings_come_back_through_the_upstream(live):
    request = GenerationRequest(request_id="t", sampling=SamplingParams(), task="embed", inputs=("the sea", "a cat"))
    with loaded(upstream(live, "smollm2-embed")) as engine:
        chunks = await collect(engine, request)
    vectors = [chunk.embedding for chunk in chunks if chunk.embedding]
    assert [len(vector) for vector in vectors] == [576, 576]
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-3)
    assert chunks[-1].prompt_tokens > 0
