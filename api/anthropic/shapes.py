"""Anthropic's Messages bodies, stream events and errors: format.py builds them, the OpenAPI schema documents them.

No `from __future__ import annotations` here: TypedDict reads `NotRequired` from evaluated annotations.
"""

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from ..typed_shapes import Field

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]
ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
]

_COUNT = Annotated[int, Field(min_value=0)]


class MessageUsage(TypedDict):
    input_tokens: Annotated[
        int, Field(min_value=0, help_text="Prompt tokens not read from the prefix cache (Anthropic's meaning).")
    ]
    output_tokens: _COUNT
    cache_read_input_tokens: NotRequired[
        Annotated[
            int,
            Field(min_value=0, help_text="Prompt tokens reused from the prefix cache, where the engine has one."),
        ]
    ]


class TextBlock(TypedDict):
    type: Literal["text"]
    text: str


class ToolUseBlock(TypedDict):
    type: Literal["tool_use"]
    id: Annotated[str, Field(help_text="`toolu_...`; a `tool_result` block answers it by this id.")]
    name: str
    input: Annotated[dict[str, Any], Field(help_text="The tool's arguments, valid against its `input_schema`.")]


class AnthropicMessage(TypedDict):
    """A whole answer (`stream` false), and the snapshot `message_start` opens a stream with."""

    id: Annotated[str, Field(help_text="`msg_...`")]
    type: Literal["message"]
    role: Literal["assistant"]
    content: Annotated[
        list[dict[str, Any]], Field(help_text="Text blocks and `tool_use` blocks, in the order the model wrote them.")
    ]
    model: Annotated[str, Field(help_text="The model name as the request gave it.")]
    stop_reason: StopReason | None
    stop_sequence: Annotated[str | None, Field(help_text="The stop sequence that ended the answer, if one did.")]
    usage: MessageUsage


class MessageTokenCount(TypedDict):
    """The prompt's tokens as the model would see them: chat template, system prompt and tools included."""

    input_tokens: _COUNT


class AnthropicErrorDetail(TypedDict):
    type: ErrorType
    message: str


class AnthropicError(TypedDict):
    """Anthropic's error body; every error on the Messages routes answers with it."""

    type: Literal["error"]
    error: AnthropicErrorDetail


# --- Stream events: each is one SSE event whose `event:` line is its `type` ----------------------


class MessageStart(TypedDict):
    type: Literal["message_start"]
    message: AnthropicMessage


class ContentBlockStart(TypedDict):
    type: Literal["content_block_start"]
    index: _COUNT
    content_block: Annotated[
        dict[str, Any], Field(help_text='`{"type": "text", "text": ""}` or a `tool_use` block with `input: {}`.')
    ]


class Ping(TypedDict):
    type: Literal["ping"]


class ContentBlockDelta(TypedDict):
    type: Literal["content_block_delta"]
    index: _COUNT
    delta: Annotated[
        dict[str, str],
        Field(help_text='`{"type": "text_delta", "text"}` or `{"type": "input_json_delta", "partial_json"}`.'),
    ]


class ContentBlockStop(TypedDict):
    type: Literal["content_block_stop"]
    index: _COUNT


class MessageDeltaBody(TypedDict):
    stop_reason: StopReason | None
    stop_sequence: str | None


class MessageDelta(TypedDict):
    type: Literal["message_delta"]
    delta: MessageDeltaBody
    usage: Annotated[MessageUsage, Field(help_text="The whole request's counts, input tokens included.")]


class MessageStop(TypedDict):
    type: Literal["message_stop"]


StreamEvent = (
    MessageStart
    | ContentBlockStart
    | Ping
    | ContentBlockDelta
    | ContentBlockStop
    | MessageDelta
    | MessageStop
    | AnthropicError
)
STREAM_EVENTS = (MessageStart, ContentBlockStart, Ping, ContentBlockDelta, ContentBlockStop, MessageDelta, MessageStop)
