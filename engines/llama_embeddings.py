"""Embedding vectors from a GGUF model: a llama.cpp context of its own, pooled per input.

An embed-task model (ModelSpec.task "embed") opens this context on the weights `Llama`
loaded, instead of the decode scheduler: no slots, no sampling, a KV cache of one window.
The pooling is the model's own (the GGUF's `<arch>.pooling_type`), or the engine option
`pooling`; a generative model such as SmolLM2 has none, so it is mean pooling over the
input's tokens. Vectors are L2-normalized, as OpenAI's embeddings are unit length, so a dot
product is the cosine similarity.

Several inputs share one decode: each is a sequence of its own in one batch, and every
batch fits one micro-batch (n_ubatch = the context), because llama.cpp pools per micro-batch.
The context is not thread-safe: one lock serialises decodes, and callers run them on a thread
(asyncio.to_thread), off the event loop and off any scheduler thread.
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import ContextOverflowError, EngineCrashedError, EngineUnavailableError, InvalidInputError
from .inputs import utf8

if TYPE_CHECKING:
    from llama_cpp import Llama, llama_context_p

logger = logging.getLogger(__name__)

POOLING_NAMES = {"mean": 1, "cls": 2, "last": 3}  # llama.cpp's LLAMA_POOLING_TYPE_* values
# Sequences one decode holds at most (llama.cpp's LLAMA_MAX_SEQ is 256; inputs rarely come in more).
MAX_SEQUENCES_PER_DECODE = 64


def model_pooling(llama: Llama, option: str | None = None) -> int:
    """The pooling to use: the option if given, else the GGUF's own, else mean (none declared)."""
    import llama_cpp

    if option:
        try:
            return POOLING_NAMES[option]
        except KeyError:
            raise EngineUnavailableError(
                f"engine option `pooling` must be one of {', '.join(POOLING_NAMES)}, not {option!r}"
            ) from None
    architecture = llama.metadata.get("general.architecture", "")
    declared = int(llama.metadata.get(f"{architecture}.pooling_type", llama_cpp.LLAMA_POOLING_TYPE_NONE))
    if declared == llama_cpp.LLAMA_POOLING_TYPE_RANK:
        raise EngineUnavailableError("this GGUF is a reranker (rank pooling), not an embedding model")
    # A generative model declares none (or NONE): one vector per input means pooling its tokens.
    return declared if declared in POOLING_NAMES.values() else llama_cpp.LLAMA_POOLING_TYPE_MEAN


class EmbeddingContext:
    """A pooled-embedding llama.cpp context on loaded weights; `embed` token lists into unit vectors."""

    def __init__(self, llama: Llama, *, n_ctx: int, n_threads: int, pooling: int, flash_attn: bool = False):
        import llama_cpp

        self._llama = llama
        model = llama._model.model
        self.n_ctx = n_ctx
        self.pooling = pooling
        self.n_embd = int(llama_cpp.llama_model_n_embd_out(model))
        self.n_seq_max = min(MAX_SEQUENCES_PER_DECODE, n_ctx)
        params = llama_cpp.llama_context_default_params()
        params.embeddings = True
        params.pooling_type = pooling
        params.n_ctx = n_ctx
        # One micro-batch per decode: llama.cpp pools each micro-batch on its own, so an input
        # split across two would be pooled over its last part only.
        params.n_batch = params.n_ubatch = n_ctx
        params.n_seq_max = self.n_seq_max
        params.kv_unified = True  # inputs of one decode share the window's cells
        params.n_threads = params.n_threads_batch = n_threads
        params.no_perf = True
        # Flash attention off: with it, llama.cpp's f16 attention rounds differently by how the
        # batch is laid out, so an input's vector changed with the inputs beside it (cosine 0.998
        # between a text alone and the same text in a batch of two). Without it they are equal.
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        ctx = llama_cpp.llama_init_from_model(model, params)  # its chatter goes to the debug log (llama_logs)
        if not ctx:
            raise EngineUnavailableError(f"llama.cpp could not make an embedding context of {n_ctx} tokens")
        self._ctx: llama_context_p | None = ctx
        self._batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        # Encoder-only models (BERT and kin) run llama_encode; decoders llama_decode.
        self._encoder_only = bool(
            llama_cpp.llama_model_has_encoder(model) and not llama_cpp.llama_model_has_decoder(model)
        )
        self._lock = threading.Lock()

    def tokens_of(self, item: str | Sequence[int], index: int) -> list[int]:
        """An input's token ids (text with the model's start token, as llama-server does), checked
        to be non-empty, in the vocabulary and within the context."""
        llama = self._llama
        if isinstance(item, str):
            if not item:
                raise InvalidInputError(f"Invalid value for 'input': input {index} is an empty string.", param="input")
            tokens = llama.tokenize(utf8(item, param="input"), add_bos=True, special=False)
        else:
            tokens = list(item)
            if not tokens:
                raise InvalidInputError(f"Invalid value for 'input': input {index} has no tokens.", param="input")
            n_vocab = llama.n_vocab()
            bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
            if bad is not None:
                raise InvalidInputError(
                    f"Invalid value for 'input': token id {bad} in input {index} is outside the "
                    f"vocabulary (ids 0 to {n_vocab - 1}).",
                    param="input",
                )
        if len(tokens) > self.n_ctx:
            raise ContextOverflowError(
                f"Input {index} has {len(tokens)} tokens; this model's maximum context length is "
                f"{self.n_ctx} tokens. Please shorten the input.",
                param="input",
            )
        return tokens

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Blocking: one unit-length vector per token list, in order; decodes as few batches as fit."""
        vectors: list[list[float]] = []
        group: list[Sequence[int]] = []
        used = 0
        with self._lock:
            for tokens in inputs:
                if group and (used + len(tokens) > self.n_ctx or len(group) >= self.n_seq_max):
                    vectors += self._decode(group)
                    group, used = [], 0
                group.append(tokens)
                used += len(tokens)
            if group:
                vectors += self._decode(group)
        return vectors

    def _decode(self, group: Sequence[Sequence[int]]) -> list[list[float]]:
        import llama_cpp

        ctx, batch = self._ctx, self._batch
        if ctx is None:
            raise EngineUnavailableError("the embedding context is closed")
        memory = llama_cpp.llama_get_memory(ctx)
        if memory:  # encoder-only models keep no KV cache
            llama_cpp.llama_memory_clear(memory, True)
        n = 0
        for seq_id, tokens in enumerate(group):
            for position, token in enumerate(tokens):
                batch.token[n], batch.pos[n] = token, position
                batch.n_seq_id[n], batch.seq_id[n][0] = 1, seq_id
                batch.logits[n] = True
                n += 1
        batch.n_tokens = n
        run = llama_cpp.llama_encode if self._encoder_only else llama_cpp.llama_decode
        status = run(ctx, batch)
        if status != 0:
            raise EngineCrashedError(f"llama.cpp failed to embed a batch of {n} tokens (status {status})")
        vectors = []
        for seq_id in range(len(group)):
            pointer = llama_cpp.llama_get_embeddings_seq(ctx, seq_id)
            if not pointer:
                raise EngineCrashedError("llama.cpp returned no pooled embedding")
            vectors.append(_unit(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float))[: self.n_embd]))
        return vectors

    def close(self) -> None:
        """Free the context (before the weights it was made from)."""
        import llama_cpp

        with self._lock:
            if self._ctx is not None:
                llama_cpp.llama_batch_free(self._batch)
                llama_cpp.llama_free(self._ctx)
                self._ctx = None


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm > 0 else vector
