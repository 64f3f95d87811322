"""Continuous batching in the llama.cpp engine, on the real bundled SmolLM2 GGUF.

Nothing here times anything: each test reads the order in which chunks arrive, or the
scheduler's own counts.
"""

import asyncio
from contextlib import aclosing

import pytest

from engines.base import ModelSpec
from engines.llama_cpp import LlamaCppEngine
from tests.engines.helpers import collect, greedy_chat, greedy_completion, loaded, text_of
from tests.held import wait_until as wait_for

pytestmark = pytest.mark.model

CONTEXT = 1024
# A small step budget makes a long prompt take many steps, so the arrival order shows
# what each step did.
N_BATCH = 64


@pytest.fixture(scope="module")
def engine(gguf_path):
    spec = ModelSpec(
        name="smollm2-batching", source=gguf_path, context_length=CONTEXT, options={"parallel": 16, "n_batch": N_BATCH}
    )
    with loaded(LlamaCppEngine(spec)) as engine:
        yield engine


def counting(start: int, *, max_tokens: int, length: int = 4):
    """A raw prompt that SmolLM2 continues by counting, far past any max_tokens used here."""
    return greedy_completion(", ".join(str(n) for n in range(start, start + length)) + ",", max_tokens=max_tokens)


def prompt_ids(engine, request) -> list[int]:
    """The request's prompt through the model's own tokenizer, independent of the engine's path."""
    if request.messages is not None:
        prompt, adds_bos = engine.render_chat(list(request.messages))
        return engine._llama.tokenize(prompt.encode("utf-8"), add_bos=not adds_bos, special=True)
    return engine._llama.tokenize(request.prompt.encode("utf-8"), add_bos=True, special=False)


async def test_sixteen_streams_finish_with_the_tokenizers_counts(engine):
    topics = [
        "the sea",
        "a fox",
        "rain",
        "bread",
        "a clock",
        "mountains",
        "a violin",
        "snow",
        "the moon",
        "a garden",
        "trains",
        "coffee",
        "a lighthouse",
        "bees",
        "a library",
        "wind",
    ]
    requests = [
        greedy_chat(
            [{"role": "user", "content": f"Write {'a very ' * (i % 5)}short note about {topic}."}], max_tokens=8 + 3 * i
        )
        for i, topic in enumerate(topics)
    ]
    steps_before = engine._scheduler.steps
    results = await asyncio.gather(*(collect(engine, request) for request in requests))
    for request, chunks in zip(requests, results):
        final = chunks[-1]
        streamed = [t for c in chunks for t in c.token_ids]
        assert final.finish_reason in ("stop", "length")
        assert final.prompt_tokens == len(prompt_ids(engine, request))
        assert final.completion_tokens == len(streamed)
        if final.finish_reason == "length":
            assert len(streamed) == request.sampling.max_tokens
        assert engine._llama.detokenize(streamed).decode("utf-8", errors="replace") == text_of(chunks)
    # One sequence at a time would take a step per token; batched, a step serves many.
    completion_tokens = sum(chunks[-1].completion_tokens for chunks in results)
    assert engine._scheduler.steps - steps_before < completion_tokens / 2
    assert engine._scheduler.stats()["peak_running"] >= 8
    assert engine.in_flight == 0


async def test_a_long_prompt_does_not_stall_running_streams(engine):
    arrivals: list[tuple[object, object]] = []  # (stream, chunk) in arrival order

    async def run(name, request, started: asyncio.Event | None = None):
        async with aclosing(engine.generate(request)) as chunks:
            async for chunk in chunks:
                arrivals.append((name, chunk))
                if started is not None:
                    started.set()

    started = [asyncio.Event() for _ in range(8)]
    streams = [asyncio.create_task(run(i, counting(10 * i, max_tokens=80), started[i])) for i in range(8)]
    for event in started:
        await event.wait()
    long_request = greedy_completion("The sea is wide and the waves roll in from far away. " * 50, max_tokens=4)
    n_long = len(prompt_ids(engine, long_request))
    assert n_long > 8 * N_BATCH
    arrivals.append(("submitted", None))
    await asyncio.gather(*streams, run("long", long_request))

    names = [name for name, _ in arrivals]
    window = arrivals[names.index("submitted") : names.index("long")]
    # The prompt needs at least n_long / N_BATCH steps, and every step gives each running
    # stream its next token before any prompt chunk gets the rest of the budget.
    for i in range(8):
        emitted = sum(len(chunk.token_ids) for name, chunk in window if name == i)
        assert emitted >= n_long // N_BATCH, f"stream {i} emitted {emitted} tokens while the prompt was evaluated"
    for i in range(8):
        final = [chunk for name, chunk in arrivals if name == i][-1]
        assert final.finish_reason == "length" and final.completion_tokens == 80
    assert [chunk for name, chunk in arrivals if name == "long"][-1].prompt_tokens == n_long


async def test_cancelling_one_of_eight_frees_its_slot(gguf_path):
    spec = ModelSpec(
        name="smollm2-eight", source=gguf_path, context_length=512, options={"parallel": 8, "n_batch": N_BATCH}
    )
    with loaded(LlamaCppEngine(spec)) as engine:
        arrivals: list[tuple[object, object]] = []

        async def run(name, chunks):
            async with aclosing(chunks):
                async for chunk in chunks:
                    arrivals.append((name, chunk))

        victim = engine.generate(counting(500, max_tokens=60))
        assert (await anext(victim)).token_ids
        others = [asyncio.create_task(run(i, engine.generate(counting(10 * i, max_tokens=60)))) for i in range(1, 8)]
        await wait_for(lambda: engine._scheduler.stats()["running"] == 8, "all eight slots running")
        # Every slot is taken, so a ninth request waits in the engine's admission queue.
        ninth = asyncio.create_task(run("ninth", engine.generate(counting(900, max_tokens=4))))
        await wait_for(lambda: engine.admission.waiting == 1, "the ninth request queued")
        assert not any(name == "ninth" for name, _ in arrivals)

        await victim.aclose()
        await ninth
        await asyncio.gather(*others)

        names = [name for name, _ in arrivals]
        finals = [i for i, (name, chunk) in enumerate(arrivals) if chunk.finish_reason is not None and name != "ninth"]
        # The ninth got the freed slot while the other seven were still generating.
        assert names.index("ninth") < min(finals)
        for i in range(1, 8):
            chunks = [chunk for name, chunk in arrivals if name == i]
            assert chunks[-1].finish_reason == "length"
            assert chunks[-1].completion_tokens == sum(len(c.token_ids) for c in chunks) == 60
        assert [chunk for name, chunk in arrivals if name == "ninth"][-1].completion_tokens == 4
        await wait_for(lambda: engine._scheduler.stats()["running"] == 0, "the scheduler idle")
        assert engine.in_flight == 0


async def test_a_shared_prefix_is_served_from_the_cache(engine):
    colours = ["red", "green", "blue", "amber", "violet", "grey", "white", "black"]
    context = "Inventory notes. " + " ".join(f"Crate {n} holds {colours[n % 8]} lanterns." for n in range(60))
    first = await collect(engine, greedy_completion(context + "\nQuestion: what does crate 3 hold?", max_tokens=4))
    second_request = greedy_completion(context + "\nQuestion: what does crate 7 hold?", max_tokens=4)
    second = await collect(engine, second_request)
    shared = len(prompt_ids(engine, greedy_completion(context)))
    assert shared > 300
    assert first[-1].cached_tokens < shared // 2  # this text is new to the engine
    # The tokens at the join can tokenize differently; everything before them is reused.
    assert second[-1].cached_tokens >= shared - 2
    assert second[-1].prompt_tokens == len(prompt_ids(engine, second_request))


# Prompts whose greedy text changes if a repeat reuses all but the last prompt token (that
# token's logits then come from a batch of one instead of the first run's chunk).
SOLO_PROMPTS = [
    "Tell me about the tides and the moon. " * 12,
    "Name a colour.",
    "How do airplanes fly?",
    "What makes a good friend?",
    "List some fruits and their colours.",
]


@pytest.mark.parametrize("content", SOLO_PROMPTS, ids=range(len(SOLO_PROMPTS)))
async def test_the_same_request_alone_twice_gives_the_same_text(engine, content):
    """What temperature-0 determinism holds: a repeat sent alone matches, token for token."""
    request = greedy_chat([{"role": "user", "content": content}], max_tokens=48)
    first = await collect(engine, request)
    second = await collect(engine, request)
    # The repeat reused the first run's KV up to the chunk that held the last prompt token.
    assert first[-1].prompt_tokens - N_BATCH <= second[-1].cached_tokens < second[-1].prompt_tokens
    assert second[-1].cached_tokens > 0
    assert text_of(first).strip()
    assert [(c.text, c.token_ids) for c in first] == [(c.text, c.token_ids) for c in second]
