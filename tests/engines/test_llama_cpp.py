"""The llama.cpp engine on the real bundled SmolLM2 GGUF."""

import asyncio

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from engines.base import ModelSpec
from engines.errors import ContextOverflowError, InvalidInputError
from engines.inputs import render_template
from engines.llama_cpp import LlamaCppEngine
from tests.engines.helpers import POEM, collect, greedy_completion, loaded, text_of
from tests.engines.helpers import greedy_chat as chat

pytestmark = pytest.mark.model

CONTEXT = 512


@pytest.fixture(scope="module")
def engine(gguf_path):
    with loaded(LlamaCppEngine(ModelSpec(name="smollm2", source=gguf_path, context_length=CONTEXT))) as engine:
        yield engine


def prompt_ids(engine, messages) -> list[int]:
    """The rendered chat prompt through the model's own tokenizer, independent of the engine's path."""
    prompt, adds_bos = engine.render_chat(list(messages))
    return engine._llama.tokenize(prompt.encode("utf-8"), add_bos=not adds_bos, special=True)


async def test_greedy_chat_is_deterministic(engine):
    first = await collect(engine, chat())
    second = await collect(engine, chat())
    assert text_of(first).strip()
    assert [(c.text, c.token_ids) for c in first] == [(c.text, c.token_ids) for c in second]
    assert first[-1].finish_reason in ("stop", "length")


async def test_seed_makes_sampling_repeatable(engine):
    """At temperature 0 the seed is moot; at 1.0 only the seed can make two runs agree."""
    first = text_of(await collect(engine, chat(temperature=1.0, seed=1234)))
    second = text_of(await collect(engine, chat(temperature=1.0, seed=1234)))
    assert first == second


async def test_counts_come_from_the_model_tokenizer(engine):
    chunks = await collect(engine, chat())
    final = chunks[-1]
    ids = prompt_ids(engine, POEM)
    # Template markers are single special tokens, and BOS is not added twice.
    rendered, _ = engine.render_chat(list(POEM))
    assert ids.count(engine._llama.token_bos()) == rendered.count("<|im_start|>")
    assert final.prompt_tokens == len(ids)
    streamed = [t for c in chunks for t in c.token_ids]
    assert final.completion_tokens == len(streamed) == 16
    assert engine._llama.detokenize(streamed).decode("utf-8", errors="replace") == text_of(chunks)


async def test_stop_sequence_cuts_text(engine):
    full = text_of(await collect(engine, chat()))
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    chunks = await collect(engine, chat(stop=(stop,)))
    assert text_of(chunks) == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].stop_sequence == stop


async def test_max_tokens_beyond_context_raises(engine):
    with pytest.raises(ContextOverflowError, match=f"maximum context length is {CONTEXT}"):
        await collect(engine, chat(max_tokens=CONTEXT))
    assert engine.in_flight == 0


async def until_idle(engine):
    """Wait until the scheduler has no sequence left (it drops a cancelled one at its next step)."""
    for _ in range(6000):
        if engine._scheduler.stats()["running"] == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the scheduler never went idle: {engine._scheduler.stats()}")


async def test_closing_the_stream_stops_decoding(engine):
    stream = engine.generate(chat())
    assert (await anext(stream)).text
    assert (await anext(stream)).text
    await stream.aclose()
    assert engine.in_flight == 0
    await until_idle(engine)
    # The slot keeps what was evaluated as a cached prefix: read how far it got.
    ids = prompt_ids(engine, POEM)
    evaluated = max(len(t) for t in engine._scheduler.slot_tokens() if t[: len(ids)] == ids)
    # Uncancelled it would reach prompt + 15; a little slack for a loaded machine.
    assert evaluated <= len(ids) + 6, "decoding went on after the consumer left"

    after = await collect(engine, chat(max_tokens=4))
    assert after[-1].finish_reason == "length" and after[-1].completion_tokens == 4
    assert engine.in_flight == 0


async def test_concurrent_requests_all_complete(engine):
    prompts = ["Name a colour.", "Name a fruit.", "Name an animal.", "Name a city."]
    results = await asyncio.gather(
        *(collect(engine, chat([{"role": "user", "content": p}], max_tokens=4)) for p in prompts)
    )
    for chunks in results:
        assert chunks[-1].finish_reason in ("stop", "length")
        assert 1 <= chunks[-1].completion_tokens <= 4
    assert engine.peak_in_flight >= 4
    assert engine.in_flight == 0


async def test_event_loop_runs_while_the_model_computes(engine):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    # A longish prompt makes prefill take a while before the first chunk can arrive.
    messages = [{"role": "user", "content": "Tell me about the sea and the waves. " * 12}]
    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        start = ticks
        stream = engine.generate(chat(messages, max_tokens=2))
        await anext(stream)
        ticks_before_first_chunk = ticks - start
        await stream.aclose()
    finally:
        task.cancel()
    # A blocked loop could tick at most once before the first chunk.
    assert ticks_before_first_chunk >= 5


@pytest.mark.parametrize(
    "request_",
    [
        greedy_completion("\ud800 lone surrogate"),
        chat([{"role": "user", "content": "x\udfff"}]),
    ],
    ids=["prompt", "messages"],
)
async def test_text_that_is_not_unicode_is_bad_input(engine, request_):
    """A lone surrogate is valid JSON but no character: the client's error, not a crash."""
    with pytest.raises(InvalidInputError, match="surrogate") as refused:
        await collect(engine, request_)
    assert refused.value.param == ("prompt" if request_.prompt is not None else "messages")
    assert engine.in_flight == 0
    assert (await collect(engine, chat(max_tokens=2)))[-1].finish_reason in ("stop", "length")


async def test_empty_prompt_never_reaches_llama_cpp(engine):
    with pytest.raises(InvalidInputError, match="must not be empty"):
        await collect(engine, greedy_completion(""))
    assert engine.in_flight == 0


def test_a_template_that_refuses_the_messages_is_bad_input():
    """Templates refuse conversations with raise_exception (roles that do not alternate)."""
    template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with a user message') }}{% endif %}x"
    formatter = Jinja2ChatFormatter(template=template, eos_token="", bos_token="")
    render = lambda messages: formatter(messages=messages)  # noqa: E731
    with pytest.raises(InvalidInputError, match="must start with a user message") as refused:
        render_template(render, [{"role": "assistant", "content": None}])
    assert refused.value.param == "messages"
    assert render_template(render, [{"role": "user", "content": None}]).prompt == "x"
