"""n choices, log-probabilities and logit bias in the llama.cpp engine, on the real SmolLM2 GGUF."""

import asyncio
import math

import pytest

from engines.base import ModelSpec
from engines.errors import InvalidInputError, UnsupportedParameterError
from engines.llama_cpp import LlamaCppEngine
from tests.engines.helpers import collect, greedy_chat, greedy_completion, loaded

pytestmark = pytest.mark.model

PARALLEL = 6


@pytest.fixture(scope="module")
def engine(gguf_path):
    spec = ModelSpec(
        name="smollm2-choices", source=gguf_path, context_length=1024, options={"parallel": PARALLEL, "n_batch": 64}
    )
    with loaded(LlamaCppEngine(spec)) as engine:
        yield engine


def by_choice(chunks) -> dict[int, list[int]]:
    """Token ids streamed for each choice index."""
    tokens: dict[int, list[int]] = {}
    for chunk in chunks:
        tokens.setdefault(chunk.index, []).extend(chunk.token_ids)
    return tokens


async def wait_idle(engine):
    """Until every slot is given back (just after the final chunk); bounded by iterations, not time."""
    for _ in range(6000):
        if engine._scheduler.stats()["running"] == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the scheduler never went idle")


async def test_three_choices_share_one_prompt_evaluation(engine):
    request = greedy_chat(
        [{"role": "user", "content": "Invent a name for a small red boat."}],
        max_tokens=12,
        temperature=1.0,
        seed=11,
        n=3,
    )
    scheduler = engine._scheduler
    evaluated_before = scheduler.prompt_tokens_evaluated
    chunks = await collect(engine, request)
    final = chunks[-1]
    assert [c for c in chunks if c.finish_reason is not None] == [final]
    # The prompt went through decode once, not once per choice.
    assert scheduler.prompt_tokens_evaluated - evaluated_before == final.prompt_tokens - final.cached_tokens
    tokens = by_choice(chunks)
    assert sorted(tokens) == [0, 1, 2]
    assert final.completion_tokens == sum(len(ids) for ids in tokens.values())
    assert len(final.finish_reasons) == 3 and final.finish_reason == final.finish_reasons[0]
    for index, reason in enumerate(final.finish_reasons):
        assert reason in ("stop", "length")
        if reason == "length":
            assert len(tokens[index]) == 12
    # Seeds seed, seed+1, seed+2: the choices differ, and the same request gives them again.
    assert len({tuple(ids) for ids in tokens.values()}) > 1
    assert by_choice(await collect(engine, request)) == tokens
    await wait_idle(engine)
    assert engine.in_flight == 0


async def test_choices_each_end_on_their_own_and_free_their_slots(engine):
    request = greedy_completion("1, 2, 3, 4,", max_tokens=1, n=PARALLEL)
    final = (await collect(engine, request))[-1]
    assert final.finish_reasons == ("length",) * PARALLEL and final.completion_tokens == PARALLEL
    # Every slot was taken and given back: a request for all of them again is admitted.
    again = await collect(engine, greedy_completion("5, 6, 7,", max_tokens=2, n=PARALLEL))
    assert again[-1].completion_tokens == 2 * PARALLEL


async def test_more_choices_than_slots_is_refused(engine):
    with pytest.raises(UnsupportedParameterError) as refused:
        await collect(engine, greedy_chat(n=PARALLEL + 1))
    assert refused.value.param == "n" and str(PARALLEL) in str(refused.value)


async def test_closing_a_request_for_n_choices_cancels_all_of_them(engine):
    generation = engine.generate(greedy_completion("1, 2, 3, 4,", max_tokens=400, n=3, temperature=0.8))
    assert (await anext(generation)).token_ids
    await generation.aclose()
    steps_at_close = engine._scheduler.steps
    await wait_idle(engine)
    # All three choices left the batch within a step or two, not only the one that streamed.
    assert engine._scheduler.steps - steps_at_close <= 3


async def test_logprobs_are_sorted_and_the_greedy_token_is_the_top_one(engine):
    chunks = await collect(engine, greedy_chat(max_tokens=10, logprobs=True, top_logprobs=5))
    entries = [entry for chunk in chunks for entry in chunk.logprobs]
    assert all(len(chunk.logprobs) == len(chunk.token_ids) for chunk in chunks)
    assert len(entries) == chunks[-1].completion_tokens == 10
    for chunk in chunks:
        for token_id, entry in zip(chunk.token_ids, chunk.logprobs):
            assert entry.logprob <= 0
            assert bytes(entry.bytes) == engine._llama.detokenize([token_id], special=True)
            assert len(entry.top) == 5
            top = [alternative.logprob for alternative in entry.top]
            assert top == sorted(top, reverse=True)
            # Greedy: the chosen token is the most likely one.
            assert (entry.token, entry.logprob) == (entry.top[0].token, entry.top[0].logprob)
            assert sum(math.exp(p) for p in top) <= 1 + 1e-6


async def test_no_logprobs_unless_asked(engine):
    chunks = await collect(engine, greedy_chat(max_tokens=4))
    assert all(chunk.logprobs == () for chunk in chunks)


async def test_choices_carry_their_own_logprobs(engine):
    chunks = await collect(engine, greedy_chat(max_tokens=6, n=2, temperature=1.0, logprobs=True, top_logprobs=0))
    for chunk in chunks:
        assert len(chunk.logprobs) == len(chunk.token_ids)
        assert all(entry.top == () and entry.logprob <= 0 for entry in chunk.logprobs)
    assert sum(len(chunk.logprobs) for chunk in chunks) == chunks[-1].completion_tokens


async def test_logit_bias_bans_the_greedy_first_token(engine):
    request = greedy_completion("The capital of France is", max_tokens=1)
    first = (await collect(engine, request))[0].token_ids[0]
    biased = await collect(
        engine, greedy_completion("The capital of France is", max_tokens=1, logit_bias=((first, -100.0),))
    )
    assert biased[0].token_ids[0] != first


async def test_logit_bias_outside_the_vocabulary_is_refused(engine):
    with pytest.raises(InvalidInputError) as refused:
        await collect(engine, greedy_chat(logit_bias=((engine._llama.n_vocab(), 5.0),)))
    assert refused.value.param == "logit_bias"
