"""A served model's `default_params` fill in what a request leaves out; the request's own value wins."""

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError

from models_registry.services.served_models import served_model_register

from .sse import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = "alpha beta gamma delta epsilon zeta eta theta"


def echo_with_defaults(**default_params):
    return served_model_register(
        name="echo-defaults", source="", engine="echo", context_length=512, default_params=default_params
    )


async def adefaults(**default_params):
    return await sync_to_async(echo_with_defaults)(**default_params)


def chat(content: str = WORDS, **fields) -> dict:
    return {"model": "echo-defaults", "messages": [{"role": "user", "content": content}], **fields}


async def test_default_max_tokens_applies_and_the_request_wins(client):
    await adefaults(max_tokens=3)
    body = (await client.post("/v1/chat/completions", json=chat())).json()
    assert body["choices"][0]["message"]["content"] == "alpha beta gamma"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3

    body = (await client.post("/v1/chat/completions", json=chat(max_tokens=5))).json()
    assert body["usage"]["completion_tokens"] == 5
    body = (await client.post("/v1/chat/completions", json=chat(max_completion_tokens=4))).json()
    assert body["usage"]["completion_tokens"] == 4
    # The legacy endpoint and streaming take the same defaults.
    body = (await client.post("/v1/completions", json={"model": "echo-defaults", "prompt": WORDS})).json()
    assert body["choices"][0]["text"] == "alpha beta gamma"
    events = sse_events((await client.post("/v1/chat/completions", json=chat(stream=True))).text)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert text == "alpha beta gamma"


async def test_legacy_completions_stop_at_16_tokens_without_a_default(client, echo_model):
    prompt = " ".join(f"w{i}" for i in range(20))
    body = (await client.post("/v1/completions", json={"model": "echo", "prompt": prompt})).json()
    assert body["usage"]["completion_tokens"] == 16 and body["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("stop", [" delta", [" delta"]])
async def test_default_stop_applies_as_a_whole_string(client, stop):
    # A string default is one stop sequence, as a string `stop` in a request is: not one per character.
    await adefaults(stop=stop)
    body = (await client.post("/v1/chat/completions", json=chat())).json()
    assert body["choices"][0]["message"]["content"] == "alpha beta gamma"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_request_stop_replaces_the_default(client):
    await adefaults(stop=[" beta"])
    body = (await client.post("/v1/chat/completions", json=chat(stop=" zeta"))).json()
    assert body["choices"][0]["message"]["content"] == "alpha beta gamma delta epsilon"


@pytest.mark.model
async def test_real_model_takes_default_max_tokens_and_temperature(client, smollm2, gguf_path):
    await sync_to_async(served_model_register)(
        name="smol-defaults",
        source=gguf_path,
        engine="llama_cpp",
        context_length=2048,
        default_params={"max_tokens": 6, "temperature": 0.0},
    )
    question = {"messages": [{"role": "user", "content": "Write a short poem about the sea."}]}

    defaulted = (await client.post("/v1/chat/completions", json={"model": "smol-defaults", **question})).json()
    assert defaulted["usage"]["completion_tokens"] == 6, defaulted
    assert defaulted["choices"][0]["finish_reason"] == "length"
    # Temperature 0 by default: the same answer as the bare model asked for greedy decoding.
    greedy = (
        await client.post(
            "/v1/chat/completions", json={"model": "smollm2", "max_tokens": 6, "temperature": 0, **question}
        )
    ).json()
    assert defaulted["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]

    # The request's own values win: more tokens, and a hot seeded sample that leaves the greedy path.
    # (Compared on one engine: llama.cpp is not batch-invariant, and another engine's prefix cache
    # could split the prompt's evaluation differently, which a temperature of 2 would show.)
    hot = {"model": "smol-defaults", "max_tokens": 12, "temperature": 2.0, "seed": 11, **question}
    own = (await client.post("/v1/chat/completions", json=hot)).json()
    assert own["usage"]["completion_tokens"] == 12
    again = (await client.post("/v1/chat/completions", json=hot)).json()
    greedy12 = (
        await client.post(
            "/v1/chat/completions", json={"model": "smol-defaults", "max_tokens": 12, "temperature": 0, **question}
        )
    ).json()
    assert own["choices"][0]["message"]["content"] == again["choices"][0]["message"]["content"]
    assert own["choices"][0]["message"]["content"] != greedy12["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_tokens": "3"}, "max_tokens must be an integer of at least 1"),
        ({"max_tokens": 0}, "max_tokens must be an integer of at least 1"),
        ({"temperature": 3}, "temperature must be a number from 0 to 2"),
        ({"temperature": True}, "temperature must be a number from 0 to 2"),
        ({"top_p": "high"}, "top_p must be a number from 0 to 1"),
        ({"stop": 5}, "stop must be a string or a list of up to 4 strings"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop must be a string or a list of up to 4 strings"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"presence_penalty": -3}, "presence_penalty must be a number from -2 to 2"),
    ],
)
def test_defaults_a_request_could_not_send_are_refused(params, message):
    # Refused when the model is saved, rather than breaking every request to it later.
    with pytest.raises(ValidationError) as caught:
        echo_with_defaults(**params)
    assert caught.value.message_dict["default_params"] == [f"{message}."]


async def test_defaults_of_every_kind_are_served(client):
    await adefaults(
        max_tokens=4, temperature=0.5, top_p=0.9, stop=[" zeta"], seed=3, presence_penalty=0.5, frequency_penalty=-0.5
    )
    body = (await client.post("/v1/chat/completions", json=chat())).json()
    assert body["choices"][0]["message"]["content"] == "alpha beta gamma delta"
