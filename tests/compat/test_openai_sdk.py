"""The official openai SDK against the platform started the way the README says."""

from __future__ import annotations

import sqlite3
import time

import httpx
import openai
import pytest

from models_registry.bundled import bundled_model_path

from .live_server import start_live_server

pytestmark = [pytest.mark.live, pytest.mark.model]

CHAT = [{"role": "user", "content": "Tell me about the sea in two sentences."}]
# Settings the test process may have exported, each of which would change what this module tests
# (or stop the server starting) if it reached ./run.sh. PYTHONUNBUFFERED goes too: the fixture
# must set it itself for the "API key:" line to be read.
EXPORTED = {
    "INFERENCE_ENGINE": "echo",
    "REDIS_URL": "redis://nowhere.invalid:6379/0",
    "LOG_PROMPTS": "true",
    "DJANGO_SETTINGS_MODULE": "no.such.settings",
}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The README's server, started while the test process exports settings that must not reach it."""
    with pytest.MonkeyPatch.context() as environment:
        for name, value in EXPORTED.items():
            environment.setenv(name, value)
        environment.delenv("PYTHONUNBUFFERED", raising=False)
        server = start_live_server(tmp_path_factory.mktemp("openai_sdk"))
    assert server.api_key, server.log()
    yield server
    server.stop()
    assert server.process.returncode is not None


@pytest.fixture(scope="module")
def sent():
    """Completion requests this module sent through `sdk`, with the status of each answer."""
    return []


@pytest.fixture(scope="module")
def sdk(live, sent):
    def count(response: httpx.Response) -> None:
        if response.request.method == "POST" and response.request.url.path.endswith("/completions"):
            sent.append(response.status_code)

    http_client = httpx.Client(event_hooks={"response": [count]})
    yield openai.OpenAI(
        base_url=f"{live.base_url}/v1", api_key=live.api_key, max_retries=0, timeout=120, http_client=http_client
    )
    http_client.close()


def _status(live) -> dict:
    response = httpx.get(
        f"{live.base_url}/v1/system/status", headers={"Authorization": f"Bearer {live.api_key}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_an_exported_environment_does_not_reach_the_server(live):
    status = _status(live)
    assert (status["mode"], status["inference_engine_setting"]) == ("embedded", "auto")
    # /health turns ready with the first model loaded; the embedding model may still be loading.
    deadline = time.monotonic() + 60
    while len(status["engines"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        status = _status(live)
    assert [(engine["engine"], engine["model"]) for engine in status["engines"]] == [
        ("llama_cpp", "smollm2"),
        ("llama_cpp", "smollm2-embed"),
    ]


@pytest.fixture(scope="module")
def tokenizer():
    from llama_cpp import Llama

    return Llama(model_path=str(bundled_model_path()), n_ctx=512, verbose=False, vocab_only=True)


def test_list_models(sdk):
    models = sdk.models.list()
    assert [m.id for m in models.data] == ["smollm2", "smollm2-embed"]  # the bundled GGUF, and for embeddings
    assert sdk.models.retrieve("smollm2").id == "smollm2"


def test_chat_usage_matches_the_tokenizer(sdk, tokenizer):
    response = sdk.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=16, temperature=0, seed=3)
    text = response.choices[0].message.content
    assert text.strip()
    usage = response.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # The model's chat template wraps the message; the prompt count comes from that.
    rendered = tokenizer.metadata["tokenizer.chat_template"]
    assert rendered  # the GGUF carries its own template
    content_tokens = len(tokenizer.tokenize(CHAT[0]["content"].encode(), add_bos=False))
    assert usage.prompt_tokens > content_tokens
    # Completion tokens: re-tokenizing the text gives the same count (within merges at the edges).
    assert abs(len(tokenizer.tokenize(text.encode(), add_bos=False)) - usage.completion_tokens) <= 1
    if response.choices[0].finish_reason == "length":
        assert usage.completion_tokens == 16


def test_streaming_arrives_in_pieces_and_matches(sdk):
    kwargs = dict(model="smollm2", messages=CHAT, max_tokens=24, temperature=0, seed=11)
    whole = sdk.chat.completions.create(**kwargs).choices[0].message.content
    pieces, usage = [], None
    for chunk in sdk.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == whole
    assert len(pieces) >= 10, "tokens should arrive as separate events"
    assert usage is not None and usage.completion_tokens <= 24


def test_the_first_tokens_arrive_while_the_model_is_still_generating(sdk, live):
    """Spread over the generation, not sent in one burst at its end: when the first piece is here,
    the engine still has the request in flight (400 tokens leave it far from done)."""
    before = len(_records(live, "WHERE finish_reason = 'cancelled'"))
    stream = sdk.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=400, temperature=0, stream=True)
    first = next(chunk for chunk in stream if chunk.choices and chunk.choices[0].delta.content)
    try:
        in_flight = {engine["model"]: engine["in_flight"] for engine in _status(live)["engines"]}
        assert in_flight["smollm2"] == 1, (in_flight, first)
    finally:
        stream.close()
    _wait_for_records(live, "WHERE finish_reason = 'cancelled'", before + 1)  # the engine let it go


def test_text_completion(sdk):
    response = sdk.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=6, temperature=0)
    assert response.object == "text_completion"
    assert response.choices[0].text.strip()
    assert 0 < response.usage.completion_tokens <= 6
    streamed = "".join(
        c.choices[0].text
        for c in sdk.completions.create(
            model="smollm2", prompt="The capital of France is", max_tokens=6, temperature=0, stream=True
        )
    )
    assert streamed == response.choices[0].text


def test_wrong_key(live):
    bad = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key="ipk-00000000-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_unknown_model(sdk):
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="no-such-model", messages=CHAT)


# n=64 is within OpenAI's range but more choices than the model's slots (parallel).
@pytest.mark.parametrize(
    "bad",
    [dict(temperature=9), dict(max_tokens=100_000), dict(n=64), dict(messages=[{"role": "nobody", "content": "x"}])],
)
def test_bad_input(sdk, bad):
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(**{"model": "smollm2", "messages": CHAT, **bad})


def _records(live, where: str) -> list[tuple]:
    db = live.log_path.parent / "live.sqlite3"
    with sqlite3.connect(db) as connection:
        return connection.execute(
            f"SELECT finish_reason, completion_tokens, status_code, stream FROM monitoring_requestrecord {where}"
        ).fetchall()


def _wait_for_records(live, where: str, count: int) -> list[tuple]:
    """The records matching `where` once there are `count` of them (records are written as requests end)."""
    deadline = time.monotonic() + 60
    while len(rows := _records(live, where)) < count:
        assert time.monotonic() < deadline, f"{len(rows)} records {where}, expected {count}"
        time.sleep(0.2)
    return rows


def test_closing_a_stream_cancels_generation(sdk, live):
    greedy = dict(model="smollm2", messages=CHAT, max_tokens=8, temperature=0)
    reference = sdk.chat.completions.create(**greedy).choices[0].message.content
    before = len(_records(live, "WHERE finish_reason = 'cancelled'"))
    stream = sdk.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=1500, stream=True)
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()
    cancelled = _wait_for_records(live, "WHERE finish_reason = 'cancelled'", before + 1)
    _finish_reason, completion_tokens, status_code, stream_flag = cancelled[-1]
    assert status_code == 499 and stream_flag
    assert completion_tokens < 100, "generation went on after the client left"
    # The engine is free and unharmed: the same greedy request gives the same answer as before.
    after = sdk.chat.completions.create(**greedy)
    assert after.choices[0].message.content.strip() and after.choices[0].message.content == reference
    assert after.usage.completion_tokens == 8 and after.choices[0].finish_reason == "length"


def test_every_request_left_one_record(sdk, live, sent):
    """One record per completion request this module sent, with the status the client saw
    (a stream the client closed is 200 on the wire and 499 in its record)."""
    sdk.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        sdk.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="smollm2", messages=CHAT, temperature=9)
    rows = _wait_for_records(live, "", len(sent))
    assert len(rows) == len(sent)
    on_the_wire = [200 if status == 499 else status for _, _, status, _ in rows]
    assert sorted(on_the_wire) == sorted(sent)


def test_prompts_are_not_logged(live):
    """The README's default (LOG_PROMPTS off) holds whatever the test process exported."""
    assert CHAT[0]["content"] not in live.log()


def test_restart_is_idempotent_and_the_first_key_still_works(live):
    live.stop()
    again = start_live_server(live.log_path.parent, ready_timeout=120)
    try:
        assert "already issued" in again.log()
        assert "Admin login:" not in again.log()  # no second superuser
        sdk = openai.OpenAI(base_url=f"{again.base_url}/v1", api_key=live.api_key, max_retries=0)
        assert [m.id for m in sdk.models.list().data] == ["smollm2", "smollm2-embed"]
    finally:
        again.stop()
