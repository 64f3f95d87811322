"""The MLX engine on the real bundled SmolLM2 GGUF, checked against llama.cpp's reading of it.

mlx[cpu] decodes a few tokens a second here, so generations stay short and raw prompts
(a handful of tokens to prefill) are used wherever the chat template is not the point.
"""

import asyncio
import dataclasses
import json
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from llama_cpp import Llama, llama_vocab_is_eog
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from mlx.utils import tree_flatten
from mlx_lm.models.llama import Model

from engines import mlx_gguf
from engines.base import GenerationRequest, ModelSpec, SamplingParams
from engines.errors import ContextOverflowError, EngineUnavailableError, InvalidInputError
from engines.llama_cpp import LlamaCppEngine
from engines.mlx import MlxEngine
from tests.engines.helpers import collect, greedy_chat, greedy_completion, loaded, text_of

pytestmark = pytest.mark.model

CONTEXT = 512
PROMPT = "The three primary colours are"
AGREEMENT_PROMPTS = (
    "What is 12+30? Answer briefly.",
    "Who wrote Romeo and Juliet?",
    "List the days of the week.",
)
# Prompts whose first token is a near tie that llama.cpp's 8-bit activations flip ("Write a
# short poem about the sea." is another, gap 0.012; one keeps the module's runtime down).
NEAR_TIE_PROMPTS = ("What is the capital of France?",)


@pytest.fixture(scope="module")
def engine(gguf_path):
    with loaded(MlxEngine(ModelSpec(name="smollm2", source=gguf_path, context_length=CONTEXT))) as engine:
        yield engine


@pytest.fixture(scope="module")
def gguf(gguf_path):
    return mx.load(gguf_path, return_metadata=True)


@pytest.fixture(scope="module")
def llama_vocab(gguf_path):
    """llama.cpp's tokenizer for the same file, without loading its weights."""
    llama = Llama(model_path=gguf_path, vocab_only=True, verbose=False)
    yield llama
    llama.close()


def raw(prompt=PROMPT, **sampling) -> GenerationRequest:
    return greedy_completion(prompt, **{"max_tokens": 6, **sampling})


def chat(content, **sampling) -> GenerationRequest:
    return greedy_chat(({"role": "user", "content": content},), **{"max_tokens": 8, **sampling})


def ids_of(chunks):
    return [t for c in chunks for t in c.token_ids]


# --- loading the GGUF -------------------------------------------------------------------


def test_every_gguf_tensor_fills_exactly_one_model_parameter(engine, gguf):
    weights, _ = gguf
    mapped = {mlx_gguf.mlx_name(name) for name in weights}
    parameters = {name for name, _ in tree_flatten(engine._model.parameters())}
    assert len(mapped) == len(weights)
    assert parameters - mapped == set(), "model parameters the file did not fill"
    assert mapped - parameters == set(), "file tensors the model has no place for"
    # Loaded, not freshly initialised: the values are the file's.
    layer = engine._model.model.layers[3].self_attn.k_proj
    assert mx.array_equal(layer.weight, weights["blk.3.attn_k.weight"]).item()
    assert mx.array_equal(layer.scales, weights["blk.3.attn_k.scales"]).item()


def test_unknown_tensor_names_are_refused():
    with pytest.raises(mlx_gguf.GgufError, match=r"rope_freqs\.weight"):
        mlx_gguf.mlx_name("rope_freqs.weight")
    assert mlx_gguf.mlx_name("blk.12.ffn_down.biases") == "model.layers.12.mlp.down_proj.biases"


def test_each_layer_gets_the_bits_its_tensors_were_packed_with(engine, gguf):
    weights, _ = gguf
    bits = mlx_gguf.layer_bits(weights)
    assert bits["token_embd"] == 8
    assert {b for name, b in bits.items() if name.startswith("blk.")} == {4}
    model = engine._model
    embed = model.model.embed_tokens
    assert isinstance(embed, nn.QuantizedEmbedding) and (embed.bits, embed.group_size) == (8, 32)
    for layer in model.model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.o_proj, layer.mlp.down_proj):
            assert isinstance(proj, nn.QuantizedLinear) and (proj.bits, proj.group_size) == (4, 32)
        assert isinstance(layer.input_layernorm, nn.RMSNorm)
    # SmolLM2 ties the output projection to the embedding.
    assert model.args.tie_word_embeddings and not hasattr(model, "lm_head")
    assert model.args.rope_traditional


# --- tokenizer and chat template ----------------------------------------------------------

TEXTS = (
    "Hello, world!",
    "In 2024 there were 12345 apples and 3.14159 pies.",
    "  leading spaces,\ttabs\nand\n\n\nblank lines   \n  ",
    "Ünïcödé: naïve café, 東京, emoji 🦙🚀, Ελληνικά",
    "def f(x):\n    return x**2  # square\n",
    "don't won't I'll we've they're it's",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|><file_sep>",
)


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_gives_llama_cpp_ids(engine, llama_vocab, text):
    expected = llama_vocab.tokenize(text.encode(), add_bos=False, special=True)
    assert engine._encoder.encode(text, add_special_tokens=False).ids == expected
    assert engine.count_tokens(text) == len(expected)
    # A raw prompt is data: control-token text is spelled out, not parsed.
    plain = raw(text)
    assert engine.prompt_ids(plain) == llama_vocab.tokenize(text.encode(), add_bos=True, special=False)


def test_a_template_that_refuses_the_messages_is_bad_input(engine):
    """transformers raises jinja2's TemplateError for raise_exception; it is the client's error, not a crash."""
    tokenizer = engine._tokenizer
    original = tokenizer.chat_template
    tokenizer.chat_template = (
        "{% if messages[0]['role'] != 'user' %}"
        "{{ raise_exception('Conversation must start with a user message') }}{% endif %}x"
    )
    try:
        with pytest.raises(InvalidInputError, match="must start with a user message") as refused:
            engine.render_chat([{"role": "assistant", "content": None}])
        assert refused.value.param == "messages"
        assert engine.render_chat([{"role": "user", "content": None}]) == ("x", True)
    finally:
        tokenizer.chat_template = original


def test_rendered_chat_prompt_tokenizes_like_llama_cpp(engine, llama_vocab):
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Sum 17 and 25."}]
    prompt, _ = engine.render_chat(messages)
    expected = llama_vocab.tokenize(prompt.encode(), add_bos=False, special=True)
    ids = engine.prompt_ids(GenerationRequest(request_id="t", sampling=SamplingParams(), messages=tuple(messages)))
    assert ids == expected
    assert ids.count(1) == prompt.count("<|im_start|>") == 3  # markers are single control tokens


def test_end_of_generation_ids_match_llama_cpp(gguf, llama_vocab):
    _, metadata = gguf
    vocab = llama_vocab._model.vocab
    expected = {i for i in range(llama_vocab.n_vocab()) if llama_vocab_is_eog(vocab, i)}
    assert mlx_gguf.eog_token_ids(metadata) == expected


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Hi there"}],
        [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hello"}],
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
        ],
    ],
)
def test_chat_template_renders_like_llama_cpp(engine, gguf, llama_vocab, messages):
    _, metadata = gguf
    formatter = Jinja2ChatFormatter(
        template=metadata["tokenizer.chat_template"],
        eos_token=llama_vocab.detokenize([llama_vocab.token_eos()], special=True).decode(),
        bos_token=llama_vocab.detokenize([llama_vocab.token_bos()], special=True).decode(),
    )
    prompt, _ = engine.render_chat(messages)
    assert prompt == formatter(messages=messages).prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_unsupported_tokenizers_are_refused_clearly(gguf):
    _, metadata = gguf
    with pytest.raises(mlx_gguf.GgufError, match="'llama'"):
        mlx_gguf.build_tokenizer({**metadata, "tokenizer.ggml.model": "llama"})
    with pytest.raises(mlx_gguf.GgufError, match="pre-tokenizer 'qwen2'"):
        mlx_gguf.build_tokenizer({**metadata, "tokenizer.ggml.pre": "qwen2"})


# --- generation --------------------------------------------------------------------------


async def test_max_tokens_bounds_the_completion(engine, llama_vocab):
    chunks = await collect(engine, raw(max_tokens=6))
    final = chunks[-1]
    assert final.finish_reason == "length"
    assert final.completion_tokens == len(ids_of(chunks)) == 6
    assert final.prompt_tokens == len(llama_vocab.tokenize(PROMPT.encode(), add_bos=True, special=False))
    assert text_of(chunks) == engine._encoder.decode(ids_of(chunks), skip_special_tokens=True)
    assert text_of(chunks).strip()


async def test_chat_generation_ends_its_turn(engine):
    chunks = await collect(engine, chat("Reply with one word: yes or no?", max_tokens=8))
    final = chunks[-1]
    assert final.finish_reason == "stop", text_of(chunks)  # the model closed its turn with EOS
    assert 1 <= final.completion_tokens < 8
    assert "<|im_end|>" not in text_of(chunks)


async def test_stop_sequence_cuts_text(engine):
    full = text_of(await collect(engine, raw(max_tokens=8)))
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    chunks = await collect(engine, raw(max_tokens=8, stop=(stop,)))
    assert text_of(chunks) == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].completion_tokens < 8


async def test_seed_makes_sampling_repeatable(engine):
    """At temperature 1.0 only the seed can make two runs agree."""
    first = await collect(engine, raw(temperature=1.0, seed=1234, max_tokens=5))
    second = await collect(engine, raw(temperature=1.0, seed=1234, max_tokens=5))
    assert ids_of(first) == ids_of(second)
    # Clients send any integer; MLX takes unsigned 64-bit ones.
    negative = await collect(engine, raw(temperature=1.0, seed=-5, max_tokens=1))
    assert negative[-1].completion_tokens == 1


async def test_max_tokens_beyond_context_raises_before_generating(engine):
    started = engine._scheduler.started
    with pytest.raises(ContextOverflowError, match=f"maximum context length is {CONTEXT}"):
        await collect(engine, raw(max_tokens=CONTEXT))
    assert engine._scheduler.started == started  # never reached the model
    assert engine.in_flight == 0


async def test_closing_the_stream_stops_decoding(engine):
    scheduler = engine._scheduler
    decoded, cancelled = scheduler.tokens_decoded, scheduler.cancelled
    stream = engine.generate(raw(max_tokens=400))
    assert (await anext(stream)).text
    await stream.aclose()
    # A call queued after the close runs after the scheduler has dropped the sequence.
    await asyncio.to_thread(scheduler.run, lambda: None)
    assert engine.in_flight == 0
    assert scheduler.cancelled == cancelled + 1 and engine.state()["running"] == 0
    # Cancelled after the first chunk: only the steps that ran while the cancel landed.
    assert scheduler.tokens_decoded - decoded <= 5, "decoding went on after the consumer left"

    after = await collect(engine, raw(max_tokens=3))
    assert after[-1].finish_reason == "length" and after[-1].completion_tokens == 3


async def test_concurrent_requests_all_complete(engine):
    results = await asyncio.gather(*(collect(engine, raw(p, max_tokens=2)) for p in ("Red is a", "The sky is")))
    for chunks in results:
        assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 2
    assert engine.peak_in_flight >= 2
    assert engine.in_flight == 0


@pytest.fixture(scope="module")
def llama_engine(gguf_path):
    with loaded(LlamaCppEngine(ModelSpec(name="smollm2", source=gguf_path, context_length=CONTEXT))) as engine:
        yield engine


@pytest.fixture(scope="module")
def reference(gguf):
    """The same Q4_1 weights dequantized to float32 and run densely: the exact answer."""
    weights, metadata = gguf
    mapped = {mlx_gguf.mlx_name(name): tensor for name, tensor in weights.items()}
    bits = mlx_gguf.layer_bits(mapped)
    dense = {}
    for name, tensor in mapped.items():
        module, _, suffix = name.rpartition(".")
        if module not in bits:
            dense[name] = tensor.astype(mx.float32)
        elif suffix == "weight":
            scales, biases = (mapped[f"{module}.{part}"].astype(mx.float32) for part in ("scales", "biases"))
            dense[name] = mx.dequantize(tensor, scales, biases, group_size=32, bits=bits[module])
    model = Model(mlx_gguf.model_args(weights, metadata))
    model.load_weights(list(dense.items()), strict=True)
    mx.eval(model.parameters())
    return model


async def on_engine_thread(engine, fn):
    """Run MLX work on the engine's own thread, the only one that drives MLX."""
    return await asyncio.to_thread(engine._scheduler.run, fn)


def last_logits(model, ids):
    return np.array(model(mx.array(ids)[None])[0, -1].astype(mx.float32))


async def test_quantized_kernels_match_the_dequantized_reference(engine, reference):
    ids = engine.prompt_ids(raw())
    ours, exact = await on_engine_thread(engine, lambda: (last_logits(engine._model, ids), last_logits(reference, ids)))
    # Logits are compared up to a constant shift, which softmax ignores.
    error = np.abs((ours - ours.mean()) - (exact - exact.mean())).max()
    print(f"max logit error of MLX's Q4/Q8 kernels against float32: {error:.4f}")
    assert error < 0.05
    assert ours.argmax() == exact.argmax()


async def test_greedy_tokens_agree_with_llama_cpp(engine, llama_engine):
    """Both engines read the same Q4_1 weights; only their kernels differ."""
    rows = []
    for content in AGREEMENT_PROMPTS:
        ours = ids_of(await collect(engine, chat(content)))
        theirs = ids_of(await collect(llama_engine, chat(content)))
        same = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        rows.append((content, same, max(len(ours), len(theirs)), ours, theirs))
    for content, same, length, ours, theirs in rows:
        print(f"agreement {same}/{length} for {content!r}: mlx={ours} llama.cpp={theirs}")
    overall = sum(r[1] for r in rows) / sum(r[2] for r in rows)
    print(f"overall agreement before first divergence: {overall:.0%}")
    assert all(same >= 2 for _, same, *_ in rows)
    assert overall >= 0.5


@pytest.mark.parametrize("content", NEAR_TIE_PROMPTS)
async def test_where_llama_cpp_differs_it_is_a_near_tie(engine, llama_engine, reference, content):
    """llama.cpp rounds activations to 8 bits in its Q4_1 dot products; MLX does not.

    On this prompt the first token is a near tie, and that rounding flips it. MLX must
    pick what exact arithmetic picks, and llama.cpp's pick must be within a hair of it.
    """
    request = chat(content, max_tokens=1)
    ours = ids_of(await collect(engine, request))[0]
    theirs = ids_of(await collect(llama_engine, request))[0]
    exact = await on_engine_thread(engine, lambda: last_logits(reference, engine.prompt_ids(request)))
    gap = exact[ours] - exact[theirs]
    print(f"{content!r}: mlx={ours} llama.cpp={theirs}, float32 logit gap {gap:.3f}")
    assert ours == exact.argmax()
    assert gap < 0.25


# --- other sources and failures -------------------------------------------------------------


async def test_mlx_model_directory_serves_the_same_tokens(engine, tmp_path):
    """Saved as an mlx-lm directory, the model loads through mlx_lm.load and decodes alike."""
    args = dataclasses.asdict(engine._model.args)
    config = {**args, "quantization": {"group_size": 32, "bits": 4}, "eos_token_id": sorted(engine._eos_ids)}
    (tmp_path / "config.json").write_text(json.dumps(config))
    mx.save_safetensors(str(tmp_path / "model.safetensors"), dict(tree_flatten(engine._model.parameters())))
    engine._tokenizer.save_pretrained(tmp_path)

    directory = MlxEngine(ModelSpec(name="smollm2-dir", source=str(tmp_path), context_length=CONTEXT))
    directory.load()
    try:
        embed = directory._model.model.embed_tokens
        assert embed.bits == 8  # mlx-lm inferred it from the shapes too
        theirs = await collect(directory, raw(max_tokens=4))
        assert engine.render_chat([{"role": "user", "content": "x"}]) == directory.render_chat(
            [{"role": "user", "content": "x"}]
        )
    finally:
        directory.unload()
    ours = await collect(engine, raw(max_tokens=4))
    assert ids_of(theirs) == ids_of(ours) and text_of(theirs) == text_of(ours)


def test_sources_that_are_not_local_models_are_refused(tmp_path):
    for source in ("HuggingFaceTB/SmolLM2-135M-Instruct", str(tmp_path / "missing.gguf")):
        with pytest.raises(EngineUnavailableError, match=r"neither a model directory nor a \.gguf file"):
            MlxEngine(ModelSpec(name="x", source=source)).load()


def test_a_broken_gguf_file_is_refused_clearly(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF but not really")
    with pytest.raises(EngineUnavailableError, match="MLX could not load"):
        MlxEngine(ModelSpec(name="x", source=str(bad))).load()


def test_missing_library_is_reported_clearly(monkeypatch, gguf_path):
    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # makes `import mlx_lm` fail
    with pytest.raises(EngineUnavailableError, match="needs mlx and mlx-lm"):
        MlxEngine(ModelSpec(name="x", source=gguf_path)).load()


async def test_generate_before_load_is_refused(gguf_path):
    with pytest.raises(EngineUnavailableError, match="not loaded"):
        await collect(MlxEngine(ModelSpec(name="x", source=gguf_path)), raw())
