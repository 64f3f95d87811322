"""Small helpers the engine test modules share."""

from contextlib import aclosing

from engines.base import Chunk


async def collect(engine, request) -> list[Chunk]:
    """Every chunk of one generation; the iterator is closed even if a test stops early."""
    async with aclosing(engine.generate(request)) as chunks:
        return [chunk async for chunk in chunks]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)
