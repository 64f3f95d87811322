"""One conformance suite for every engine this machine can run.

llama_cpp and mlx (on CPU) run the bundled SmolLM2 GGUF; upstream fronts llama-cpp-python's
own OpenAI server on the same file; echo needs no model. vLLM needs a CUDA GPU and is
skipped with the reason. Token budgets stay tiny because MLX on CPU manages a few tokens/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
from contextlib import aclosing

import pytest

from engines.base import GenerationRequest, ModelSpec, SamplingParams
from engines.errors import InvalidInputError
from engines.registry import create_engine
from tests.engines.helpers import collect

from .openai_server import openai_server

ENGINES = ["llama_cpp", "mlx", "upstream", "echo", "vllm"]
# Engines whose counts come from their own tokenizer, token by token. llama_cpp.server does
# not report usage on streamed answers, so the upstream proxy passes on None there.
COUNTS_PER_TOKEN = {"llama_cpp", "mlx", "echo"}
PROMPT = "Once upon a time there was a little fox who lived in the forest near the river"


def _skip_reason(name: str) -> str | None:
    if name == "vllm" and shutil.which("vllm") is None and importlib.util.find_spec("vllm") is None:
        return "vllm is not installed: it needs a CUDA GPU (requirements/gpu.txt)"
    if name == "mlx" and importlib.util.find_spec("mlx_lm") is None:
        return "mlx-lm is not installed (requirements/test.txt has mlx[cpu])"
    return None


@pytest.fixture(scope="module", params=ENGINES)
def engine(request, gguf_path, tmp_path_factory):
    name = request.param
    if reason := _skip_reason(name):
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        options = {}
        if name == "upstream":
            server = stack.enter_context(openai_server(gguf_path, tmp_path_factory.mktemp("conformance") / "log"))
            options = {"base_url": server.base_url}
        spec = ModelSpec(
            name=f"conformance-{name}", source="" if name == "echo" else gguf_path, context_length=2048, options=options
        )
        engine = create_engine(name, spec)
        engine.load()
        stack.callback(engine.unload)
        yield engine


def request_for(max_tokens: int, stop: tuple[str, ...] = (), chat: bool = False) -> GenerationRequest:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=1, stop=stop)
    if chat:
        return GenerationRequest(request_id="c", sampling=sampling, messages=({"role": "user", "content": PROMPT},))
    return GenerationRequest(request_id="c", sampling=sampling, prompt=PROMPT)


async def test_chat_gives_text_and_a_final_chunk(engine):
    chunks = await collect(engine, request_for(6, chat=True))
    final = chunks[-1]
    assert "".join(c.text for c in chunks).strip()
    assert final.finish_reason in ("stop", "length")
    assert all(c.finish_reason is None for c in chunks[:-1])


async def test_streaming_arrives_in_several_chunks(engine):
    chunks = await collect(engine, request_for(6))
    assert len([c for c in chunks if c.text]) >= 2


async def test_max_tokens_bounds_the_completion(engine):
    chunks = await collect(engine, request_for(3))
    final = chunks[-1]
    assert final.finish_reason == "length"
    if engine.name in COUNTS_PER_TOKEN:
        assert final.completion_tokens == 3


async def test_usage_counts_match_the_tokens_sent(engine):
    chunks = await collect(engine, request_for(5))
    final = chunks[-1]
    if engine.name not in COUNTS_PER_TOKEN:
        pytest.skip(f"{engine.name}: its server reports no usage on streamed answers")
    assert final.prompt_tokens > 0
    assert final.completion_tokens == sum(len(c.token_ids) for c in chunks)


async def test_stop_sequence_cuts_the_text(engine):
    whole = "".join(c.text for c in await collect(engine, request_for(6)))
    words = whole.split()
    assert len(words) >= 3, whole
    stop = " " + words[2]  # the third word, with its leading space
    chunks = await collect(engine, request_for(6, stop=(stop,)))
    text = "".join(c.text for c in chunks)
    assert text == whole[: whole.index(stop)]
    assert chunks[-1].finish_reason == "stop"


async def test_cancellation_frees_the_engine(engine):
    async with aclosing(engine.generate(request_for(400))) as chunks:
        async for _ in chunks:
            break
    await asyncio.sleep(0)
    assert engine.in_flight == 0
    after = await collect(engine, request_for(2))
    assert after[-1].finish_reason in ("stop", "length")


async def test_null_content_in_the_history_is_no_text(engine):
    """OpenAI allows null assistant content (a turn that only called tools); templates need strings."""
    messages = (
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "Go on."},
    )
    sampling = SamplingParams(max_tokens=2, temperature=0.0, seed=1)
    chunks = await collect(engine, GenerationRequest(request_id="n", sampling=sampling, messages=messages))
    assert chunks[-1].finish_reason in ("stop", "length")
    assert engine.in_flight == 0


async def test_an_empty_prompt_is_refused_or_generates_never_crashes(engine):
    """SmolLM2 adds no start token, so "" is zero tokens: llama.cpp would fail an assertion.

    Proxies cannot see the upstream's tokenizer, and llama-cpp-python's server breaks off
    its stream on "", so they refuse it too.
    """
    request = GenerationRequest(request_id="e", sampling=SamplingParams(max_tokens=2, temperature=0.0), prompt="")
    if engine.name != "echo":
        with pytest.raises(InvalidInputError, match="must not be empty") as refused:
            await collect(engine, request)
        assert refused.value.param == "prompt"
    else:  # no model, no tokens: the echo of nothing is nothing
        chunks = await collect(engine, request)
        assert chunks[-1].finish_reason in ("stop", "length")
    assert engine.in_flight == 0
    after = await collect(engine, request_for(2))
    assert after[-1].finish_reason in ("stop", "length")
