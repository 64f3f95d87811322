"""The engine contract shared by every engine and by the engine host."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncGenerator
from contextlib import aclosing, nullcontext
from typing import Any, Literal

from .admission import AdmissionQueue, max_waiting_option
from .errors import ContextOverflowError, UnsupportedParameterError

FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]
# What a job asks of the engine: text, embedding vectors, or its tokenizer either way.
Task = Literal["generate", "embed", "tokenize", "detokenize"]
# What a served model is loaded for: text generation, or embedding vectors (its tokenizer serves either).
ModelTask = Literal["generate", "embed"]
# Whether the model may call tools: never, if it likes, at least one, or the one in `forced_tool`.
ToolChoice = Literal["none", "auto", "required", "function"]


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Sampling settings for one request, already merged with the model's defaults."""

    max_tokens: int | None = None
    temperature: float = 1.0  # OpenAI's default, which the API documents
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # Choices generated from the one prompt (the prompt is evaluated once).
    n: int = 1
    # Whether to report each generated token's log-probability, and how many alternatives.
    logprobs: bool = False
    top_logprobs: int = 0
    # (token id, bias) pairs added to the logits before sampling.
    logit_bias: tuple[tuple[int, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: its name, what it does, and its parameters' JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = dataclasses.field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclasses.dataclass(frozen=True)
class OutputFormat:
    """What the generated text must be: any JSON object, JSON valid against `schema`, or text
    in the GBNF `grammar` (llama.cpp's format). Engines that cannot enforce one refuse it."""

    kind: Literal["json_object", "json_schema", "grammar"]
    schema: dict[str, Any] | None = None
    grammar: str | None = None
    name: str = ""  # the schema's name, as OpenAI's json_schema carries one


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """One job for an engine, whatever protocol it came in by.

    For `task` "generate" and "tokenize": either chat messages (OpenAI's shape: role, content,
    tool_calls, tool_call_id) or a raw prompt, plus sampling. "embed" reads `inputs` (texts or
    token arrays); "detokenize" reads `token_ids`.

    `tenant` names who sent it (the API key); engines that queue serve tenants round-robin.
    """

    request_id: str
    sampling: SamplingParams
    messages: tuple[dict[str, Any], ...] | None = None
    prompt: str | None = None
    tenant: str = ""
    task: Task = "generate"
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    forced_tool: str | None = None  # the function's name when tool_choice is "function"
    parallel_tool_calls: bool = True
    output_format: OutputFormat | None = None
    inputs: tuple[str | tuple[int, ...], ...] = ()
    token_ids: tuple[int, ...] = ()
    # Tokenize: whether the tokenizer adds its special tokens (BOS) to a raw prompt.
    add_special: bool = True
    # Tokenize of messages: whether the template's opening of the assistant's turn is included
    # (generation always includes it).
    add_generation_prompt: bool = True
    # Embed: the vector size the client asked for; an engine refuses any other (none shortens vectors).
    dimensions: int | None = None

    def __post_init__(self) -> None:
        if self.task == "embed":
            if not self.inputs:
                raise ValueError("an embed request needs inputs")
        elif self.task != "detokenize" and (self.messages is None) == (self.prompt is None):
            raise ValueError("GenerationRequest needs exactly one of messages or prompt")
        if (self.tool_choice == "function") != (self.forced_tool is not None):
            raise ValueError("forced_tool names the function exactly when tool_choice is 'function'")


@dataclasses.dataclass(frozen=True)
class TopLogprob:
    """One candidate token at a position, with its log-probability."""

    token: str
    logprob: float
    bytes: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability, with the most likely alternatives (sorted)."""

    token: str
    logprob: float
    bytes: tuple[int, ...] = ()
    top: tuple[TopLogprob, ...] = ()


@dataclasses.dataclass(frozen=True)
class ToolCallDelta:
    """A piece of one tool call, as OpenAI streams them: the first piece of a call carries its
    `id` and `name`, later ones fragments of its JSON `arguments`. `call` numbers the calls
    of one choice from 0."""

    call: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclasses.dataclass
class Chunk:
    """A piece of output: a text delta with its token ids, or the final summary.

    `index` is the choice the text belongs to (0 unless the request asked for n > 1).
    `logprobs`, when asked for, holds one entry per id in `token_ids`. `tool_calls` carries
    pieces of the calls the model makes (their text is not in `text`). An embed job yields one
    chunk per input with its `embedding` (`index` is the input's), a tokenize job the ids in
    `token_ids`, a detokenize job the text.

    The last chunk of every generation has `finish_reason` set and carries the
    engine-tokenizer counts for the whole request (completion tokens summed over choices), and
    `stop_sequence`: which of the request's stops ended choice 0, when one did (Anthropic's
    Messages report it; engines that cannot tell leave it None). With n > 1, `finish_reasons` holds each choice's reason, by index; `finish_reason`
    is then choice 0's.
    """

    text: str = ""
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Prompt tokens served from the engine's prefix cache; None where an engine does not say.
    cached_tokens: int | None = None
    index: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reasons: tuple[FinishReason, ...] = ()
    tool_calls: tuple[ToolCallDelta, ...] = ()
    embedding: tuple[float, ...] = ()
    stop_sequence: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What an engine needs to load a model; built by the registry, free of Django."""

    name: str
    source: str
    context_length: int = 2048
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    task: ModelTask = "generate"


class Engine(abc.ABC):
    """Loads one model and generates for many concurrent requests."""

    name: str = "base"
    capabilities: frozenset[str] = frozenset()  # this engine's row of engines.capabilities

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.in_flight = 0
        self.peak_in_flight = 0
        self._admission: AdmissionQueue | None = None

    @property
    def slots(self) -> int | None:
        """Sequences this engine runs at once once loaded; None when it has no such limit here
        (it then admits everything: a remote server queues, or nothing is scarce)."""
        return None

    @property
    def admission(self) -> AdmissionQueue | None:
        """The bounded queue in front of the slots (engines.admission); None without slots."""
        if self._admission is None and self.loaded and self.slots is not None:
            self._admission = AdmissionQueue(
                slots=self.slots,
                model=self.spec.name,
                max_waiting=max_waiting_option(self.spec.options, self.spec.name),
            )
        return self._admission

    @property
    @abc.abstractmethod
    def loaded(self) -> bool:
        """Whether `generate` can be called."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights; blocking, so hosts call it off the event loop."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Release weights and any threads."""

    @abc.abstractmethod
    def _generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Engine-specific generation; see `generate`."""

    async def _one_shot(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Embed, tokenize or detokenize; an engine that cannot refuses with a 400."""
        feature = "embeddings" if request.task == "embed" else "tokenize"
        raise UnsupportedParameterError(
            f"The {self.name} engine serving model `{self.spec.name}` does not support {feature}.", param="model"
        )
        yield Chunk()  # pragma: no cover - makes this an async generator

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Yield chunks for `request`; closing the iterator cancels the generation.

        Engines with slots admit it first: it may wait its turn, or be refused at once with
        EngineBusyError when the model's queue is full (engines.admission). Jobs other than
        "generate" take no slot: they are short and never decode.
        """
        if request.task != "generate":
            async with aclosing(self._one_shot(request)) as results:
                async for chunk in results:
                    yield chunk
            return
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            admission = self.admission
            slot = (
                admission.admitted(tenant=request.tenant, need=request.sampling.n)
                if admission is not None
                else nullcontext()
            )
            async with slot:
                # aclosing: a consumer that stops early must stop the engine now, not at GC.
                async with aclosing(self._generate(request)) as chunks:
                    async for chunk in chunks:
                        yield chunk
        finally:
            self.in_flight -= 1

    def state(self) -> dict[str, Any]:
        """A JSON-able snapshot for status pages."""
        return {
            "engine": self.name,
            "model": self.spec.name,
            "loaded": self.loaded,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "context_length": self.spec.context_length,
            "capabilities": sorted(self.capabilities),
            **self._load_state(),
        }

    def _load_state(self) -> dict[str, int]:
        """Requests running and waiting, as vLLM's scheduler gauges count them."""
        if self._admission is not None:  # made at the first request; until then none waits
            return self._admission.stats()
        return {"num_requests_running": self.in_flight, "num_requests_waiting": 0}


def completion_budget(*, prompt_tokens: int | None, max_tokens: int | None, n_ctx: int) -> int:
    """Tokens a request may generate: its max_tokens, or what the context has left.

    Raises ContextOverflowError when the prompt and the completion do not both fit, or
    when the prompt fills the window and leaves nothing to generate into. `prompt_tokens`
    None means the prompt was not counted here (a remote server's tokenizer is unknown):
    it is then taken as the one token every prompt needs at least.
    """
    room = n_ctx - (1 if prompt_tokens is None else prompt_tokens)
    budget = max_tokens if max_tokens is not None else room
    if budget > room or room < 1:
        if prompt_tokens is None:
            asked = (
                f"{budget} tokens for the completion alone, which leaves no room for the prompt. "
                "Please reduce the length of the messages or completion."
            )
        else:
            asked = (
                f"{prompt_tokens + budget} tokens ({prompt_tokens} in the prompt, {budget} in the "
                "completion). Please reduce the length of the prompt or completion."
            )
        raise ContextOverflowError(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested {asked}"
        )
    return budget
