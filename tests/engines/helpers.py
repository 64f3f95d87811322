"""Small helpers the engine test modules share."""

import contextlib
from contextlib import aclosing

from engines.base import Chunk, GenerationRequest, SamplingParams

POEM = ({"role": "user", "content": "Write a short poem about the sea."},)
# Greedy and seeded: the same text on every run.
GREEDY = {"temperature": 0.0, "seed": 7}


def greedy_chat(messages=POEM, *, max_tokens: int = 16, **sampling) -> GenerationRequest:
    return GenerationRequest(
        request_id="t",
        messages=tuple(messages),
        sampling=SamplingParams(**{**GREEDY, "max_tokens": max_tokens, **sampling}),
    )


def greedy_completion(prompt: str, *, max_tokens: int = 16, **sampling) -> GenerationRequest:
    return GenerationRequest(
        request_id="t", prompt=prompt, sampling=SamplingParams(**{**GREEDY, "max_tokens": max_tokens, **sampling})
    )


@contextlib.contextmanager
def loaded(engine):
    """The engine loaded for a fixture's lifetime, unloaded after."""
    engine.load()
    try:
        yield engine
    finally:
        engine.unload()


async def collect(engine, request) -> list[Chunk]:
    """Every chunk of one generation; the iterator is closed even if a test stops early."""
    async with aclosing(engine.generate(request)) as chunks:
        return [chunk async for chunk in chunks]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)
