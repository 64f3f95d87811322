"""The echo engine's tokenizer and embedding jobs: deterministic, for plumbing tests and benchmarks."""

import math

import pytest

from engines.base import GenerationRequest, ModelSpec, SamplingParams
from engines.echo import EchoEngine
from engines.echo_vectors import word_id
from engines.errors import InvalidInputError, UnsupportedParameterError
from tests.engines.helpers import collect


def make_engine(**options) -> EchoEngine:
    engine = EchoEngine(ModelSpec(name="echo", source="", context_length=8, options=options))
    engine.load()
    return engine


def job(task, **fields) -> GenerationRequest:
    return GenerationRequest(request_id="j", sampling=SamplingParams(), task=task, **fields)


async def test_tokenize_counts_what_generation_counts_and_detokenize_reads_it_back():
    engine = make_engine()
    messages = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "one  two\nthree"})
    (tokens,) = await collect(engine, job("tokenize", messages=messages))
    generated = await collect(engine, GenerationRequest(request_id="g", sampling=SamplingParams(), messages=messages))
    assert len(tokens.token_ids) == generated[-1].prompt_tokens == 5
    (prompt,) = await collect(engine, job("tokenize", prompt="one  two\nthree"))
    assert prompt.token_ids == (word_id("one"), word_id("  two"), word_id("\nthree"))
    (text,) = await collect(engine, job("detokenize", token_ids=prompt.token_ids))
    assert text.text == "one  two\nthree"
    # Ids are the same in every process: a fresh engine gives the same ones.
    assert (await collect(make_engine(), job("tokenize", prompt="one  two\nthree")))[0].token_ids == prompt.token_ids


async def test_detokenize_refuses_ids_it_never_gave_out():
    with pytest.raises(InvalidInputError) as caught:
        await collect(make_engine(), job("detokenize", token_ids=(7,)))
    assert caught.value.param == "tokens"


async def test_embeddings_are_unit_bags_of_words():
    engine = make_engine(embedding_size=16)
    chunks = await collect(engine, job("embed", inputs=("red fish", "red fish blue", "tax form", "red fish")))
    vectors = [c.embedding for c in chunks[:-1]]
    assert [c.index for c in chunks[:-1]] == [0, 1, 2, 3]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].prompt_tokens == 9
    assert all(len(v) == 16 and math.isclose(sum(x * x for x in v), 1.0) for v in vectors)
    assert vectors[0] == vectors[3]

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    ids = tuple(word_id(w) for w in ("red", " fish"))
    assert (await collect(engine, job("embed", inputs=(ids,))))[0].embedding == vectors[0]


@pytest.mark.parametrize(
    ("inputs", "dimensions", "error", "param"),
    [
        (("   ",), None, InvalidInputError, "input"),
        (("a b c d e f g h i",), None, InvalidInputError, "input"),
        (("a",), 3, UnsupportedParameterError, "dimensions"),
    ],
)
async def test_bad_embed_jobs_name_their_field(inputs, dimensions, error, param):
    with pytest.raises(error) as caught:
        await collect(make_engine(), job("embed", inputs=inputs, dimensions=dimensions))
    assert caught.value.param == param
