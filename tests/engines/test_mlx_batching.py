"""Continuous batching in the MLX engine, on the real bundled SmolLM2 GGUF.

mlx[cpu] decodes a few tokens a second here, so streams stay short. Nothing here times
anything: each test reads the chunks, or the scheduler's own counts.
"""

import asyncio
from contextlib import aclosing

import pytest

from engines.base import ModelSpec
from engines.errors import InvalidInputError
from engines.mlx import MlxEngine
from tests.engines.helpers import collect, greedy_completion, loaded, text_of
from tests.held import wait_until as wait_for

pytestmark = pytest.mark.model

CONTEXT = 512
PARALLEL = 2


@pytest.fixture(scope="module")
def engine(gguf_path):
    spec = ModelSpec(
        name="smollm2-mlx-batching", source=gguf_path, context_length=CONTEXT, options={"parallel": PARALLEL}
    )
    with loaded(MlxEngine(spec)) as engine:
        yield engine


def counting(start: int, *, max_tokens: int, **sampling):
    """A raw prompt that SmolLM2 continues by counting, far past any max_tokens used here."""
    return greedy_completion(
        ", ".join(str(n) for n in range(start, start + 4)) + ",", max_tokens=max_tokens, **sampling
    )


def ids_of(chunks):
    return [t for c in chunks for t in c.token_ids]


async def settled(engine):
    """Return once the scheduler has run a full turn after everything the test did so far."""
    await asyncio.to_thread(engine._scheduler.run, lambda: None)


def test_parallel_option_is_the_batch_capacity(engine):
    assert engine.parallel == PARALLEL
    state = engine.state()
    assert state["parallel"] == PARALLEL and state["running"] == 0


async def test_concurrent_streams_share_steps_and_count_their_tokens(engine):
    requests = [counting(1, max_tokens=5), counting(20, max_tokens=4), counting(300, max_tokens=3)]
    scheduler = engine._scheduler
    shared_before = scheduler.shared_steps
    results = await asyncio.gather(*(collect(engine, request) for request in requests))
    for request, chunks in zip(requests, results):
        final = chunks[-1]
        streamed = ids_of(chunks)
        assert final.finish_reason == "length", text_of(chunks)
        assert final.completion_tokens == len(streamed) == request.sampling.max_tokens
        assert final.prompt_tokens == len(engine._plain_encoder.encode(request.prompt).ids)
        assert text_of(chunks) == engine._encoder.decode(streamed, skip_special_tokens=True)
    # Three streams, room for two: some steps decoded both at once, never more than two.
    assert scheduler.shared_steps > shared_before
    assert scheduler.peak_batch == PARALLEL
    assert engine.in_flight == 0 and engine.state()["running"] == 0


async def test_cancelling_one_stream_frees_its_place_for_the_others(engine):
    """The long stream takes one of the two places; closing it lets the third stream in."""
    scheduler = engine._scheduler
    cancelled_before = scheduler.cancelled
    long_stream = engine.generate(counting(1, max_tokens=400))
    first = await anext(long_stream)
    assert first.text and first.finish_reason is None
    others = [asyncio.ensure_future(collect(engine, counting(start, max_tokens=4))) for start in (50, 700)]
    stats = engine.state
    await wait_for(
        lambda: stats()["running"] == 2 and stats()["num_requests_waiting"] == 1,
        "one shares the batch, one waits in the admission queue",
    )
    await long_stream.aclose()
    results = await asyncio.gather(*others)
    for chunks in results:
        assert chunks[-1].finish_reason == "length"
        assert chunks[-1].completion_tokens == len(ids_of(chunks)) == 4
    await settled(engine)
    assert scheduler.cancelled == cancelled_before + 1
    assert engine.state()["running"] == 0 and engine.state()["num_requests_waiting"] == 0
    assert engine.in_flight == 0


async def test_a_stop_string_ends_one_stream_and_not_its_neighbour(engine):
    whole = text_of(await collect(engine, counting(1, max_tokens=8)))
    words = whole.split()
    assert len(words) >= 3, whole
    stop = " " + words[1]
    stopped, full = await asyncio.gather(
        collect(engine, counting(1, max_tokens=8, stop=(stop,))), collect(engine, counting(40, max_tokens=8))
    )
    assert text_of(stopped) == whole[: whole.index(stop)]
    assert stopped[-1].finish_reason == "stop" and stopped[-1].completion_tokens < 8
    assert full[-1].finish_reason == "length" and full[-1].completion_tokens == 8
    await settled(engine)
    assert engine.state()["running"] == 0  # the stopped one left the batch, not only the stream


async def test_greedy_request_sent_alone_twice_gives_the_same_tokens(engine):
    request = greedy_completion("The three primary colours are", max_tokens=6)
    first = await collect(engine, request)
    second = await collect(engine, request)
    assert ids_of(first) == ids_of(second) and len(ids_of(first)) > 0
    assert text_of(first) == text_of(second)


async def test_each_sequence_samples_from_its_own_seed(engine):
    """Same prompt and seed in one batch: the same draws, which a shared PRNG could not give."""
    request = greedy_completion("Once upon a time", max_tokens=5, temperature=1.0, seed=99)
    twins = await asyncio.gather(collect(engine, request), collect(engine, request))
    alone = await collect(engine, request)
    assert ids_of(twins[0]) == ids_of(twins[1]) == ids_of(alone)


async def test_closing_a_queued_stream_never_reaches_the_model(engine):
    scheduler, stats = engine._scheduler, engine.state
    started_before = scheduler.started
    busy = [asyncio.ensure_future(collect(engine, counting(start, max_tokens=8))) for start in (5, 60)]
    await wait_for(lambda: stats()["running"] == 2, "both busy streams in the batch")
    async with aclosing(engine.generate(counting(900, max_tokens=3))) as queued:
        waiter = asyncio.ensure_future(anext(queued))
        await wait_for(lambda: stats()["num_requests_waiting"] == 1, "the third stream queued")
        waiter.cancel()  # the client goes away while its request waits for a place
        await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.gather(*busy)
    await settled(engine)
    assert scheduler.started == started_before + 2
    assert engine.state()["num_requests_waiting"] == 0 and engine.in_flight == 0


async def test_logit_bias_steers_only_its_own_sequence(engine):
    forced = engine._plain_encoder.encode(" banana").ids[0]
    biased, plain = await asyncio.gather(
        collect(engine, counting(1, max_tokens=3, logit_bias=((forced, 100.0),))),
        collect(engine, counting(1, max_tokens=3)),
    )
    assert ids_of(biased) == [forced] * 3
    assert forced not in ids_of(plain)
    with pytest.raises(InvalidInputError, match="logit_bias") as refused:
        await collect(engine, counting(1, max_tokens=1, logit_bias=((10**9, 1.0),)))
    assert refused.value.param == "logit_bias"
    assert engine.in_flight == 0
