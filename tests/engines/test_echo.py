import asyncio

import pytest

from engines.base import GenerationRequest, ModelSpec, SamplingParams
from engines.echo import EchoEngine, echo_tokenize
from engines.errors import ContextOverflowError
from tests.engines.helpers import collect


def make_engine(context_length: int = 64, **options) -> EchoEngine:
    engine = EchoEngine(ModelSpec(name="echo", source="", context_length=context_length, options=options))
    engine.load()
    return engine


def chat(text: str, **sampling) -> GenerationRequest:
    return GenerationRequest(
        request_id="r", sampling=SamplingParams(**sampling), messages=({"role": "user", "content": text},)
    )


def test_echo_tokenize_keeps_leading_whitespace_per_word():
    assert echo_tokenize("one  two\nthree") == ["one", "  two", "\nthree"]
    assert echo_tokenize("") == []


async def test_output_echoes_last_message_deterministically():
    engine = make_engine()
    request = GenerationRequest(
        request_id="r",
        sampling=SamplingParams(),
        messages=(
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "the quick brown fox"},
        ),
    )
    first = await collect(engine, request)
    second = await collect(engine, request)
    assert "".join(c.text for c in first) == "the quick brown fox"
    assert [(c.text, c.token_ids) for c in first] == [(c.text, c.token_ids) for c in second]
    final = first[-1]
    assert final.finish_reason == "stop"
    assert final.prompt_tokens == 2 + 4  # every message counts toward the prompt
    assert final.completion_tokens == 4
    assert all(c.finish_reason is None for c in first[:-1])


async def test_raw_prompt_is_echoed():
    engine = make_engine()
    chunks = await collect(engine, GenerationRequest(request_id="r", sampling=SamplingParams(), prompt="a b c"))
    assert "".join(c.text for c in chunks) == "a b c"
    assert chunks[-1].prompt_tokens == 3


async def test_max_tokens_cuts_with_length():
    engine = make_engine()
    chunks = await collect(engine, chat("one two three four five", max_tokens=2))
    assert "".join(c.text for c in chunks) == "one two"
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].completion_tokens == 2


async def test_stop_sequence_cuts_with_stop():
    engine = make_engine()
    chunks = await collect(engine, chat("alpha beta gamma delta", stop=(" gamma",)))
    assert "".join(c.text for c in chunks) == "alpha beta"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].completion_tokens == 3  # the token carrying the stop was generated
    assert chunks[-1].stop_sequence == " gamma"


async def test_context_overflow_raises():
    engine = make_engine(context_length=16)
    with pytest.raises(ContextOverflowError, match="maximum context length is 16"):
        await collect(engine, chat("w " * 10, max_tokens=7))
    assert engine.in_flight == 0


async def test_closing_the_iterator_early_cancels_and_decrements_in_flight():
    engine = make_engine(token_delay_ms=5)
    stream = engine.generate(chat("one two three four five six"))
    first = await anext(stream)
    assert first.text == "one"
    assert engine.in_flight == 1
    await stream.aclose()
    assert engine.in_flight == 0
    assert engine.peak_in_flight == 1


async def test_concurrent_requests_overlap():
    engine = make_engine(token_delay_ms=5)
    results = await asyncio.gather(*(collect(engine, chat(f"req {i} a b")) for i in range(3)))
    assert ["".join(c.text for c in r) for r in results] == [f"req {i} a b" for i in range(3)]
    assert engine.peak_in_flight == 3
    assert engine.in_flight == 0
