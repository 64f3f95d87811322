"""A deterministic engine with no model, for plumbing tests and overhead benchmarks.

It answers with the text of the last message (or the prompt), one whitespace-delimited
word per token, optionally pausing between tokens so concurrency is observable. It
tokenizes by the same words and embeds by hashing them (engines.echo_vectors). With tools
offered ("auto" only), a call written in that text comes back as a tool call.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing

from .base import Chunk, Engine, FinishReason, GenerationRequest, ModelSpec, completion_budget
from .capabilities import CAPABILITIES
from .echo_vectors import EchoVocabulary, bag_of_words_vector
from .errors import InvalidInputError, UnsupportedParameterError
from .inputs import require_dimensions
from .stops import StopMatcher
from .tool_calls import parsed_tool_calls
from .tool_prompt import offers_tools

_WORD = re.compile(r"\s*\S+")
DEFAULT_EMBEDDING_SIZE = 32


def echo_tokenize(text: str) -> list[str]:
    """The echo engine's tokenizer: each word with its leading whitespace is one token."""
    return _WORD.findall(text)


class EchoEngine(Engine):
    name = "echo"
    capabilities = CAPABILITIES["echo"]

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self._loaded = False
        self.token_delay_s = float(spec.options.get("token_delay_ms", 0)) / 1000
        self.embedding_size = int(spec.options.get("embedding_size", DEFAULT_EMBEDDING_SIZE))
        self.vocabulary = EchoVocabulary()

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        self._loaded = True

    def unload(self) -> None:
        self._loaded = False

    async def _generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        if not offers_tools(request):
            async with aclosing(self._echo(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        if request.tool_choice in ("required", "function"):
            # Forcing a call takes a grammar; echo would only repeat text that may be no call.
            raise UnsupportedParameterError(
                f"The echo engine serving model `{self.spec.name}` cannot force a tool call; "
                "use tool_choice 'auto' (a call in the echoed text is parsed).",
                param="tool_choice",
            )
        # A call written in the echoed text comes back as a call, as a model's would.
        async with aclosing(self._echo(request)) as chunks, aclosing(parsed_tool_calls(chunks, request)) as parsed:
            async for chunk in parsed:
                yield chunk

    async def _echo(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        if request.messages is not None:
            contents = [m.get("content") or "" for m in request.messages]
            source = contents[-1] if contents else ""
            prompt_tokens = sum(len(echo_tokenize(c)) for c in contents)
        else:
            source = request.prompt or ""
            prompt_tokens = len(echo_tokenize(source))
        if request.sampling.max_tokens is None:
            # What the window has left, and never a refusal: plumbing tests send prompts far over
            # the window on purpose (the request size limit) and read back their prompt_tokens.
            max_tokens = max(self.spec.context_length - prompt_tokens, 0)
        else:
            max_tokens = completion_budget(
                prompt_tokens=prompt_tokens, max_tokens=request.sampling.max_tokens, n_ctx=self.spec.context_length
            )
        matcher = StopMatcher(request.sampling.stop)
        finish: FinishReason = "length"
        emitted = 0
        for index, token in enumerate(echo_tokenize(source)):
            if emitted >= max_tokens:
                break
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            else:
                await asyncio.sleep(0)  # let other requests and cancellation in
            emitted += 1
            safe = matcher.feed(token)
            if safe:
                yield Chunk(text=safe, token_ids=(index,))
            if matcher.stopped:
                finish = "stop"
                break
        else:
            finish = "stop"
        tail = matcher.flush()
        if tail:
            yield Chunk(text=tail)
        yield Chunk(
            finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=emitted, stop_sequence=matcher.matched
        )

    async def _one_shot(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Tokenize by words (ids from the vocabulary), detokenize them back, embed by hashing."""
        if request.task == "tokenize":
            words = self.vocabulary.ids(echo_tokenize(_source_text(request)))
            yield Chunk(token_ids=tuple(words), finish_reason="stop", prompt_tokens=0, completion_tokens=0)
        elif request.task == "detokenize":
            try:
                text = self.vocabulary.text(request.token_ids)
            except KeyError as exc:
                raise InvalidInputError(
                    f"Token id {exc.args[0]} is not one the echo engine gave out.", param="tokens"
                ) from None
            yield Chunk(text=text, finish_reason="stop", prompt_tokens=0, completion_tokens=0)
        else:
            require_dimensions(request, self.embedding_size, self.spec.name)
            total = 0
            for index, item in enumerate(request.inputs):
                ids = self.vocabulary.ids(echo_tokenize(item)) if isinstance(item, str) else list(item)
                if not ids:
                    raise InvalidInputError("Invalid value for 'input': must not be empty.", param="input")
                if len(ids) > self.spec.context_length:
                    raise InvalidInputError(
                        f"Input {index} has {len(ids)} tokens, more than the {self.spec.context_length} "
                        f"of model `{self.spec.name}`'s context.",
                        param="input",
                    )
                total += len(ids)
                yield Chunk(index=index, embedding=bag_of_words_vector(ids, self.embedding_size))
            yield Chunk(finish_reason="stop", prompt_tokens=total, completion_tokens=0)


def _source_text(request: GenerationRequest) -> str:
    """The text a tokenize job counts: the messages' contents one after another, or the prompt.

    Generation counts the same words for its prompt_tokens."""
    if request.messages is not None:
        return " ".join(m.get("content") or "" for m in request.messages)
    return request.prompt or ""
