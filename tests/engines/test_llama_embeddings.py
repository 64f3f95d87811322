"""Embeddings and the tokenizer jobs of the llama.cpp engine, on the real bundled SmolLM2 GGUF."""

import math

import pytest

from engines.base import GenerationRequest, ModelSpec, SamplingParams
from engines.errors import ContextOverflowError, InvalidInputError, UnsupportedParameterError
from engines.llama_cpp import LlamaCppEngine
from tests.engines.helpers import POEM, collect, greedy_chat, loaded

pytestmark = pytest.mark.model

EMBED_CONTEXT = 128


@pytest.fixture(scope="module")
def embedder(gguf_path):
    spec = ModelSpec(name="smollm2-embed", source=gguf_path, context_length=EMBED_CONTEXT, task="embed")
    with loaded(LlamaCppEngine(spec)) as engine:
        yield engine


@pytest.fixture(scope="module")
def generator(gguf_path):
    spec = ModelSpec(name="smollm2", source=gguf_path, context_length=512, options={"parallel": 2})
    with loaded(LlamaCppEngine(spec)) as engine:
        yield engine


def embed_request(*inputs, dimensions=None) -> GenerationRequest:
    return GenerationRequest(
        request_id="e", sampling=SamplingParams(), task="embed", inputs=tuple(inputs), dimensions=dimensions
    )


async def vectors_of(engine, *inputs) -> list[tuple[float, ...]]:
    chunks = await collect(engine, embed_request(*inputs))
    assert chunks[-1].finish_reason == "stop"
    vectors = {c.index: c.embedding for c in chunks[:-1]}
    assert sorted(vectors) == list(range(len(inputs)))
    return [vectors[i] for i in range(len(inputs))]


def cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # both unit length


def assert_same_vector(a, b):
    """Equal but for float rounding (matmul kernels differ by batch size): an input's vector does not
    depend on its neighbours. With flash attention it did (cosine 0.998); see engines.llama_embeddings."""
    assert cosine(a, b) > 1 - 1e-5
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-3


def tokenize_request(**fields) -> GenerationRequest:
    return GenerationRequest(request_id="t", sampling=SamplingParams(), task="tokenize", **fields)


async def test_an_embed_model_loads_no_scheduler_and_pools_by_mean(embedder):
    import llama_cpp

    assert embedder.loaded and embedder.slots == 1  # one embedding decode at a time
    assert embedder._scheduler is None and embedder._ctx is None  # no decode scheduler, no KV of slots
    assert embedder._embeddings.pooling == llama_cpp.LLAMA_POOLING_TYPE_MEAN  # SmolLM2 declares none


async def test_vectors_have_the_model_width_and_unit_length(embedder):
    n_embd = llama_width(embedder)
    (vector,) = await vectors_of(embedder, "The sea is calm tonight.")
    assert len(vector) == n_embd == 576
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-5)
    assert len(set(vector)) > 100  # a real vector, not a constant


def llama_width(engine) -> int:
    import llama_cpp

    return llama_cpp.llama_model_n_embd(engine._llama._model.model)


async def test_similar_texts_lie_closer_than_unrelated_ones(embedder):
    cat, kitten, tax = await vectors_of(
        embedder,
        "The cat sleeps on the warm sofa.",
        "A kitten naps on the cozy couch.",
        "Quarterly tax filing deadlines",
    )
    assert cosine(cat, kitten) > cosine(cat, tax)
    assert cosine(cat, kitten) > cosine(kitten, tax)


async def test_a_batch_gives_the_vectors_of_single_requests(embedder):
    texts = ["first input", "a second, longer input about the ocean and its tides", "third"]
    batched = await vectors_of(embedder, *texts)
    for text, vector in zip(texts, batched, strict=True):
        (single,) = await vectors_of(embedder, text)
        assert_same_vector(single, vector)


async def test_more_tokens_than_one_window_are_split_over_decodes(embedder):
    """Inputs whose tokens together pass the context are embedded in several decodes, same vectors."""
    text = "word " * 40  # about 40 tokens: four of them pass the 128-token window
    vectors = await vectors_of(embedder, text, text, text, text)
    (single,) = await vectors_of(embedder, text)
    for vector in vectors:
        assert_same_vector(single, vector)


async def test_token_input_equals_its_text(embedder):
    text = "Token arrays and text embed alike."
    ids = embedder._llama.tokenize(text.encode(), add_bos=True, special=False)
    from_text, from_ids = await vectors_of(embedder, text, tuple(ids))
    assert cosine(from_text, from_ids) == pytest.approx(1.0, abs=1e-5)


async def test_usage_counts_every_input_token(embedder):
    texts = ("one two three", "four")
    chunks = await collect(embedder, embed_request(*texts))
    expected = sum(len(embedder._llama.tokenize(t.encode(), add_bos=True, special=False)) for t in texts)
    assert chunks[-1].prompt_tokens == expected and chunks[-1].completion_tokens == 0


@pytest.mark.parametrize(
    ("inputs", "error", "param"),
    [
        (("",), InvalidInputError, "input"),
        (((),), InvalidInputError, "input"),
        (((10**9,),), InvalidInputError, "input"),
        (("sea " * (EMBED_CONTEXT + 10),), ContextOverflowError, "input"),
    ],
    ids=["empty string", "empty token array", "id outside the vocabulary", "longer than the context"],
)
async def test_bad_inputs_are_refused_naming_input(embedder, inputs, error, param):
    with pytest.raises(error) as caught:
        await collect(embedder, embed_request(*inputs))
    assert caught.value.param == param


async def test_dimensions_other_than_the_width_are_refused(embedder):
    with pytest.raises(UnsupportedParameterError) as caught:
        await collect(embedder, embed_request("sea", dimensions=64))
    assert caught.value.param == "dimensions"
    assert len((await collect(embedder, embed_request("sea", dimensions=576)))[0].embedding) == 576


async def test_a_generate_model_refuses_embeddings_naming_model(generator):
    with pytest.raises(UnsupportedParameterError) as caught:
        await collect(generator, embed_request("sea"))
    assert caught.value.param == "model"


# --- tokenize and detokenize -----------------------------------------------------------------


async def test_tokenized_messages_are_the_ids_generation_feeds(generator):
    (final,) = await collect(generator, tokenize_request(messages=POEM))
    generated = await collect(generator, greedy_chat(POEM, max_tokens=1))
    assert len(final.token_ids) == generated[-1].prompt_tokens
    assert list(final.token_ids) == generator._prompt_tokens(greedy_chat(POEM))
    assert final.finish_reason == "stop" and final.prompt_tokens == 0  # a tokenizer job runs no model


async def test_without_the_generation_prompt_the_ids_stop_before_the_assistant_turn(generator):
    (with_prompt,) = await collect(generator, tokenize_request(messages=POEM))
    (without,) = await collect(generator, tokenize_request(messages=POEM, add_generation_prompt=False))
    assert len(without.token_ids) < len(with_prompt.token_ids)
    assert with_prompt.token_ids[: len(without.token_ids)] == without.token_ids
    (text,) = await collect(generator, detokenize_request(with_prompt.token_ids[len(without.token_ids) :]))
    assert "assistant" in text.text


def detokenize_request(ids) -> GenerationRequest:
    return GenerationRequest(request_id="d", sampling=SamplingParams(), task="detokenize", token_ids=tuple(ids))


async def test_prompt_ids_match_a_completion_and_round_trip(generator):
    text = "Once upon a time, the sea"
    (final,) = await collect(generator, tokenize_request(prompt=text))
    completion = await collect(
        generator,
        GenerationRequest(request_id="c", prompt=text, sampling=SamplingParams(max_tokens=1, temperature=0.0)),
    )
    assert len(final.token_ids) == completion[-1].prompt_tokens
    (bare,) = await collect(generator, tokenize_request(prompt=text, add_special=False))
    (back,) = await collect(generator, detokenize_request(bare.token_ids))
    assert back.text == text


async def test_tokenizer_jobs_work_on_an_embed_model_too(embedder):
    (final,) = await collect(embedder, tokenize_request(prompt="calm sea", add_special=False))
    assert final.token_ids and (await collect(embedder, detokenize_request(final.token_ids)))[0].text == "calm sea"


async def test_detokenize_refuses_ids_outside_the_vocabulary(generator):
    with pytest.raises(InvalidInputError) as caught:
        await collect(generator, detokenize_request([1, 10**7]))
    assert caught.value.param == "tokens"
