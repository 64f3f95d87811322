"""n choices, logprobs and logit_bias through the real ASGI stack, to the official openai SDK."""

import httpx
import jsonschema_rs
import openai
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from api.openai.schema import CHAT_CHUNK, TEXT_CHUNK
from serving.dispatch.embedded import engine_host

from .sse import sse_events
from .test_auth_and_errors import assert_openai_error

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = [{"role": "user", "content": "Invent a name for a small red boat."}]


@pytest.fixture
async def sdk(asgi_app, api_key):
    """The openai SDK talking to the ASGI app in-process."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app), timeout=120) as http_client:
        yield openai.AsyncOpenAI(
            base_url="http://testserver/v1", api_key=api_key, http_client=http_client, max_retries=0
        )
    await sync_to_async(connections.close_all)()


@pytest.mark.model
async def test_chat_n_choices_whole_and_streamed(sdk, smollm2):
    whole = await sdk.chat.completions.create(
        model="smollm2", messages=CHAT, n=3, max_tokens=10, temperature=1.0, seed=5, logprobs=True
    )
    assert [choice.index for choice in whole.choices] == [0, 1, 2]
    assert all(choice.message.content and choice.finish_reason in ("stop", "length") for choice in whole.choices)
    # Each choice's logprobs list its tokens: together they are the usage's completion tokens.
    assert whole.usage.completion_tokens == sum(len(choice.logprobs.content) for choice in whole.choices)
    assert len({choice.message.content for choice in whole.choices}) > 1

    stream = await sdk.chat.completions.create(
        model="smollm2",
        messages=CHAT,
        n=3,
        max_tokens=10,
        temperature=1.0,
        seed=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts, roles, finishes, usage = {}, [], {}, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.index)
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert roles == [0, 1, 2]
    assert sorted(finishes) == [0, 1, 2] and all(texts.values())
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert usage.completion_tokens <= 30


@pytest.mark.model
async def test_legacy_n_choices_with_logprobs(sdk, smollm2):
    whole = await sdk.completions.create(
        model="smollm2", prompt="The sky is", n=2, max_tokens=6, temperature=0, logprobs=3
    )
    assert [choice.index for choice in whole.choices] == [0, 1]
    assert whole.usage.completion_tokens == sum(len(choice.logprobs.tokens) for choice in whole.choices)
    for choice in whole.choices:
        logprobs = choice.logprobs
        assert "".join(logprobs.tokens) == choice.text
        assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs)
        assert logprobs.text_offset == [sum(map(len, logprobs.tokens[:i])) for i in range(len(logprobs.tokens))]
        for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
            assert logprob <= 0 and top[token] == logprob
            assert 3 <= len(top) <= 4  # the 3 most likely, and the chosen token if it is not among them
            assert max(top.values()) == logprob  # temperature 0 picks the most likely

    stream = await sdk.completions.create(
        model="smollm2", prompt="The sky is", n=2, max_tokens=6, temperature=0, logprobs=1, stream=True
    )
    tokens: dict[int, list[str]] = {0: [], 1: []}
    texts = {0: "", 1: ""}
    finishes = {}
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.logprobs:
                assert choice.logprobs.text_offset[0] == sum(map(len, tokens[choice.index]))
                tokens[choice.index].extend(choice.logprobs.tokens)
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert sorted(finishes) == [0, 1]
    assert {index: "".join(parts) for index, parts in tokens.items()} == texts


@pytest.mark.model
async def test_chat_logprobs_top_alternatives(sdk, smollm2):
    response = await sdk.chat.completions.create(
        model="smollm2", messages=CHAT, max_tokens=8, temperature=0, logprobs=True, top_logprobs=4
    )
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    assert "".join(entry.token for entry in content) == response.choices[0].message.content
    for entry in content:
        assert entry.logprob <= 0 and bytes(entry.bytes).decode() == entry.token
        assert len(entry.top_logprobs) == 4
        top = [alternative.logprob for alternative in entry.top_logprobs]
        assert top == sorted(top, reverse=True)
        assert (entry.token, entry.logprob) == (entry.top_logprobs[0].token, top[0])

    streamed = await sdk.chat.completions.create(
        model="smollm2", messages=CHAT, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2, stream=True
    )
    entries = [
        entry
        async for chunk in streamed
        for choice in chunk.choices
        if choice.logprobs
        for entry in choice.logprobs.content
    ]
    assert entries and all(len(entry.top_logprobs) == 2 for entry in entries)


@pytest.mark.model
async def test_logit_bias_changes_the_greedy_first_token(sdk, smollm2):
    body = {"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 1, "temperature": 0}
    first = (await sdk.completions.create(**body)).choices[0].text
    llama = engine_host().engine_for("smollm2")._llama
    [token_id] = llama.tokenize(first.encode(), add_bos=False, special=False)
    biased = (await sdk.completions.create(**body, logit_bias={str(token_id): -100})).choices[0].text
    assert biased != first


@pytest.mark.model
async def test_more_choices_than_the_model_runs_at_once_is_400(client, smollm2):
    for stream in (False, True):
        body = {"model": "smollm2", "messages": CHAT, "n": 128, "stream": stream}
        error = assert_openai_error(
            await client.post("/v1/chat/completions", json=body), 400, "unsupported_parameter", "n"
        )
        assert "parallel" in error["message"]


@pytest.mark.model
async def test_logit_bias_outside_the_vocabulary_is_400(client, smollm2):
    body = {"model": "smollm2", "messages": CHAT, "logit_bias": {"999999999": 1}}
    assert_openai_error(await client.post("/v1/chat/completions", json=body), 400, "invalid_value", "logit_bias")


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"-1": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {"5": "1"}}, "logit_bias"),
        ({"logit_bias": [5]}, "logit_bias"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"n": "three"}, "n"),
        ({"logprobs": {"deep": [1]}}, "logprobs"),
        ({"logit_bias": {str(token): 1 for token in range(1025)}}, "logit_bias"),
        ({"logit_bias": {"5": [[[1]]]}}, "logit_bias"),
    ],
)
async def test_malformed_choice_and_logprob_fields_are_400(client, echo_model, extra, param):
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **extra}
    assert_openai_error(await client.post("/v1/chat/completions", json=body), 400, param=param)


@pytest.mark.parametrize("extra, param", [({"logprobs": 0}, "logprobs"), ({"n": 2}, "n"), ({"best_of": 3}, "best_of")])
async def test_legacy_features_the_echo_engine_lacks_are_400(client, echo_model, extra, param):
    body = {"model": "echo", "prompt": "hi", **extra}
    assert_openai_error(await client.post("/v1/completions", json=body), 400, "unsupported_parameter", param)


@pytest.mark.model
async def test_answers_with_choices_and_logprobs_match_the_openapi_schema(client, smollm2):
    """Schemathesis runs on the echo engine, which has neither: check these shapes here."""
    components = (await client.get("/v1/openapi.json")).json()["components"]

    def validator(schema: dict):
        return jsonschema_rs.validator_for({**schema, "components": components})

    chat = {"model": "smollm2", "messages": CHAT, "n": 2, "max_tokens": 4, "logprobs": True, "top_logprobs": 2}
    text = {"model": "smollm2", "prompt": "The sky is", "n": 2, "max_tokens": 4, "logprobs": 2}
    for path, body, whole, chunk in [
        ("/v1/chat/completions", chat, "ChatCompletion", CHAT_CHUNK),
        ("/v1/completions", text, "TextCompletion", TEXT_CHUNK),
    ]:
        answer = (await client.post(path, json=body)).json()
        validator({"$ref": f"#/components/schemas/{whole}"}).validate(answer)
        assert all(choice["logprobs"] for choice in answer["choices"])
        events = sse_events((await client.post(path, json={**body, "stream": True})).text)
        for event in events[:-1]:
            validator(chunk).validate(event)
        assert any(choice["logprobs"] for event in events[:-1] for choice in event["choices"])
