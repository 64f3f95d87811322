"""The official openai SDK against the platform started the way the README says."""

from __future__ import annotations

import sqlite3
import time

import openai
import pytest

from models_registry.bundled import bundled_model_path

from .live_server import start_live_server

pytestmark = [pytest.mark.live, pytest.mark.model]

CHAT = [{"role": "user", "content": "Tell me about the sea in two sentences."}]


@pytest.fixture(scope="module")
def tokenizer():
    from llama_cpp import Llama

    return Llama(model_path=str(bundled_model_path()), n_ctx=512, verbose=False, vocab_only=True)


def test_list_models(sdk):
    models = sdk.models.list()
    assert [m.id for m in models.data] == ["smollm2"]
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
    arrivals, pieces, usage = [], [], None
    for chunk in sdk.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            arrivals.append(time.perf_counter())
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == whole
    assert len(pieces) >= 10, "tokens should arrive as separate events"
    assert arrivals == sorted(arrivals) and arrivals[-1] > arrivals[0]  # spread over time, not one burst
    assert usage is not None and usage.completion_tokens <= 24


def test_text_completion(sdk):
    response = sdk.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=6,
                                      temperature=0)
    assert response.object == "text_completion"
    assert response.choices[0].text.strip()
    assert 0 < response.usage.completion_tokens <= 6
    streamed = "".join(c.choices[0].text for c in sdk.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=6, temperature=0, stream=True))
    assert streamed == response.choices[0].text


def test_wrong_key(live):
    bad = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key="ipk-00000000-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_unknown_model(sdk):
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="no-such-model", messages=CHAT)


@pytest.mark.parametrize("bad", [dict(temperature=9), dict(max_tokens=100_000), dict(n=3),
                                 dict(messages=[{"role": "nobody", "content": "x"}])])
def test_bad_input(sdk, bad):
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(**{"model": "smollm2", "messages": CHAT, **bad})


def _records(live, where: str) -> list[tuple]:
    db = live.log_path.parent / "live.sqlite3"
    with sqlite3.connect(db) as connection:
        return connection.execute(
            f"SELECT finish_reason, completion_tokens, status_code, stream FROM monitoring_requestrecord {where}"
        ).fetchall()


def test_closing_a_stream_cancels_generation(sdk, live):
    before = len(_records(live, "WHERE finish_reason = 'cancelled'"))
    stream = sdk.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=1500, stream=True)
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()
    deadline = time.monotonic() + 30
    while len(cancelled := _records(live, "WHERE finish_reason = 'cancelled'")) == before:
        assert time.monotonic() < deadline, "no cancelled record appeared"
        time.sleep(0.2)
    finish_reason, completion_tokens, status_code, stream_flag = cancelled[-1]
    assert status_code == 499 and stream_flag
    assert completion_tokens < 100, "generation went on after the client left"
    after = sdk.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=2)
    assert after.choices[0].message.content is not None


def test_every_request_left_one_record(live):
    rows = _records(live, "")
    assert rows and all(status in (200, 400, 404, 499) for _, _, status, _ in rows)


def test_restart_is_idempotent_and_the_first_key_still_works(live):
    live.stop()
    again = start_live_server(live.log_path.parent, ready_timeout=120)
    try:
        assert "already issued" in again.log()
        assert "Admin login:" not in again.log()  # no second superuser
        sdk = openai.OpenAI(base_url=f"{again.base_url}/v1", api_key=live.api_key, max_retries=0)
        assert [m.id for m in sdk.models.list().data] == ["smollm2"]
    finally:
        again.stop()
