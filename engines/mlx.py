"""The MLX engine, on mlx-lm: Metal on Apple Silicon, mlx[cpu] elsewhere.

It serves an MLX / Hugging Face model directory (mlx_lm.load) or a llama GGUF file
(engines.mlx_gguf), so the bundled SmolLM2 file runs here as it does under llama.cpp.
MLX must not be driven from several threads at once, so one thread (engines.threaded) loads
the weights and decodes one sequence at a time. Batching will replace the single thread
without changing the async interface.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import os
import random
from typing import Any

from .base import Chunk, GenerationRequest
from .capabilities import CAPABILITIES
from .errors import EngineUnavailableError
from .inputs import input_param, render_template, require_tokens, utf8
from .threaded import SingleThreadEngine, completion_budget, stream_tokens

logger = logging.getLogger(__name__)

# llama.cpp's default penalty window (penalty_last_n), so penalties mean the same on both engines.
PENALTY_WINDOW = 64


class MlxEngine(SingleThreadEngine):
    name = "mlx"
    capabilities = CAPABILITIES["mlx"]

    def __init__(self, spec):
        super().__init__(spec)
        self._model = None
        self._tokenizer = None  # transformers tokenizer: chat template, special tokens
        self._encoder = None  # its `tokenizers` backend, parsing special tokens in text
        self._plain_encoder = None  # the same backend never parsing them, for raw prompts
        self._eos_ids: frozenset[int] = frozenset()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        if self._model is not None:
            return
        try:
            importlib.import_module("mlx.core")
            importlib.import_module("mlx_lm")
        except ImportError as exc:
            raise EngineUnavailableError(
                f"the MLX engine needs mlx and mlx-lm (pip install mlx-lm; on Linux also mlx[cpu]): {exc}"
            ) from exc
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mlx-{self.spec.name}")
        try:
            # Loaded on the decoding thread too: every MLX call of this engine stays on it.
            model, tokenizer, eos_ids = executor.submit(self._read_model).result()
        except BaseException:
            executor.shutdown(wait=False)
            raise
        from tokenizers import Tokenizer

        # Whether special-token text is parsed is a flag on the Rust tokenizer, and
        # transformers flips it per call; two private copies, each with the flag fixed,
        # mean no call can change what another thread's call sees.
        serialized = tokenizer.backend_tokenizer.to_str()
        self._encoder, self._plain_encoder = Tokenizer.from_str(serialized), Tokenizer.from_str(serialized)
        self._encoder.encode_special_tokens = False
        self._plain_encoder.encode_special_tokens = True
        self._tokenizer, self._eos_ids, self._executor = tokenizer, eos_ids, executor
        self._model = model

    def unload(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._model = None
        self._tokenizer = self._encoder = self._plain_encoder = None
        try:
            import mlx.core as mx

            mx.clear_cache()
        except ImportError:  # pragma: no cover - load() would have failed first
            pass

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` by the model's own tokenizer (special tokens parsed, no BOS)."""
        self._require()
        return len(self._encoder.encode(text, add_special_tokens=False).ids)

    def render_chat(self, messages: list[dict[str, Any]]) -> tuple[str, bool]:
        """Apply the model's chat template; returns the prompt and whether it adds BOS itself.

        The second value is always True, as for llama.cpp's formatter: a template writes
        whatever special tokens it wants, so nothing is prepended to it.
        """
        self._require()
        if not self._tokenizer.chat_template:
            raise EngineUnavailableError(f"model {self.spec.name} has no chat template", param="messages")
        prompt = render_template(lambda ready: self._tokenizer.apply_chat_template(
            ready, tokenize=False, add_generation_prompt=True), messages)
        return prompt, True

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The token ids the model is fed for `request`."""
        self._require()
        param = input_param(request)
        if request.messages is not None:
            # The template writes its own BOS and markers, as llama.cpp's formatter assumes.
            prompt, _ = self.render_chat(list(request.messages))
            utf8(prompt, param=param)  # the Rust tokenizer cannot take a lone surrogate either
            ids = self._encoder.encode(prompt, add_special_tokens=False).ids
        else:
            utf8(request.prompt or "", param=param)
            # Raw text is data: "<|im_end|>" typed by a user must not become a control token.
            ids = self._plain_encoder.encode(request.prompt or "", add_special_tokens=True).ids
        require_tokens(ids, request, self.spec.name)
        return ids

    def _require(self):
        if self._model is None:
            raise EngineUnavailableError(f"model {self.spec.name} is not loaded")
        return self._model

    def _read_model(self):
        """Runs on the engine thread: model, transformers tokenizer and end-of-generation ids."""
        source = self.spec.source
        try:
            if os.path.isdir(source):
                import mlx_lm

                model, wrapper = mlx_lm.load(source)
                if getattr(wrapper._tokenizer, "backend_tokenizer", None) is None:
                    raise EngineUnavailableError(f"{source} has no fast tokenizer (tokenizer.json)")
                return model, wrapper._tokenizer, frozenset(wrapper.eos_token_ids)
            if os.path.isfile(source) and source.lower().endswith(".gguf"):
                from .mlx_gguf import load_gguf

                gguf = load_gguf(source)
                return gguf.model, gguf.tokenizer, gguf.eos_token_ids
        except (ValueError, OSError, KeyError, RuntimeError) as exc:  # mx.load reports bad files as RuntimeError
            raise EngineUnavailableError(f"MLX could not load {source}: {exc}") from exc
        # mlx_lm.load would treat anything else as a hub id and download it; we never do.
        raise EngineUnavailableError(
            f"MLX model source {source!r} is neither a model directory nor a .gguf file"
        )

    def _decode_unsafe(self, request, emit, cancelled) -> Chunk:
        import mlx.core as mx
        from mlx_lm.generate import generate_step, generation_stream, wired_limit
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        model = self._require()
        sampling = request.sampling
        prompt = self.prompt_ids(request)
        max_tokens = completion_budget(prompt_tokens=len(prompt), max_tokens=sampling.max_tokens,
                                       n_ctx=self.spec.context_length)
        # MLX seeds are unsigned 64-bit; any client integer maps onto one.
        mx.random.seed(sampling.seed % 2**64 if sampling.seed is not None else random.randint(0, 2**31 - 1))
        processors = make_logits_processors(
            presence_penalty=sampling.presence_penalty, presence_context_size=PENALTY_WINDOW,
            frequency_penalty=sampling.frequency_penalty, frequency_context_size=PENALTY_WINDOW,
        )
        text = TextStream(self._encoder, prompt)
        steps = generate_step(
            mx.array(prompt), model, max_tokens=max_tokens,
            sampler=make_sampler(sampling.temperature, sampling.top_p),  # temp 0 is argmax
            logits_processors=processors or None,
        )
        # generate_step queues step n+1 before yielding token n, so a cancel leaves at
        # most that one step computing. wired_limit keeps the weights resident on Metal,
        # as mlx-lm's own generate does; it does nothing on CPU.
        with wired_limit(model, [generation_stream]):
            try:
                return stream_tokens(
                    (step[0] for step in steps), max_tokens=max_tokens, is_end=lambda t: t in self._eos_ids,
                    to_text=text.add, final_text=text.flush, stops=sampling.stop, emit=emit,
                    cancelled=cancelled, prompt_tokens=len(prompt),
                )
            finally:
                steps.close()


class TextStream:
    """Turns generated ids into text deltas by decoding a short window, not single tokens.

    A lone token may hold half a UTF-8 character, and decoders such as SentencePiece's
    drop the leading space of whatever comes first; decoding a few tokens of context and
    emitting only what grew past it gets both right (the offsets scheme vLLM and TGI use).
    """

    CONTEXT = 5  # prompt tokens kept as context for the first generated token

    def __init__(self, encoder, prompt_ids: list[int]):
        self._encoder = encoder
        self._ids = list(prompt_ids[-self.CONTEXT:])
        self._prefix = 0  # start of the window
        self._read = len(self._ids)  # everything before this has been emitted

    def add(self, token: int) -> str:
        """Text that `token` completes; empty while a character is still partial."""
        self._ids.append(token)
        seen = self._decode(self._ids[self._prefix:self._read])
        full = self._decode(self._ids[self._prefix:])
        if len(full) <= len(seen) or full.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return full[len(seen):]

    def flush(self) -> str:
        """Whatever is still held back, partial characters as U+FFFD."""
        if self._read == len(self._ids):
            return ""
        seen = self._decode(self._ids[self._prefix:self._read])
        self._read = len(self._ids)
        return self._decode(self._ids[self._prefix:])[len(seen):]

    def _decode(self, ids: list[int]) -> str:
        # Control tokens print as nothing, as llama.cpp's detokenizer renders them.
        return self._encoder.decode(ids, skip_special_tokens=True)
