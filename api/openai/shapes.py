"""The OpenAI response bodies and stream chunks: format.py builds them, the OpenAPI schema documents them.

No `from __future__ import annotations` here: TypedDict reads `NotRequired` from evaluated annotations.
"""

from typing import Annotated, Literal, NotRequired, TypedDict, get_args

from ..typed_shapes import Field

# Our engines also end with "cancelled"/"error"; format.py passes on only what OpenAI clients know.
FinishReason = Literal["stop", "length", "tool_calls"]

AssistantRole = Literal["assistant"]
TextCompletionObject = Literal["text_completion"]
FunctionType = Literal["function"]
# Whole answers and chunks share these enums; settings' ENUM_NAME_OVERRIDES names them from here
# (two components with one choice set would otherwise get a hashed enum name).
ASSISTANT_ROLE_CHOICES = get_args(AssistantRole)
TEXT_COMPLETION_OBJECT_CHOICES = get_args(TextCompletionObject)
FUNCTION_TYPE_CHOICES = get_args(FunctionType)

_LOGPROB = Field(max_value=0)


class PromptTokensDetails(TypedDict):
    cached_tokens: Annotated[int, Field(min_value=0, help_text="Prompt tokens reused from the prefix cache.")]


class Usage(TypedDict):
    prompt_tokens: Annotated[int, Field(min_value=0)]
    completion_tokens: Annotated[int, Field(min_value=0)]
    total_tokens: Annotated[int, Field(min_value=0)]
    prompt_tokens_details: NotRequired[
        Annotated[
            PromptTokensDetails, Field(help_text="Present when the model's engine has a prefix cache (llama_cpp).")
        ]
    ]


# --- Log-probabilities ---------------------------------------------------------------------


class ChatTopLogprob(TypedDict):
    token: str
    logprob: Annotated[float, _LOGPROB]
    bytes: Annotated[
        list[Annotated[int, Field(min_value=0, max_value=255)]],
        Field(help_text="The token's UTF-8 bytes (a token may hold part of a character)."),
    ]


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: Annotated[
        list[ChatTopLogprob],
        Field(help_text="The `top_logprobs` most likely tokens at this position, most likely first."),
    ]


class ChatLogprobs(TypedDict):
    """Log-probabilities of a chat choice's tokens (with `logprobs: true`), from the raw logits."""

    content: list[ChatTokenLogprob]
    refusal: str | None


class TextLogprobs(TypedDict):
    """Log-probabilities of a legacy completion's tokens (with `logprobs: k`), from the raw logits."""

    tokens: list[str]
    token_logprobs: list[Annotated[float, _LOGPROB]]
    top_logprobs: Annotated[
        list[dict[str, Annotated[float, _LOGPROB]]],
        Field(help_text="Per token: the k most likely tokens and the chosen one, to their log-probabilities."),
    ]
    text_offset: list[Annotated[int, Field(min_value=0)]]


# --- Whole answers (`stream` false) ----------------------------------------------------------

_INDEX = Annotated[int, Field(min_value=0, help_text="Which of the `n` choices this is.")]
_CREATED = Annotated[int, Field(help_text="Unix time in seconds.")]
_MODEL = Annotated[str, Field(help_text="The model name as the request gave it.")]


class FunctionCall(TypedDict):
    name: str
    arguments: Annotated[str, Field(help_text="The arguments as JSON text (an object).")]


class ToolCall(TypedDict):
    """A call the model made; the client runs it and answers with a `tool` message."""

    id: Annotated[str, Field(help_text="`call_...`; the `tool` message answering it names it in `tool_call_id`.")]
    type: FunctionType
    function: FunctionCall


class AssistantMessage(TypedDict):
    role: AssistantRole
    content: Annotated[str | None, Field(help_text="Null when the model only called tools.")]
    tool_calls: NotRequired[Annotated[list[ToolCall], Field(help_text="Present when the model called tools.")]]


class ChatChoice(TypedDict):
    index: _INDEX
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason


class ChatCompletion(TypedDict):
    """A whole chat completion (`stream` false)."""

    id: str
    object: Literal["chat.completion"]
    created: _CREATED
    model: _MODEL
    system_fingerprint: str | None
    choices: list[ChatChoice]
    usage: Usage


class TextChoice(TypedDict):
    index: _INDEX
    text: str
    logprobs: TextLogprobs | None
    finish_reason: FinishReason


class TextCompletion(TypedDict):
    """A whole legacy text completion (`stream` false)."""

    id: str
    object: TextCompletionObject
    created: _CREATED
    model: _MODEL
    system_fingerprint: str | None
    choices: list[TextChoice]
    usage: Usage


# --- Stream chunks (`stream` true): one per Server-Sent Event ----------------------------------

_CHUNK_FINISH = Annotated[FinishReason | None, Field(help_text="Set on each choice's last chunk only.")]
_CHUNK_USAGE = Annotated[
    Usage | None,
    Field(help_text="With `stream_options.include_usage`: null on every chunk but the last, which has no choices."),
]


class FunctionCallDelta(TypedDict, total=False):
    name: Annotated[str, Field(help_text="On a call's first delta.")]
    arguments: Annotated[str, Field(help_text='A fragment of the arguments\' JSON text ("" on the first delta).')]


class ToolCallDelta(TypedDict):
    """A piece of a call: the first has `id`, `type` and the function's `name`, later ones argument fragments."""

    index: Annotated[int, Field(min_value=0, help_text="Which call of the choice this piece belongs to.")]
    id: NotRequired[str]
    type: NotRequired[FunctionType]
    function: FunctionCallDelta


class ChatDelta(TypedDict, total=False):
    """What a chunk adds to the message: the role on the opening chunk, then content or tool-call pieces."""

    role: AssistantRole
    content: str
    tool_calls: list[ToolCallDelta]


class ChatChunkChoice(TypedDict):
    index: _INDEX
    delta: ChatDelta
    logprobs: Annotated[ChatLogprobs | None, Field(help_text="With `logprobs: true`: those of this chunk's tokens.")]
    finish_reason: _CHUNK_FINISH


class ChatCompletionChunk(TypedDict):
    """One chunk of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: _CREATED
    model: _MODEL
    system_fingerprint: str | None
    choices: list[ChatChunkChoice]
    usage: NotRequired[_CHUNK_USAGE]


class TextChunkChoice(TypedDict):
    index: _INDEX
    text: str
    logprobs: Annotated[TextLogprobs | None, Field(help_text="With `logprobs: k`: those of this chunk's tokens.")]
    finish_reason: _CHUNK_FINISH


class TextCompletionChunk(TypedDict):
    """One chunk of a streamed legacy text completion."""

    id: str
    object: TextCompletionObject
    created: _CREATED
    model: _MODEL
    system_fingerprint: str | None
    choices: list[TextChunkChoice]
    usage: NotRequired[_CHUNK_USAGE]
