"""Issue 12's API in distributed mode: structured outputs, tools, embeddings, the tokenizer, the
Responses API and Anthropic Messages, each answered by a real Celery worker (which writes the
records), with the openai and anthropic SDKs."""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from .test_distributed import wait_for_records

pytestmark = [pytest.mark.distributed, pytest.mark.live, pytest.mark.model]

CHAT = [{"role": "user", "content": "Say hello to the sea."}]


@pytest.fixture(scope="module")
def deployment(cluster, gguf_path):
    """One worker hosting SmolLM2 twice: for generation, and mean-pooled for embeddings."""
    cluster.manage(
        "register_model",
        "smollm2-embed",
        "--source",
        gguf_path,
        "--engine",
        "llama_cpp",
        "--task",
        "embed",
        "--context-length",
        "512",
    )
    cluster.worker = cluster.start_worker("w1", "smollm2,smollm2-embed", concurrency=4)
    cluster.base_url = cluster.start_web()
    return cluster


@pytest.fixture(scope="module")
def sdk(deployment):
    return openai.OpenAI(base_url=f"{deployment.base_url}/v1", api_key=deployment.api_key, max_retries=0, timeout=60)


def post(deployment, path: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{deployment.base_url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {deployment.api_key}"},
        timeout=60,
    )


def endpoint_records(deployment, endpoint: str, count: int) -> list[dict]:
    return wait_for_records(deployment, count, "WHERE endpoint = %s", endpoint)


def test_embeddings_come_from_the_worker(deployment, sdk):
    texts = ["The cat sleeps on the sofa.", "A kitten naps on the couch.", "Quarterly tax filing deadlines"]
    by_default = sdk.embeddings.create(model="smollm2-embed", input=texts)  # base64 on the wire
    as_floats = sdk.embeddings.create(model="smollm2-embed", input=texts, encoding_format="float")
    for packed, floats in zip(by_default.data, as_floats.data, strict=True):
        assert len(floats.embedding) == 576
        assert packed.embedding == pytest.approx(floats.embedding, abs=1e-6)
    cat, kitten, tax = (d.embedding for d in as_floats.data)
    assert sum(a * b for a, b in zip(cat, kitten)) > sum(a * b for a, b in zip(cat, tax))

    ids = post(deployment, "/tokenize", {"model": "smollm2-embed", "prompt": texts[0]}).json()["tokens"]
    by_ids = sdk.embeddings.create(model="smollm2-embed", input=[ids], encoding_format="float")
    assert by_ids.data[0].embedding == pytest.approx(as_floats.data[0].embedding, abs=1e-5)

    worker = deployment.worker_id(deployment.worker.process.pid)
    records = endpoint_records(deployment, "embeddings", 3)
    assert len(records) == 3  # one per request, written by the worker
    assert {(r["worker"], r["status_code"], r["model_name"], r["finish_reason"]) for r in records} == {
        (worker, 200, "smollm2-embed", "stop")
    }
    assert by_default.usage.prompt_tokens == as_floats.usage.prompt_tokens > 0

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="smollm2", input="sea")
    assert caught.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="smollm2-embed", input=[[10**8]])
    assert caught.value.body["param"] == "input"  # refused by the worker's engine, in-band


def test_tokenize_and_detokenize_run_on_the_worker(deployment, sdk):
    counted = post(deployment, "/tokenize", {"model": "smollm2", "messages": CHAT})
    assert counted.status_code == 200, counted.text
    completion = sdk.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=1)
    assert counted.json()["count"] == completion.usage.prompt_tokens == len(counted.json()["tokens"])

    text = "The sea, the sky."
    tokens = post(deployment, "/tokenize", {"model": "smollm2", "content": text}).json()["tokens"]
    assert post(deployment, "/detokenize", {"model": "smollm2", "tokens": tokens}).json() == {
        "prompt": text,
        "content": text,
    }
    worker = deployment.worker_id(deployment.worker.process.pid)
    tokenize = wait_for_records(deployment, 2, "WHERE endpoint = %s AND model_name = %s", "tokenize", "smollm2")
    (detokenize,) = endpoint_records(deployment, "detokenize", 1)
    assert {(r["worker"], r["status_code"]) for r in [*tokenize, detokenize]} == {(worker, 200)}
    bad = post(deployment, "/detokenize", {"model": "smollm2", "tokens": [10**8]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


class City(BaseModel):
    name: str
    country: str


def test_structured_output_and_a_forced_tool_call_are_grammar_bound_on_the_worker(deployment, sdk):
    parsed = sdk.chat.completions.parse(
        model="smollm2",
        messages=[{"role": "user", "content": "Name a city as JSON."}],
        response_format=City,
        max_tokens=60,
        temperature=0,
    )
    assert isinstance(parsed.choices[0].message.parsed, City)

    stream = sdk.chat.completions.create(
        model="smollm2",
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        temperature=0,
        stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": delta.id, "name": delta.function.name, "arguments": ""})
            call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls" and calls[0]["name"] == "get_weather" and calls[0]["id"]
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER["function"]["parameters"])


def test_the_responses_api_stores_and_chains_across_the_worker(deployment, sdk):
    first = sdk.responses.create(model="smollm2", input="My name is Ada.", max_output_tokens=16, temperature=0)
    assert first.status in ("completed", "incomplete") and first.output_text
    events = list(
        sdk.responses.create(
            model="smollm2",
            input="What is my name?",
            previous_response_id=first.id,
            max_output_tokens=16,
            temperature=0,
            stream=True,
        )
    )
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    second = sdk.responses.retrieve(events[-1].response.id)
    items = [item.type for item in sdk.responses.input_items.list(second.id).data]
    assert len(items) >= 3  # the first turn, its answer and the new question
    assert len(endpoint_records(deployment, "responses", 2)) == 2


def test_anthropic_messages_count_tokens_and_tool_use_on_the_worker(deployment):
    client = anthropic.Anthropic(base_url=deployment.base_url, api_key=deployment.api_key, max_retries=0, timeout=60)
    messages = [{"role": "user", "content": "Say hello to the sea."}]
    message = client.messages.create(model="smollm2", max_tokens=16, messages=messages, extra_body={"temperature": 0})
    assert message.type == "message" and message.content[0].type == "text"
    with client.messages.stream(
        model="smollm2", max_tokens=16, messages=messages, extra_body={"temperature": 0}
    ) as stream:
        streamed = "".join(stream.text_stream)
    assert streamed == message.content[0].text
    counted = client.messages.count_tokens(model="smollm2", messages=messages)
    assert counted.input_tokens == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)

    tool = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": WEATHER["function"]["parameters"],
    }
    forced = client.messages.create(
        model="smollm2",
        max_tokens=60,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[tool],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    (use,) = [block for block in forced.content if block.type == "tool_use"]
    assert forced.stop_reason == "tool_use"
    jsonschema.validate(use.input, tool["input_schema"])
    assert len(endpoint_records(deployment, "messages", 3)) == 3
    assert len(endpoint_records(deployment, "messages.count_tokens", 1)) == 1
