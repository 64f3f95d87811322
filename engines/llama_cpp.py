"""The llama.cpp engine, on llama-cpp-python.

Loading keeps llama-cpp-python's `Llama` for the weights, the tokenizer and the chat
template, and makes a second, batching context on the same weights with the low-level API.
A scheduler thread (engines.llama_scheduler) owns that context and decodes every running
sequence in one batch per step; the event loop only awaits an asyncio.Queue it fills.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, cast

from .base import Chunk, GenerationRequest, ModelSpec, OutputFormat
from .capabilities import CAPABILITIES
from .errors import EngineUnavailableError, InvalidInputError, UnsupportedParameterError
from .inputs import input_param, render_template, require_dimensions, require_tokens, utf8
from .llama_embeddings import EmbeddingContext, model_pooling
from .llama_grammar import PARAM as RESPONSE_FORMAT_PARAM
from .llama_grammar import grammar_for
from .llama_logs import quiet_load
from .llama_sampling import ChainSettings, GrammarSampler, grammar_samplers
from .llama_scheduler import Scheduler, Sequence
from .llama_tokenize import chat_formatter, chat_tokens_without_generation_prompt, detokenize_text
from .threaded import ThreadedEngine, ThreadRelay
from .tool_calls import forced_tool_format
from .tool_prompt import chat_input

if TYPE_CHECKING:
    from llama_cpp import Llama, llama_context_p, llama_model_p
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_types import ChatCompletionRequestMessage, ChatCompletionTool

logger = logging.getLogger(__name__)

# `Llama` insists on a context of its own; ours is separate, so its one stays tiny.
_LLAMA_OWN_CTX = 64
# Tokens per decode step, shared by running sequences and prompt chunks (llama-server's
# n_ubatch default; a bigger batch makes steps, and so every stream's next token, slower).
DEFAULT_N_BATCH = 512
# Niceness added to the decode threads (llama_scheduler.lower_thread_priority), so that the
# process's event loop is served first when both want a core; the engine still gets every idle
# cycle. Under 100 stress users on 2 cores, /health p50 went from 120 ms (0) to 37 ms (10), the
# rest of the way down coming from api.health.
DEFAULT_NICE = 10
# More slots than this gain nothing on CPU: a step is then compute-bound.
MAX_DEFAULT_PARALLEL = 16
# The KV cache of all slots may take at most this share of the memory available at load.
KV_MEMORY_SHARE = 0.25


def physical_cores() -> int:
    """Physical cores, as llama-server uses for its threads (hyperthreads do not help matmuls)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def default_parallel(kv_bytes_per_seq: int) -> int:
    """Slots chosen from the machine: 4 per physical core, from 4 to 16, within memory.

    On CPU a decode step reads every weight once whatever the batch, so each extra sequence
    in the step is nearly free until the cores saturate; a few sequences per core reach that.
    The KV cache is allocated up front for every slot, so memory caps the count too.
    """
    import psutil

    by_cores = min(MAX_DEFAULT_PARALLEL, max(4, 4 * physical_cores()))
    by_memory = int(psutil.virtual_memory().available * KV_MEMORY_SHARE) // max(kv_bytes_per_seq, 1)
    return max(1, min(by_cores, by_memory))


class LlamaCppEngine(ThreadedEngine[Scheduler]):
    """Engine options: `parallel` (slots), `max_waiting` (engines.admission), `n_threads`,
    `n_threads_batch`, `n_batch`, `n_gpu_layers`, `prefix_cache` (default on), `kv_unified`
    (default on), `flash_attn` (default "auto"; true or false), `nice` (decode threads' priority
    below the web loop's: default 10, 0 keeps them equal), `top_k`, `min_p`, `repeat_penalty`,
    and for embed-task models `pooling` ("mean", "cls" or "last"; default the GGUF's own; flash
    attention is off there unless `flash_attn` is true, see engines.llama_embeddings).

    Each slot may hold `spec.context_length` tokens (prompt plus completion); the context
    is `parallel` times that. An embed-task model opens only an embedding context of one
    window (engines.llama_embeddings): no scheduler, and one slot (one decode at a time).
    """

    name = "llama_cpp"
    capabilities = CAPABILITIES["llama_cpp"]

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self._llama: Llama | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._ctx: llama_context_p | None = None
        self._embeddings: EmbeddingContext | None = None
        # Known once loaded.
        self.parallel = self.n_threads = self.n_threads_batch = 0

    @property
    def loaded(self) -> bool:
        return self._scheduler is not None or self._embeddings is not None

    @property
    def slots(self) -> int | None:
        if self._embeddings is not None:
            # One decode at a time (its lock; several inputs share it): a worker then takes one
            # embeddings job at a time and leaves the rest in Redis for whichever worker is free.
            return 1
        return self._scheduler.parallel if self._scheduler is not None else None

    def load(self) -> None:
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - the base requirements install it
            raise EngineUnavailableError(f"llama-cpp-python is not installed: {exc}") from exc
        options = self.spec.options
        threads = int(options.get("n_threads") or physical_cores())
        threads_batch = int(options.get("n_threads_batch") or threads)
        n_batch = int(options.get("n_batch") or DEFAULT_N_BATCH)
        try:
            # verbose, inside quiet_load: quiet with verbose=False would silence the whole process's
            # output for the load (see llama_logs).
            with quiet_load():
                llama = Llama(
                    model_path=self.spec.source,
                    n_ctx=_LLAMA_OWN_CTX,
                    n_batch=_LLAMA_OWN_CTX,
                    n_threads=1,
                    n_gpu_layers=int(options.get("n_gpu_layers", 0)),
                    verbose=True,
                )
        except (ValueError, OSError) as exc:
            raise EngineUnavailableError(f"llama.cpp could not load {self.spec.source}: {exc}") from exc
        llama.verbose = False  # its later calls print timings to stderr when verbose
        self._formatter = chat_formatter(llama)
        if self.spec.task == "embed":
            self._load_embeddings(llama, threads)
            return
        model = llama._model.model
        n_ctx_seq = self.spec.context_length
        parallel = int(options.get("parallel") or default_parallel(n_ctx_seq * _kv_bytes_per_token(model)))
        # Every running sequence needs its token in each step's batch.
        n_batch = max(n_batch, parallel)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = parallel * n_ctx_seq
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = parallel
        # One KV pool for all sequences. With a stream per sequence llama.cpp splits a batch
        # into one micro-batch per run of consecutive seq_ids, and the prefix cache makes
        # the running slots anything but consecutive: no batching would be left. Admission
        # keeps each sequence within n_ctx_seq, so the pool can never run out.
        params.kv_unified = bool(options.get("kv_unified", True))
        params.n_threads, params.n_threads_batch = threads, threads_batch
        params.no_perf = True
        # Flash attention "auto" by default, as llama-server has it: on this CPU a step of 8
        # sequences took 104 ms without it and 88 ms with it (llama-server: about 90). Set it
        # false for the same greedy text as llama-cpp-python's `Llama`, which leaves it off.
        flash = options.get("flash_attn", "auto")
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
            if flash == "auto"
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if flash
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        # In one KV pool llama.cpp sees n_ctx_seq = n_ctx and warns that it exceeds the
        # trained context; admission holds each sequence to context_length. The warning goes to
        # the debug log (llama_logs).
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            llama.close()
            raise EngineUnavailableError(
                f"llama.cpp could not make a context of {params.n_ctx} tokens "
                f"({parallel} × {n_ctx_seq}) for {self.spec.name}"
            )
        self._llama, self._ctx = llama, ctx
        self.parallel, self.n_threads, self.n_threads_batch = parallel, threads, threads_batch
        self._scheduler = Scheduler(
            llama,
            ctx,
            parallel=parallel,
            n_ctx_seq=n_ctx_seq,
            n_batch=n_batch,
            prefix_cache=bool(options.get("prefix_cache", True)),
            name=self.spec.name,
            nice=int(options.get("nice", DEFAULT_NICE)),
        )

    def _load_embeddings(self, llama: Llama, threads: int) -> None:
        """An embed-task model: only the pooled-embedding context, a window of context_length tokens."""
        try:
            pooling = model_pooling(llama, self.spec.options.get("pooling"))
            embeddings = EmbeddingContext(
                llama,
                n_ctx=self.spec.context_length,
                n_threads=threads,
                pooling=pooling,
                flash_attn=self.spec.options.get("flash_attn") is True,
            )
        except BaseException:
            llama.close()
            raise
        self._llama, self._embeddings, self.n_threads, self.n_threads_batch = llama, embeddings, threads, threads

    def unload(self) -> None:
        import llama_cpp

        scheduler = self._detach_scheduler()
        if scheduler is not None:
            scheduler.close()
        embeddings, self._embeddings = self._embeddings, None
        if embeddings is not None:
            embeddings.close()
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)  # before the weights it was made from
            self._ctx = None
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    def state(self) -> dict[str, Any]:
        state = super().state()
        if self._scheduler is not None:
            state.update(n_threads=self.n_threads, n_threads_batch=self.n_threads_batch)
        return state

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` by the model's own tokenizer (no BOS added)."""
        return len(self._require().tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> tuple[str, bool]:
        """Apply the GGUF's chat template (with `tools` for one that reads them, engines.tool_prompt);
        returns the prompt and whether it adds BOS itself."""
        formatter = self._chat_formatter()
        # The API checked these as OpenAI chat messages and tools, the shapes the formatter is typed for.
        result = render_template(
            lambda ready: formatter(
                messages=cast("list[ChatCompletionRequestMessage]", ready),
                tools=cast("list[ChatCompletionTool] | None", tools),
            ),
            messages,
        )
        return result.prompt, bool(result.added_special)

    def _chat_formatter(self) -> Jinja2ChatFormatter:
        if self._formatter is None:
            raise EngineUnavailableError(f"model {self.spec.name} has no chat template", param="messages")
        return self._formatter

    def _require(self) -> Llama:
        if self._llama is None or not self.loaded:
            raise EngineUnavailableError(f"model {self.spec.name} is not loaded")
        return self._llama

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        llama = self._require()
        param = input_param(request)
        if request.messages is not None:
            chat = chat_input(request, template=self._chat_formatter().template)
            prompt, adds_bos = self.render_chat(chat.messages, chat.tools)
            tokens = llama.tokenize(utf8(prompt, param=param), add_bos=not adds_bos, special=True)
        else:
            tokens = llama.tokenize(utf8(request.prompt or "", param=param), add_bos=True, special=False)
        require_tokens(tokens, request, self.spec.name)
        return tokens

    async def _one_shot(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Tokenize (the ids generation would feed), detokenize, or embed (embed-task models only).

        Tokenizer and embedding work runs on a thread: never on the event loop, and never on the
        scheduler's thread. Tokenize and detokenize run no model, so they count no tokens.
        """
        llama = self._require()
        if request.task == "tokenize":
            ids = await asyncio.to_thread(self._tokenize, request)
            yield Chunk(token_ids=tuple(ids), finish_reason="stop", prompt_tokens=0, completion_tokens=0)
        elif request.task == "detokenize":
            text = await asyncio.to_thread(detokenize_text, llama, request.token_ids)
            yield Chunk(text=text, finish_reason="stop", prompt_tokens=0, completion_tokens=0)
        else:
            embeddings = self._embeddings
            if embeddings is None:
                raise UnsupportedParameterError(
                    f"Model `{self.spec.name}` is served for generation, not embeddings (its task).", param="model"
                )

            require_dimensions(request, embeddings.n_embd, self.spec.name)

            def embed() -> tuple[list[list[int]], list[list[float]]]:
                inputs = [embeddings.tokens_of(item, index) for index, item in enumerate(request.inputs)]
                return inputs, embeddings.embed(inputs)

            inputs, vectors = await asyncio.to_thread(embed)
            for index, vector in enumerate(vectors):
                yield Chunk(index=index, embedding=tuple(vector))
            yield Chunk(finish_reason="stop", prompt_tokens=sum(map(len, inputs)), completion_tokens=0)

    def _tokenize(self, request: GenerationRequest) -> list[int]:
        """A tokenize job's ids: for messages exactly what generation feeds (template and all)."""
        llama = self._require()
        if request.messages is None:
            return llama.tokenize(
                utf8(request.prompt or "", param="prompt"), add_bos=request.add_special, special=False
            )
        if request.add_generation_prompt:
            return self._prompt_tokens(request)
        if self._formatter is None:
            raise EngineUnavailableError(f"model {self.spec.name} has no chat template", param="messages")
        return chat_tokens_without_generation_prompt(llama, self._formatter, list(request.messages))

    def _settings(self, request: GenerationRequest) -> ChainSettings:
        sampling, options = request.sampling, self.spec.options
        return ChainSettings(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            top_k=int(options.get("top_k", 0)),
            min_p=float(options.get("min_p", 0.0)),
            repeat_penalty=float(options.get("repeat_penalty", 1.0)),
            logit_bias=sampling.logit_bias,
        )

    def _check_request(self, request: GenerationRequest) -> None:
        """Refuse what this model cannot do before any work: too many choices, unknown token ids."""
        n = request.sampling.n
        if n > self.parallel:
            raise UnsupportedParameterError(
                f"n={n} asks for more choices than the {self.parallel} sequences model {self.spec.name} "
                f"runs at once (its engine option `parallel`).",
                param="n",
            )
        n_vocab = self._require().n_vocab()
        bad = [token for token, _ in request.sampling.logit_bias if not 0 <= token < n_vocab]
        if bad:
            raise InvalidInputError(
                f"logit_bias names token id {bad[0]}, outside the vocabulary of model "
                f"{self.spec.name} (ids 0 to {n_vocab - 1}).",
                param="logit_bias",
            )

    def _output_format(self, request: GenerationRequest) -> OutputFormat | None:
        """What the output must be (its grammar heads each choice's sampler chain); None: free text.
        A forced tool call (engines.tool_calls) is one call's JSON, else the request's own format."""
        if request.tool_choice in ("required", "function") and request.tools:
            return forced_tool_format(request)
        return request.output_format

    def _prepare(self, request: GenerationRequest) -> list[GrammarSampler] | None:
        """One compiled grammar sampler per choice when the output has a format. Converting a
        schema and parsing GBNF take from microseconds to milliseconds: done off the loop, and
        off the scheduler thread, whose every millisecond delays all running streams."""
        output_format = self._output_format(request)
        if output_format is None:
            return None
        try:
            grammar = grammar_for(output_format)
        except (InvalidInputError, UnsupportedParameterError) as exc:
            if output_format is request.output_format:
                raise
            # A forced call's schema comes from the tools: name the parameter the client wrote.
            raise type(exc)(f"The tools' parameters cannot be forced: {exc}", param="tools") from None
        param = "grammar" if output_format.kind == "grammar" else RESPONSE_FORMAT_PARAM
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self._require()._model.model)
        return grammar_samplers(vocab, grammar, request.sampling.n, param=param)

    def _sequence(
        self,
        request: GenerationRequest,
        prompt: list[int],
        max_tokens: int,
        relay: ThreadRelay,
        prepared: list[GrammarSampler] | None = None,
    ) -> Sequence:
        """Choice 0's sequence, carrying the other choices. With a seed, choice i uses seed + i:
        the choices differ, and the same request gives the same choices again."""
        sampling, settings = request.sampling, self._settings(request)

        def settings_of(i: int) -> ChainSettings:
            return settings if sampling.seed is None else dataclasses.replace(settings, seed=sampling.seed + i)

        choices = [
            Sequence(
                request_id=request.request_id,
                prompt=prompt,
                max_tokens=max_tokens,
                settings=settings_of(i),
                stops=sampling.stop,
                emit=relay.emit,
                cancelled=relay.cancelled,
                index=i,
                top_logprobs=sampling.top_logprobs if sampling.logprobs else None,
                grammar=prepared[i] if prepared else None,
            )
            for i in range(sampling.n)
        ]
        leader = choices[0]
        leader.siblings = choices[1:]
        for sibling in leader.siblings:
            sibling.leader = leader
        return leader

    def _nothing_to_generate(self, request: GenerationRequest, prompt_tokens: int) -> Chunk:
        # Nothing was looked up in the prefix cache, so none of the prompt came from it.
        return dataclasses.replace(super()._nothing_to_generate(request, prompt_tokens), cached_tokens=0)


def _kv_bytes_per_token(model: llama_model_p) -> int:
    """KV cache bytes one token takes: K and V, f16, for every layer's KV heads."""
    import llama_cpp

    n_head = max(llama_cpp.llama_model_n_head(model), 1)
    head_dim = llama_cpp.llama_model_n_embd(model) // n_head
    kv_bytes: int = 2 * 2 * llama_cpp.llama_model_n_layer(model) * llama_cpp.llama_model_n_head_kv(model) * head_dim
    return kv_bytes
