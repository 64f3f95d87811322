"""The llama.cpp engine, on llama-cpp-python.

llama.cpp is not thread-safe per model, so it decodes on one thread (engines.threaded) and
serves one sequence at a time. Continuous batching will replace the single thread without
changing the async interface.
"""

from __future__ import annotations

import codecs
import concurrent.futures
import logging
import random
from typing import Any

from .base import Chunk, GenerationRequest
from .capabilities import CAPABILITIES
from .errors import EngineUnavailableError
from .inputs import input_param, render_template, require_tokens, utf8
from .threaded import SingleThreadEngine, completion_budget, stream_tokens

logger = logging.getLogger(__name__)


class LlamaCppEngine(SingleThreadEngine):
    name = "llama_cpp"
    capabilities = CAPABILITIES["llama_cpp"]

    def __init__(self, spec):
        super().__init__(spec)
        self._llama = None
        self._formatter = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def load(self) -> None:
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:  # pragma: no cover - the base requirements install it
            raise EngineUnavailableError(f"llama-cpp-python is not installed: {exc}") from exc
        options = {k: v for k, v in self.spec.options.items() if k in ("n_threads", "n_threads_batch", "n_batch", "n_gpu_layers")}
        try:
            llama = Llama(model_path=self.spec.source, n_ctx=self.spec.context_length, verbose=False, **options)
        except (ValueError, OSError) as exc:
            raise EngineUnavailableError(f"llama.cpp could not load {self.spec.source}: {exc}") from exc
        template = llama.metadata.get("tokenizer.chat_template")
        if template:
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=_token_text(llama, llama.token_eos()),
                bos_token=_token_text(llama, llama.token_bos()),
                stop_token_ids=[llama.token_eos()],
            )
        self._llama = llama
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"llama-{self.spec.name}"
        )

    def unload(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` by the model's own tokenizer (no BOS added)."""
        return len(self._require().tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def render_chat(self, messages: list[dict[str, Any]]) -> tuple[str, bool]:
        """Apply the GGUF's chat template; returns the prompt and whether it adds BOS itself."""
        if self._formatter is None:
            raise EngineUnavailableError(f"model {self.spec.name} has no chat template", param="messages")
        result = render_template(lambda ready: self._formatter(messages=ready), messages)
        return result.prompt, bool(result.added_special)

    def _require(self):
        if self._llama is None:
            raise EngineUnavailableError(f"model {self.spec.name} is not loaded")
        return self._llama

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        llama = self._require()
        param = input_param(request)
        if request.messages is not None:
            prompt, adds_bos = self.render_chat(list(request.messages))
            tokens = llama.tokenize(utf8(prompt, param=param), add_bos=not adds_bos, special=True)
        else:
            tokens = llama.tokenize(utf8(request.prompt or "", param=param), add_bos=True, special=False)
        require_tokens(tokens, request, self.spec.name)
        return tokens

    def _decode_unsafe(self, request, emit, cancelled) -> Chunk:
        import llama_cpp

        llama = self._require()
        sampling = request.sampling
        prompt_tokens = self._prompt_tokens(request)
        max_tokens = completion_budget(prompt_tokens=len(prompt_tokens), max_tokens=sampling.max_tokens,
                                       n_ctx=llama.n_ctx())
        if not self.spec.options.get("prefix_cache", False):
            # Reusing a cached prefix evaluates the prompt in different batch splits, which
            # shifts logits slightly: identical requests would then differ at temperature 0.
            llama.reset()
        llama.set_seed(sampling.seed if sampling.seed is not None else random.randint(0, 2**31 - 1))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llama._model.vocab
        generated: list[int] = []

        def to_text(token: int) -> str:
            piece = llama.detokenize([token], prev_tokens=prompt_tokens + generated)
            generated.append(token)
            return decoder.decode(piece)

        tokens = llama.generate(
            prompt_tokens,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            reset=True,
        )
        try:
            return stream_tokens(
                tokens, max_tokens=max_tokens, is_end=lambda token: llama_cpp.llama_vocab_is_eog(vocab, token),
                to_text=to_text, final_text=lambda: decoder.decode(b"", final=True), stops=sampling.stop,
                emit=emit, cancelled=cancelled, prompt_tokens=len(prompt_tokens),
            )
        finally:
            tokens.close()


def _token_text(llama, token_id: int) -> str:
    return llama.detokenize([token_id], special=True).decode("utf-8", errors="ignore")
